"""The site agent: a site that accepts no connection takes part by dialling out to a relay.

``fedflow site pull --config site.yaml --relay https://relay:8444 --ca ... --cert ... --key ...``
runs :class:`SiteAgent`. It opens the site node (its gates, Dask cluster, quarantine, airlock
and audit log, exactly as ``fedflow site serve`` does), connects out to the relay with the
site's client certificate, trusting only the pinned relay CA, and long-polls for calls. Each
call runs through the site service's own ASGI app (:func:`executors.service.create_app`,
in-process through httpx's ``ASGITransport``: no socket is opened at the site), so its checks,
limits, errors, receipts and audit are the service's; the response goes back as a reply.

Only the site protocol's routes are served (:data:`ROUTES`). A call that is malformed, too
large or for another route is refused and audited (``relay.refused``) in the site's log.
Calls run concurrently (up to ``max_concurrent``) while polling goes on; when the relay cannot
be reached the agent retries with backoff (0.5 s doubling to 10 s). On stop it ends its poll,
lets running calls finish, and closes the node it opened (``site.stopped`` is audited).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
import threading
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from executors.config import ServiceConfig, SiteConfig
from executors.errors import SiteError
from executors.node import SiteNode
from executors.pull.messages import CALL_HEADERS, REPLY_HEADERS, Call, Reply
from executors.service import create_app
from executors.transport import client_tls
from fedflow.core import ConfigError, FedflowError

__all__ = ["ROUTES", "SiteAgent", "main", "run_agent"]

log = logging.getLogger("executors.pull.agent")

_JOB = r"/jobs/[A-Za-z0-9_-]{1,64}"
ROUTES = tuple(
    (method, re.compile(f"/v1{path}"))
    for method, path in (
        ("GET", "/health"),
        ("GET", "/info"),
        ("GET", "/checkpoint"),
        ("POST", "/check"),
        ("POST", "/jobs"),
        ("GET", _JOB),
        ("POST", f"{_JOB}/release"),
        ("GET", f"{_JOB}/result"),
    )
)
"""The site protocol's routes: the only ones a call may reach."""

_KEEPALIVE_S = 25.0  # under the relay's 30 s, so the relay never closes a connection in use
_ENVELOPE_BYTES = 64 * 1024  # what a call adds to its body: headers, ids, base64 growth


class SiteAgent:
    """Fetch calls for one site from a relay and answer them with the site's own service."""

    def __init__(
        self,
        node: SiteNode,
        relay: str,
        *,
        ca: Path,
        cert: Path,
        key: Path,
        limits: ServiceConfig | None = None,
        poll_s: float = 15.0,
        max_concurrent: int = 8,
        owned: bool = False,
    ) -> None:
        if not relay.startswith("https://"):
            raise ConfigError(f"site {node.name}: the relay url must be https://")
        self._tls = client_tls(node.name, ca, cert, key)
        try:
            named = x509.load_pem_x509_certificate(Path(cert).read_bytes()).subject
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"site {node.name}: cannot load TLS files ({type(exc).__name__})"
            ) from None
        names = [str(a.value) for a in named.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [node.name]:
            raise ConfigError(
                f"site {node.name}: the client certificate is for {names}, not for this site"
            )
        self.node, self.relay = node, relay.rstrip("/")
        self.limits = limits or node.config.service or ServiceConfig()
        self.poll_s, self.max_concurrent, self._owned = poll_s, max_concurrent, owned
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._polling = threading.Event()

    @classmethod
    def from_config(cls, config: Path, relay: str, **kw: object) -> SiteAgent:
        """An agent for the site of ``config`` (it opens, and at the end closes, the node)."""
        site = SiteConfig.load(config)
        node = SiteNode(site)
        try:
            return cls(node, relay, owned=True, **kw)  # type: ignore[arg-type]
        except BaseException:
            node.close()
            raise

    # -- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until :meth:`stop` (or SIGINT/SIGTERM when run in the main thread)."""
        asyncio.run(self._main())

    def start(self, timeout: float = 30.0) -> SiteAgent:
        """Run in a background thread; return once the agent has polled the relay."""
        self._thread = threading.Thread(target=self.run, name=f"agent-{self.node.name}")
        self._thread.start()
        if not self._polling.wait(timeout):
            raise TimeoutError(f"agent {self.node.name} did not reach {self.relay}")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop polling, let running calls finish, close an owned node."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> SiteAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._stop.set)
        app = create_app(self.node, self.limits)
        log.info(
            json.dumps({"event": "agent.started", "site": self.node.name, "relay": self.relay})
        )
        try:
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    base_url=f"{self.relay}/v1",
                    verify=self._tls,
                    timeout=httpx.Timeout(self.poll_s + 15.0, connect=10.0),
                    limits=httpx.Limits(keepalive_expiry=_KEEPALIVE_S),
                ) as relay,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                    base_url="https://site.local",
                ) as site,
            ):
                await self._serve(relay, site)
        finally:
            log.info(json.dumps({"event": "agent.stopping", "site": self.node.name}))
            if self._owned:
                await asyncio.to_thread(self.node.close)

    async def _serve(self, relay: httpx.AsyncClient, site: httpx.AsyncClient) -> None:
        assert self._stop is not None
        slots = asyncio.Semaphore(self.max_concurrent)  # calls that run at once
        # Calls fetched and not answered yet. Polling goes on while calls run (a site whose
        # agent stops polling is offline at the relay), up to this many.
        fetched = asyncio.Semaphore(self.max_concurrent * 4)
        running: set[asyncio.Task[None]] = set()
        backoff = 0.5
        stopping = asyncio.ensure_future(self._stop.wait())
        while not self._stop.is_set():
            await fetched.acquire()
            poll = asyncio.ensure_future(self._poll(relay))
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not poll.done():
                poll.cancel()
                fetched.release()
                break
            try:
                raw = poll.result()
                backoff = 0.5
            except (httpx.HTTPError, _PollRefused) as exc:
                fetched.release()
                log.warning(json.dumps({"event": "agent.poll_failed", "error": str(exc)[:200]}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if raw is None:
                fetched.release()
                continue
            task = asyncio.create_task(self._answer(relay, site, raw, slots))
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _: fetched.release())
        if running:
            await asyncio.wait(running, timeout=self.limits.graceful_timeout_s + 30.0)

    async def _poll(self, relay: httpx.AsyncClient) -> bytes | None:
        limit = self.limits.max_body_bytes * 4 // 3 + _ENVELOPE_BYTES
        wait = self.poll_s if self._polling.is_set() else 0.0  # the first poll returns at once
        async with relay.stream("GET", "/calls", params={"wait": f"{wait:g}"}) as response:
            self._polling.set()
            if response.status_code == 204:
                return None
            if response.status_code != 200:
                await response.aread()
                raise _PollRefused(f"the relay answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    self._refused("oversized", size=len(body))
                    return None
            return bytes(body)

    async def _answer(
        self,
        relay: httpx.AsyncClient,
        site: httpx.AsyncClient,
        raw: bytes,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            async with slots:
                await self._answer_one(relay, site, raw)
        except Exception as exc:  # one call's failure must not end the agent
            log.error(json.dumps({"event": "agent.call_failed", "error": type(exc).__name__}))

    async def _answer_one(
        self, relay: httpx.AsyncClient, site: httpx.AsyncClient, raw: bytes
    ) -> None:
        try:
            call = Call.model_validate_json(raw)
        except ValidationError as exc:
            self._refused("malformed", problems=exc.error_count())
            return
        if not any(call.method == m and route.fullmatch(call.path) for m, route in ROUTES):
            self._refused("route", method=call.method, path=call.path[:100])
            reply = _error_reply(call, 404, "NotFound", "the site serves no such route over pull")
        else:
            url = call.path + (f"?{call.query}" if call.query else "")
            headers = {k: v for k, v in call.headers.items() if k.lower() in CALL_HEADERS}
            response = await site.request(
                call.method, url, content=call.body, headers=headers, timeout=None
            )
            reply = Reply(
                call_id=call.call_id,
                status=response.status_code,
                headers={k: v for k, v in response.headers.items() if k.lower() in REPLY_HEADERS},
                body=response.content,
            )
        try:
            answered = await relay.post(
                "/replies",
                content=reply.model_dump_json(),
                headers={"content-type": "application/json"},
            )
            if answered.status_code != 204:
                log.warning(
                    json.dumps({"event": "agent.reply_refused", "status": answered.status_code})
                )
        except httpx.HTTPError as exc:
            log.warning(json.dumps({"event": "agent.reply_failed", "error": type(exc).__name__}))

    def _refused(self, reason: str, **details: object) -> None:
        log.warning(json.dumps({"event": "agent.refused", "reason": reason}))
        self.node.audit.append(
            "relay.refused", actor="relay", details={"reason": reason, **details}
        )


class _PollRefused(SiteError):
    """The relay answered a poll with an unexpected status."""


def _error_reply(call: Call, status: int, kind: str, message: str) -> Reply:
    body = json.dumps({"error": kind, "message": message}).encode()
    return Reply(
        call_id=call.call_id,
        status=status,
        headers={"content-type": "application/json"},
        body=body,
    )


def run_agent(
    config: Path, relay: str, *, ca: Path, cert: Path, key: Path, poll_s: float = 15.0
) -> None:
    """Run the agent of the site of ``config`` in the foreground until SIGINT or SIGTERM."""
    SiteAgent.from_config(config, relay, ca=ca, cert=cert, key=key, poll_s=poll_s).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m executors.pull agent``: ``fedflow site pull`` without the CLI's imports."""
    parser = argparse.ArgumentParser(prog="python -m executors.pull agent")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--relay", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--poll-s", type=float, default=15.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("executors").setLevel(logging.INFO)
    try:
        run_agent(
            args.config, args.relay, ca=args.ca, cert=args.cert, key=args.key, poll_s=args.poll_s
        )
    except FedflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
