"""The site service: the site protocol over HTTPS with mutual TLS (FastAPI on uvicorn).

``fedflow site serve --config site.yaml`` runs :func:`serve`: the site node (its own Dask
cluster, audit log, quarantine) in this process, behind a versioned API:

=======  ===============================  ==============================================
GET      ``/v1/health``                   liveness; the site's name
GET      ``/v1/info``                     :class:`~fedflow.core.messages.SiteInfo`
GET      ``/v1/checkpoint?nonce=N``       the audit head signed by the receipt key
POST     ``/v1/check``                    body ``Request`` → ``Decision`` (the pre-gate)
POST     ``/v1/jobs``                     body ``Request`` → 202 ``{"job_id": ...}``
GET      ``/v1/jobs/{job_id}?wait=S``     ``JobStatus``, waiting up to S s while it runs
POST     ``/v1/jobs/{job_id}/release``    ``Release`` (partial as base64 Arrow IPC, receipt)
GET      ``/v1/jobs/{job_id}/result``     the released partial as an Arrow IPC stream
GET      ``/v1/openapi.json``             the OpenAPI document
=======  ===============================  ==============================================

Errors are JSON ``{"error": <type>, "message": ..., "reasons": [...]}`` and never carry
row-level values: 400/422 for an invalid request, 403 for a refusal (with the gate's
reasons), 404 for an unknown job, 409 for a job not in a releasable state, 413 for a body over
``max_body_bytes``, 429 with ``Retry-After`` when ``max_running_jobs`` are running, 503 while
the site shuts down. Malformed bodies are audited (``request.malformed``). A release (and
``/result``) needs ``Authorization: Bearer <token>`` of the researcher and project the job ran
for; anyone else is told there is no such job (and the site audits ``release.refused``).
While the site holds the result for its custodian's review, a release answers 200 with a
signed ``Release`` whose outcome is ``review`` and no partial: ask again later. Decisions are
made at the site (``fedflow airlock``), never through this API.

TLS is required: the server presents its certificate and accepts only clients whose
certificate chains to ``service.client_ca`` (``ssl.CERT_REQUIRED``); plain HTTP needs
``allow_insecure_http=True`` (local development only). On SIGTERM uvicorn stops accepting
connections, running jobs finish into quarantine, and the audit log records the stop.

With a ``review_page`` section in the site config, the same process also serves the
custodian review page (:mod:`executors.review_web`, ``docs/review-page.md``) on its own
listener, without client certificates; the two stop together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Header, Query
from fastapi import Path as PathParam
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from executors.config import ServiceConfig, SiteConfig
from executors.errors import JobNotFound, RequestRefused, SiteError, SiteUnavailable
from executors.node import SiteNode
from fedflow.core import ConfigError, FedflowError, InvalidRequest, PayloadTooLarge
from fedflow.core.configfile import describe_problems
from fedflow.core.controls import Control
from fedflow.core.messages import Decision, JobStatus, Release, Request, SiteInfo
from governance.checkpoints import Checkpoint

__all__ = [
    "API_PREFIX",
    "ARROW_STREAM",
    "create_app",
    "main",
    "serve",
    "status_of",
]

__controls__ = (
    Control(
        "NIST SI-10",
        "Oversized bodies get 413, malformed requests 4xx naming the field, never a 5xx or an "
        "echoed value; each is audited.",
        tests=(
            "tests/executors/test_service.py::test_oversized_and_malformed_requests_get_clear_4xx_and_are_audited",
            "tests/executors/test_service.py::test_fuzzing_from_the_openapi_document_finds_no_5xx",
        ),
    ),
)

log = logging.getLogger("executors.service")  # also when run as __main__

API_PREFIX = "/v1"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_WAIT_S = 20.0
JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
WaitSeconds = Annotated[float, Query(ge=0, le=MAX_WAIT_S)]
Nonce = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
Bearer = Annotated[str | None, Header(max_length=16_384)]


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestRefused(
            "a release needs the requesting researcher's token (Authorization: Bearer)",
            reasons=("no bearer token",),
        )
    return token.strip()


def status_of(exc: FedflowError) -> int:
    """The HTTP status an error maps to (the client maps it back)."""
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, RequestRefused):
        return 403
    if isinstance(exc, LookupError) and not isinstance(exc, InvalidRequest):
        return 404  # JobNotFound, DatasetNotFound
    if isinstance(exc, InvalidRequest):
        return 422
    if isinstance(exc, SiteUnavailable):
        return 429 if exc.reason == "busy" else 503
    if isinstance(exc, SiteError):
        return 409
    return 400


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = _error(413, "PayloadTooLarge", f"the body is over {self.limit} bytes")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await too_large(scope, receive, send)
            return
        seen, started = 0, False

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLarge(f"the body is over {self.limit} bytes")
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, tracking)
        except PayloadTooLarge:
            if not started:
                await too_large(scope, receive, send)


def _access_log(app: FastAPI) -> None:
    @app.middleware("http")
    async def log_request(
        request: HttpRequest, call_next: Callable[[HttpRequest], Awaitable[Response]]
    ) -> Response:
        started = time.monotonic()
        response = await call_next(request)
        log.info(
            json.dumps(
                {
                    "event": "http",
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                }
            )
        )
        return response


def create_app(
    node: Callable[[], SiteNode] | SiteNode, limits: ServiceConfig | None = None
) -> FastAPI:
    """The ASGI app for one site; ``node`` is a node or a factory called at start-up.

    ``limits`` gives the body-size, concurrency and retry limits (defaults when absent).
    """
    limits = limits or ServiceConfig()
    submit_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = not isinstance(node, SiteNode)
        site = node if isinstance(node, SiteNode) else await anyio.to_thread.run_sync(node)
        app.state.node = site
        log.info(json.dumps({"event": "service.started", "site": site.name}))
        try:
            yield
        finally:
            log.info(json.dumps({"event": "service.stopping", "site": site.name}))
            if owned:
                await anyio.to_thread.run_sync(site.close)

    app = FastAPI(
        title="fedflow site service",
        version="1",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    _access_log(app)

    def site_of(request: HttpRequest) -> SiteNode:
        site: SiteNode = request.app.state.node
        return site

    @app.exception_handler(FedflowError)
    async def fedflow_error(request: HttpRequest, exc: FedflowError) -> JSONResponse:
        status = status_of(exc)
        extra: dict[str, Any] = {}
        headers = {}
        if isinstance(exc, RequestRefused):
            extra["reasons"] = list(exc.reasons)
        if status == 429:
            headers["Retry-After"] = str(limits.retry_after_s)
        if exc.reason:
            extra["reason"] = exc.reason
        response = _error(status, type(exc).__name__, exc.message, **extra)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def malformed(request: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ][:20]
        site = getattr(request.app.state, "node", None)
        if isinstance(site, SiteNode):
            site.audit.append(
                "request.malformed",
                actor="orchestrator",
                details={"path": request.url.path, "problems": len(exc.errors())},
            )
        return _error(
            422, "InvalidRequest", "the request body is not a valid message", problems=problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: HttpRequest, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, PayloadTooLarge):  # a streamed body went over the limit
            return _error(413, "PayloadTooLarge", exc.__cause__.message)
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return _error(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: HttpRequest, exc: Exception) -> JSONResponse:
        log.error(json.dumps({"event": "error", "type": type(exc).__name__}))
        return _error(500, "InternalError", "the site could not serve the request")

    @app.get(f"{API_PREFIX}/health")
    def health(request: HttpRequest) -> dict[str, str]:
        """Liveness: the site answers and says its name."""
        return {"status": "ok", "site": site_of(request).name}

    @app.get(f"{API_PREFIX}/info")
    def info(request: HttpRequest) -> SiteInfo:
        """Datasets and their snapshot digests, policy digest, audit head, receipt key."""
        return site_of(request).info()

    @app.get(f"{API_PREFIX}/checkpoint")
    def checkpoint(request: HttpRequest, nonce: Nonce = None) -> Checkpoint:
        """The site's audit head (seq, hash) signed by its receipt key, with ``nonce``."""
        return site_of(request).checkpoint(nonce)

    @app.post(f"{API_PREFIX}/check")
    def check(request: HttpRequest, body: Request) -> Decision:
        """The pre-gate's decision on a request (audited)."""
        return site_of(request).check(body)

    @app.post(f"{API_PREFIX}/jobs", status_code=202)
    def submit(request: HttpRequest, body: Request) -> dict[str, str]:
        """Re-check the request and run it into quarantine; returns the job id at once."""
        site = site_of(request)
        with submit_lock:
            admit(site, body)
            return {"job_id": site.submit(body)}

    @app.post(f"{API_PREFIX}/steps")
    def step(request: HttpRequest, body: Request, checkpoint: bool = False) -> Release:
        """Run the request as the next round of a fit the gate allowed and release it
        (404 ``FitNotOpen``: no such fit, send it through ``/check`` and ``/jobs``). A step
        counts as a running job while it runs: 429 beyond ``max_running_jobs``. With
        ``checkpoint=true`` the release carries the site's signed audit head after the step
        (orchestrators that predate it do not ask, and get the release without it)."""
        site = site_of(request)
        with ExitStack() as running:
            with submit_lock:
                admit(site, body)
                running.enter_context(site.step_running())
            release = site.step(body)
        return release if checkpoint else release.model_copy(update={"checkpoint": None})

    def admit(site: SiteNode, body: Request) -> None:
        """Refuse a job or step while ``max_running_jobs`` run (call under ``submit_lock``)."""
        if site.running_jobs() >= limits.max_running_jobs:
            raise SiteUnavailable(
                f"{limits.max_running_jobs} job(s) already running; retry later",
                site=site.name,
                request_id=body.request_id,
                reason="busy",
            )

    @app.get(f"{API_PREFIX}/jobs/{{job_id}}")
    def status(
        request: HttpRequest,
        job_id: JobId,
        wait: WaitSeconds = 0.0,
    ) -> JobStatus:
        """A job's state; with ``wait`` > 0, blocks up to that many seconds while it runs."""
        site = site_of(request)
        return site.wait(job_id, wait) if wait > 0 else site.status(job_id)

    @app.post(f"{API_PREFIX}/jobs/{{job_id}}/release")
    def release(request: HttpRequest, job_id: JobId, authorization: Bearer = None) -> Release:
        """Pass the quarantined partial through the airlock; the release carries a receipt.

        Needs ``Authorization: Bearer <token>`` of the researcher the job was run for.
        """
        return site_of(request).release(job_id, token=_bearer(authorization))

    @app.get(
        f"{API_PREFIX}/jobs/{{job_id}}/result",
        response_class=Response,
        responses={200: {"content": {ARROW_STREAM: {}}}},
    )
    def result(request: HttpRequest, job_id: JobId, authorization: Bearer = None) -> Response:
        """The released partial as an Arrow IPC stream (after a release only, same caller)."""
        site = site_of(request)
        job = site.quarantine.get(job_id)
        if job.release is None or job.release.partial is None:
            raise JobNotFound(f"job {job_id} has no released result")
        site.release(job_id, token=_bearer(authorization))  # the same caller check
        return Response(
            job.release.partial,
            media_type=ARROW_STREAM,
            headers={"X-Fedflow-Result-Digest": job.release.digests.get("result", "")},
        )

    return app


def serve(
    config_path: Path,
    *,
    allow_insecure_http: bool = False,
    **overrides: Any,
) -> None:
    """Run the site service for ``config_path`` until SIGINT or SIGTERM.

    ``overrides`` replace fields of the file's ``service`` section (``host``, ``port``,
    ``max_body_bytes``, ...; ``None`` keeps the file's value) and are validated like it. On a
    signal, open HTTP connections get ``graceful_timeout_s`` seconds to finish; then the node
    stops taking jobs, lets running jobs finish into quarantine and audits the stop.
    """
    import uvicorn

    config = SiteConfig.load(config_path)
    service = config.service or ServiceConfig()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        try:
            service = ServiceConfig.model_validate({**service.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(f"site {config.site}: {describe_problems(exc)}") from None
    tls = (service.tls_cert, service.tls_key, service.client_ca)
    if any(tls) and not all(tls):
        raise ConfigError("service: tls_cert, tls_key and client_ca go together")
    if not all(tls) and not allow_insecure_http:
        raise ConfigError(
            f"site {config.site}: the service needs tls_cert, tls_key and client_ca; plain HTTP "
            "is for local development only (--allow-insecure-http)"
        )
    settings: dict[str, Any] = {}
    if all(tls):
        settings = {
            "ssl_certfile": str(service.tls_cert),
            "ssl_keyfile": str(service.tls_key),
            "ssl_ca_certs": str(service.client_ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    app = create_app(lambda: SiteNode(config), service)
    api = uvicorn.Server(
        uvicorn.Config(
            app,
            host=service.host,
            port=service.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=int(service.graceful_timeout_s),
            limit_concurrency=64,
            h11_max_incomplete_event_size=64 * 1024,
            **settings,
        )
    )
    if config.review_page is None:
        api.run()
        return
    from executors.review_web import review_server

    asyncio.run(_serve_together(api, review_server(config)))


async def _serve_together(*servers: Any) -> None:
    """Run uvicorn servers in one loop; when one stops (a signal, a failed bind), stop all."""
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    """``python -m executors.service``: ``fedflow site serve`` without the CLI's imports.

    Child processes (the demo, the tests) use it because it starts in a fraction of the time
    the whole CLI (Prefect included) takes to import.
    """
    parser = argparse.ArgumentParser(prog="python -m executors.service")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--allow-insecure-http", action="store_true")
    parser.add_argument("--max-body-bytes", type=int)
    parser.add_argument("--max-running-jobs", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("executors").setLevel(logging.INFO)
    try:
        serve(
            args.config,
            host=args.host,
            port=args.port,
            allow_insecure_http=args.allow_insecure_http,
            max_body_bytes=args.max_body_bytes,
            max_running_jobs=args.max_running_jobs,
        )
    except FedflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
