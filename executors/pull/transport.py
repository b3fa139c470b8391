"""The orchestrator's side of a pull site: the site protocol, carried by a relay.

:class:`PullSiteTransport` is :class:`~executors.transport.HttpsSiteTransport` with one thing
changed: its HTTP requests do not go to the site (which accepts no connection) but, through
:class:`RelayChannel`, to the relay, which queues each as a :class:`~executors.pull.messages.Call`
until the site's agent fetches it, and returns the agent's reply. Everything above the wire
(the messages, the error mapping, the researcher's token on a release, the pinned receipt key
against which every release is verified) is the HTTPS transport's, so a flow behaves the same
over either.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import ValidationError

from executors.pull.messages import CALL_HEADERS, Call, Reply
from executors.transport import HttpsSiteTransport, client_tls
from fedflow.core import ConfigError

__all__ = ["PullSiteTransport", "RelayChannel"]

_MARGIN_S = 5.0  # the relay answers (503) before the orchestrator's read timeout ends


class RelayChannel(httpx.BaseTransport):
    """An httpx transport that sends each request for ``site`` as a call through the relay."""

    def __init__(self, site: str, relay: httpx.Client) -> None:
        self.site, self._relay = site, relay

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        read = (request.extensions.get("timeout") or {}).get("read") or 30.0
        call = Call(
            method=request.method,
            path=request.url.path,
            query=request.url.query.decode(),
            headers={k: v for k, v in request.headers.items() if k.lower() in CALL_HEADERS},
            body=request.read(),
            timeout=read,
        )
        response = self._relay.post(
            f"/sites/{self.site}/calls",
            content=call.model_dump_json(),
            headers={"content-type": "application/json"},
            timeout=httpx.Timeout(read + _MARGIN_S, connect=min(read, 10.0)),
        )
        if response.status_code == 403:  # not a site's refusal: the relay's, of this client
            return httpx.Response(
                502,
                json={"error": "SiteError", "message": f"the relay refused: {response.text[:300]}"},
            )
        if response.status_code != 200:  # the relay's own answer, in the service's error form
            return httpx.Response(
                response.status_code, headers=response.headers, content=response.content
            )
        try:
            reply = Reply.model_validate_json(response.content)
        except ValidationError:
            reply = None
        if reply is None or reply.call_id != call.call_id:
            return httpx.Response(
                502, json={"error": "SiteError", "message": "the relay returned no valid reply"}
            )
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body)

    def close(self) -> None:
        self._relay.close()


class PullSiteTransport(HttpsSiteTransport):
    """A site reached through a relay it dials out to (mutual TLS to the relay)."""

    def __init__(
        self,
        site: str,
        relay: str,
        *,
        ca: Path,
        cert: Path,
        key: Path,
        receipt_key: bytes | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not relay.startswith("https://"):
            raise ConfigError(f"site {site}: the relay url must be https://")
        verify = client_tls(site, ca, cert, key)
        self.relay = relay.rstrip("/")
        client = httpx.Client(
            base_url=f"{self.relay}/v1",
            verify=verify,
            follow_redirects=False,
            limits=httpx.Limits(keepalive_expiry=25.0),  # under the relay's 30 s
        )
        self._open(
            site,
            f"https://{site}.pull.invalid",  # never dialled: RelayChannel carries every call
            receipt_key,
            timeout,
            transport=RelayChannel(site, client),
        )
