"""The relay: an HTTPS mailbox with mutual TLS between orchestrators and pull sites.

``python -m executors.pull relay --config relay.yaml`` runs :func:`serve`. Sites never accept
a connection: each site's agent (:mod:`executors.pull.agent`) dials out to the relay and
long-polls for the calls queued for it. Every client presents a certificate from
``client_ca``; its common name says who it is (:class:`~executors.pull.config.RelayConfig`).

=======  ===========================  ===============================================
GET      ``/v1/health``               liveness (any accepted client)
POST     ``/v1/sites/{site}/calls``   orchestrators: body ``Call`` → 200 ``Reply``
GET      ``/v1/calls?wait=S``         sites: the next ``Call`` for the caller, or 204
POST     ``/v1/replies``              sites: body ``Reply`` to a call the caller fetched
=======  ===========================  ===============================================

Errors use the site service's JSON form and statuses (:func:`executors.service.status_of`),
so the orchestrator maps them to the same exceptions: 503 ``SiteUnavailable`` when the site's
agent is offline or does not answer in time, 429 when too many calls wait, 413 past the size
limits, 422 for a malformed message, 403 for a client in the wrong role, 404 for a reply to a
call the caller was not given. Refusals are audited in the relay's own audit log. The relay
sees what it carries (as the orchestrator does) but cannot forge a release: receipts are
signed at the site and verified by the orchestrator against the site's pinned key.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from executors.errors import RequestRefused
from executors.pull.config import RelayConfig
from executors.pull.mailbox import Mailbox
from executors.pull.messages import Call, Reply
from executors.pull.tls import ClientCertH11Protocol, peer_name
from executors.service import status_of
from fedflow.core import FedflowError, InvalidRequest, PayloadTooLarge
from fedflow.core.controls import Control
from governance.audit import AuditLog

__all__ = ["RelayServer", "create_relay_app", "main", "serve"]

_ROLES_TEST = (
    "tests/executors/test_pull.py::test_each_client_acts_only_in_its_role_and_only_for_its_own_site"
)
__controls__ = (
    Control(
        "NIST AC-3",
        "The relay knows each client by its certificate's name: orchestrators only post calls; "
        "a site only fetches the calls queued under its own name and answers only those.",
        tests=(_ROLES_TEST,),
    ),
    Control(
        "NIST AC-4",
        "A pull site accepts no connection: its agent dials out and serves only the site "
        "protocol's routes; anything else is refused and audited at the site.",
        tests=(
            _ROLES_TEST,
            "tests/executors/test_pull.py::test_a_federated_step_over_a_pull_site_equals_the_pooled_answer",
        ),
    ),
    Control(
        "NIST SC-8",
        "Orchestrator to relay and site agent to relay are mutual TLS; the agent pins the "
        "relay's CA and a certificate from another CA fails the handshake.",
        tests=(_ROLES_TEST,),
    ),
    Control(
        "NIST SI-10",
        "Oversized and malformed calls and replies get 413/422 and are audited at the relay.",
        tests=(_ROLES_TEST,),
    ),
    Control(
        "NIST AU-10",
        "The relay cannot forge a release: it is signed at the site and verified against the "
        "site's pinned receipt key; an altered release is refused.",
        tests=(
            "tests/executors/test_pull.py::test_a_release_a_compromised_relay_alters_fails_its_receipt",
        ),
    ),
)

log = logging.getLogger("executors.pull.relay")

API = "/v1"
SiteName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


def create_relay_app(config: RelayConfig, audit: AuditLog | None = None) -> FastAPI:
    """The relay's ASGI app; refusals go to ``audit`` (by default ``state_dir/audit.db``)."""
    mailbox = Mailbox(
        config.sites, max_queued=config.max_queued_calls, offline_after_s=config.offline_after_s
    )
    orchestrators, sites = frozenset(config.orchestrators), frozenset(config.sites)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = audit is None
        app.state.audit = audit or AuditLog(config.state_dir / "audit.db", site="relay")
        app.state.audit.append("relay.started", actor="relay", details={"sites": config.sites})
        try:
            yield
        finally:
            app.state.audit.append("relay.stopped", actor="relay")
            if owned:
                app.state.audit.close()

    app = FastAPI(
        title="fedflow relay", version="1", openapi_url=None, docs_url=None, redoc_url=None,
        lifespan=lifespan,
    )  # fmt: skip
    app.state.mailbox = mailbox

    def refuse(request: HttpRequest, event: str, exc: FedflowError) -> FedflowError:
        request.app.state.audit.append(
            event,
            actor=peer_name(request.scope) or "unknown",
            details={"path": request.url.path, "error": type(exc).__name__, "why": exc.message},
        )
        return exc

    def caller(request: HttpRequest, allowed: frozenset[str], role: str) -> str:
        name = peer_name(request.scope)
        if name is None or name not in allowed:
            raise refuse(
                request,
                "relay.refused",
                RequestRefused(
                    f"this client may not act as {role} at the relay",
                    reasons=(f"certificate name is not an allowed {role}",),
                ),
            )
        return name

    async def read(request: HttpRequest, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        too_large = PayloadTooLarge(f"the body is over {limit} bytes")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise refuse(request, "relay.oversized", too_large)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise refuse(request, "relay.oversized", too_large)
        return bytes(body)

    def parse(request: HttpRequest, model: type[Call] | type[Reply], raw: bytes) -> Any:
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise refuse(
                request,
                "relay.malformed",
                InvalidRequest(f"the body is not a valid {model.__name__} ({exc.error_count()})"),
            ) from None

    @app.exception_handler(FedflowError)
    async def fedflow_error(request: HttpRequest, exc: FedflowError) -> JSONResponse:
        body: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message}
        if isinstance(exc, RequestRefused):
            body["reasons"] = list(exc.reasons)
        if exc.reason:
            body["reason"] = exc.reason
        headers = {"retry-after": "1"} if exc.reason == "busy" else None
        return JSONResponse(body, status_code=status_of(exc), headers=headers)

    @app.get(f"{API}/health")
    def health(request: HttpRequest) -> dict[str, Any]:
        """Liveness, and (to an orchestrator) which sites' agents are online."""
        name = peer_name(request.scope)
        online = {s: mailbox.online(s) for s in config.sites} if name in orchestrators else {}
        return {"status": "ok", "online": online}

    @app.post(f"{API}/sites/{{site}}/calls")
    async def post_call(request: HttpRequest, site: SiteName) -> Response:
        """Queue a call for ``site`` and answer with its reply (held open until then)."""
        caller(request, orchestrators, "orchestrator")
        call = parse(request, Call, await read(request, config.max_call_bytes))
        if call.timeout > config.max_call_s:
            call = call.model_copy(update={"timeout": config.max_call_s})
        reply = await mailbox.call(site, call)
        return Response(reply.model_dump_json(), media_type="application/json")

    @app.get(f"{API}/calls")
    async def take_call(
        request: HttpRequest, wait: Annotated[float, Query(ge=0, le=300)] = 0.0
    ) -> Response:
        """The next call queued for the calling site, waiting up to ``wait`` s; else 204."""
        site = caller(request, sites, "site")
        call = await mailbox.take(site, min(wait, config.max_poll_s), request.is_disconnected)
        if call is None:
            return Response(status_code=204)
        return Response(call.model_dump_json(), media_type="application/json")

    @app.post(f"{API}/replies", status_code=204)
    async def post_reply(request: HttpRequest) -> Response:
        """Answer a call this site fetched."""
        site = caller(request, sites, "site")
        reply = parse(request, Reply, await read(request, config.max_reply_bytes))
        try:
            mailbox.answer(site, reply)
        except FedflowError as exc:
            raise refuse(request, "relay.reply_refused", exc) from None
        return Response(status_code=204)

    return app


def _uvicorn_config(config: RelayConfig, app: FastAPI) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=ClientCertH11Protocol,
        ssl_certfile=str(config.tls_cert),
        ssl_keyfile=str(config.tls_key),
        ssl_ca_certs=str(config.client_ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
        limit_concurrency=1024,
    )


def serve(config_path: Path, **overrides: Any) -> None:
    """Run the relay for ``config_path`` until SIGINT or SIGTERM (``overrides``: host, port)."""
    import uvicorn

    config = RelayConfig.load(config_path)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        config = config.model_copy(update=changes)
    log.info(json.dumps({"event": "relay.starting", "host": config.host, "port": config.port}))
    uvicorn.Server(_uvicorn_config(config, create_relay_app(config))).run()


class RelayServer:
    """The relay in a background thread of this process (the tests and the benchmark)."""

    def __init__(self, config: RelayConfig, app: Any = None) -> None:
        import uvicorn

        self.config = config
        self.app = app if app is not None else create_relay_app(config)
        self._server = uvicorn.Server(_uvicorn_config(config, self.app))
        self._thread = threading.Thread(target=self._server.run, name="relay", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.config.port}"

    def start(self, timeout: float = 30.0) -> RelayServer:
        """Start serving; return once the relay listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError(f"the relay did not start on {self.url}")
        return self

    def stop(self) -> None:
        """Stop serving (open polls end) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(30)

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m executors.pull relay --config relay.yaml``: the relay in the foreground."""
    parser = argparse.ArgumentParser(prog="python -m executors.pull relay")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        serve(args.config, host=args.host, port=args.port)
    except FedflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
