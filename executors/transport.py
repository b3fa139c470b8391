"""How the orchestrator reaches a site: one protocol, several transports.

:class:`SiteTransport` is the site protocol as the orchestrator sees it. Flows use only this
class, so a federation profile can switch a site between in-process, HTTPS and pull without
touching a flow. Every transport also carries the site's pinned receipt key
(``receipt_key``, PEM), against which the orchestrator verifies each release.

:class:`HttpsSiteTransport` speaks to a site service (:mod:`executors.service`) with mutual
TLS: it presents the orchestrator's client certificate and trusts only the pinned site CA.
HTTP errors come back as the same fedflow exceptions the in-process transport raises, so a
flow behaves identically over either.
"""

from __future__ import annotations

import ssl
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from executors.errors import (
    AnalysisFailed,
    DatasetNotFound,
    FitNotOpen,
    JobNotFound,
    RequestRefused,
    SiteError,
    SiteUnavailable,
)
from executors.node import SiteNode
from fedflow.core import (
    ConfigError,
    FedflowError,
    InvalidParameters,
    InvalidRequest,
    PayloadTooLarge,
    UnknownAnalysis,
)
from fedflow.core.messages import Decision, JobState, JobStatus, Release, Request, SiteInfo
from governance.checkpoints import Checkpoint

__all__ = ["HttpsSiteTransport", "InProcessSiteTransport", "SiteTransport", "client_tls"]

M = TypeVar("M", bound=BaseModel)


def client_tls(site: str, ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """A mutual-TLS client context: trust only ``ca``, present ``cert`` (TLS 1.2 at least).

    Unreadable or invalid files are a :class:`~fedflow.core.ConfigError` naming ``site``.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"site {site}: cannot load TLS files ({type(exc).__name__})") from None
    return context


class SiteTransport(ABC):
    """The site protocol: pre-gate, run into quarantine, wait, release through the airlock."""

    site: str
    receipt_key: bytes | None = None
    """The site's receipt-signing public key (PEM) the orchestrator pins, if any."""

    @abstractmethod
    def info(self) -> SiteInfo:
        """What the site says about itself."""

    @abstractmethod
    def checkpoint(self, nonce: str | None = None) -> Checkpoint:
        """The site's audit head, signed by its receipt key (``nonce`` is signed with it)."""

    @abstractmethod
    def check(self, request: Request) -> Decision:
        """Ask the site's pre-gate for a decision."""

    @abstractmethod
    def submit(self, request: Request) -> str:
        """Have the site run the request into quarantine; returns a job id."""

    @abstractmethod
    def wait(self, job_id: str, timeout: float) -> JobStatus:
        """Wait up to ``timeout`` seconds for the job to leave the running state."""

    @abstractmethod
    def release(self, job_id: str) -> Release:
        """Ask the site's airlock to check and release the quarantined partial."""

    def step(self, request: Request) -> Release:
        """Run ``request`` as the next round of a fit the site's gate allowed, and release it
        (:meth:`executors.node.SiteNode.step`). :class:`FitNotOpen` when the site has no such
        fit, or when the transport has no steps (the pull transport): then use the full
        protocol."""
        raise FitNotOpen(
            "this transport runs every round through the gate",
            site=self.site,
            request_id=request.request_id,
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the transport holds (connections, an owned site node)."""


class InProcessSiteTransport(SiteTransport):
    """A site node in this process (tests and the embedded demo).

    Messages still cross as JSON, exactly as they would over the network, so a flow that works
    in-process does not depend on sharing objects with the site.
    """

    def __init__(self, node: SiteNode, *, owned: bool = False) -> None:
        self.node = node
        self.site = node.name
        self.receipt_key = node.receipt_key.public_pem
        self._owned = owned

    def info(self) -> SiteInfo:
        return _copy(self.node.info())

    def checkpoint(self, nonce: str | None = None) -> Checkpoint:
        return _copy(self.node.checkpoint(nonce))

    def check(self, request: Request) -> Decision:
        return _copy(self.node.check(_copy(request)))

    def submit(self, request: Request) -> str:
        return self.node.submit(_copy(request))

    def wait(self, job_id: str, timeout: float) -> JobStatus:
        return _copy(self.node.wait(job_id, timeout))

    def release(self, job_id: str) -> Release:
        return _copy(self.node.release(job_id))

    def step(self, request: Request) -> Release:
        return _copy(self.node.step(_copy(request)))

    def close(self) -> None:
        if self._owned:
            self.node.close()


def _copy(message: M) -> M:
    return type(message).model_validate_json(message.model_dump_json())


_ERRORS: dict[str, type[FedflowError]] = {
    cls.__name__: cls
    for cls in (
        RequestRefused,
        JobNotFound,
        FitNotOpen,
        AnalysisFailed,
        DatasetNotFound,
        UnknownAnalysis,
        InvalidParameters,
        InvalidRequest,
        PayloadTooLarge,
        SiteUnavailable,
        SiteError,
    )
}


class HttpsSiteTransport(SiteTransport):
    """A site service over HTTPS with mutual TLS."""

    def __init__(
        self,
        site: str,
        url: str,
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        receipt_key: bytes | None = None,
        timeout: float = 30.0,
        allow_insecure_http: bool = False,
    ) -> None:
        if url.startswith("http://") and not allow_insecure_http:
            raise ConfigError(f"site {site}: plain HTTP is refused unless allow_insecure_http")
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"site {site}: the url must be https://")
        verify: ssl.SSLContext | bool = False
        if url.startswith("https://"):
            if ca is None or cert is None or key is None:
                raise ConfigError(f"site {site}: an https site needs ca, cert and key")
            verify = client_tls(site, ca, cert, key)
        self._open(site, url, receipt_key, timeout, verify=verify)

    def _open(
        self, site: str, url: str, receipt_key: bytes | None, timeout: float, **client: Any
    ) -> None:
        """Set up the HTTP client (``client``: ``verify``, or another httpx ``transport``)."""
        self.site = site
        self.url = url.rstrip("/")
        self.receipt_key = receipt_key
        self._poll = min(20.0, timeout * 0.8)  # a long-poll must end before the read timeout
        self._tokens: dict[str, str] = {}
        self._client = httpx.Client(
            base_url=f"{self.url}/v1",
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
            **client,
        )

    def health(self) -> dict[str, Any]:
        """The service's liveness answer."""
        body: dict[str, Any] = self._call("GET", "/health").json()
        return body

    def info(self) -> SiteInfo:
        return self._parse(SiteInfo, self._call("GET", "/info"))

    def checkpoint(self, nonce: str | None = None) -> Checkpoint:
        params = {} if nonce is None else {"nonce": nonce}
        return self._parse(Checkpoint, self._call("GET", "/checkpoint", params=params))

    def check(self, request: Request) -> Decision:
        return self._parse(Decision, self._call("POST", "/check", request))

    def submit(self, request: Request) -> str:
        body = self._call("POST", "/jobs", request).json()
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if not isinstance(job_id, str):
            raise SiteError("the site answered without a job id", site=self.site)
        self._tokens[job_id] = request.token
        return job_id

    def status(self, job_id: str, wait: float = 0.0) -> JobStatus:
        """The job's state, waiting up to ``wait`` s (at most 20 s per call) while it runs."""
        params = {"wait": f"{min(max(wait, 0.0), self._poll):.3f}"}
        return self._parse(JobStatus, self._call("GET", f"/jobs/{job_id}", params=params))

    def wait(self, job_id: str, timeout: float) -> JobStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id, wait=max(0.0, deadline - time.monotonic()))
            if status.state is not JobState.RUNNING or time.monotonic() >= deadline:
                return status

    def release(self, job_id: str, token: str | None = None) -> Release:
        """Release a job this transport submitted (or one of the researcher with ``token``)."""
        token = token or self._tokens.get(job_id)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self._parse(Release, self._call("POST", f"/jobs/{job_id}/release", headers=headers))

    def step(self, request: Request) -> Release:
        answer = self._call("POST", "/steps", request, params={"checkpoint": "true"})
        release = self._parse(Release, answer)
        self._tokens[release.job_id] = request.token
        return release

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        message: BaseModel | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = None if message is None else message.model_dump_json().encode()
        headers = dict(headers or {})
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            response = self._client.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.TimeoutException:
            raise SiteUnavailable("the site did not answer in time", site=self.site) from None
        except httpx.TransportError as exc:
            raise SiteUnavailable(
                f"cannot reach the site ({type(exc).__name__})", site=self.site, reason="network"
            ) from None
        if response.is_success:
            return response
        raise self._error(response, message)

    def _error(self, response: httpx.Response, message: BaseModel | None) -> FedflowError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        kind = str(body.get("error", ""))
        text = str(body.get("message", f"the site answered HTTP {response.status_code}"))
        request_id = getattr(message, "request_id", None)
        context: dict[str, Any] = {"site": self.site, "request_id": request_id}
        if response.status_code == 429:
            retry = response.headers.get("retry-after", "?")
            return SiteUnavailable(f"{text} (retry after {retry} s)", reason="busy", **context)
        cls = _ERRORS.get(kind)
        if cls is RequestRefused or (cls is None and response.status_code == 403):
            reasons = body.get("reasons") or []
            return RequestRefused(text, reasons=tuple(str(r) for r in reasons), **context)
        if cls is not None:
            return cls(text, reason=body.get("reason"), **context)
        if response.status_code >= 500:
            return SiteUnavailable(text, **context)
        return InvalidRequest(text, **context)

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise SiteError(
                f"the site answered with an invalid {model.__name__}", site=self.site
            ) from None
