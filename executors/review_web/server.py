"""Serving the review page: a uvicorn server of its own, beside the site API or alone.

``fedflow site serve`` runs :func:`review_server` in the site API's event loop when the site
config has a ``review_page`` section. :class:`ReviewPageServer` runs the page in a background
thread (tests, notebooks, a custodian's own script)::

    with ReviewPageServer(SiteConfig.load(Path("site.yaml"))) as page:
        print("open", page.url)
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from executors.config import ReviewPageConfig, SiteConfig
from executors.review_web.app import create_review_app
from executors.webusers import WebUsers
from fedflow.core import ConfigError

__all__ = ["ReviewPageServer", "review_server"]


def review_server(
    site: SiteConfig, page: ReviewPageConfig | None = None, *, users: WebUsers | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``site``'s review page (not started); ``users`` as for
    :func:`~executors.review_web.app.create_review_app`."""
    page = page or site.review_page
    if page is None:
        raise ConfigError(f"site {site.site}: no review_page section in the site config")
    tls: dict[str, Any] = {}
    if page.tls_cert is not None and page.tls_key is not None:
        tls = {"ssl_certfile": str(page.tls_cert), "ssl_keyfile": str(page.tls_key)}
    return uvicorn.Server(
        uvicorn.Config(
            create_review_app(site, page, users=users),
            host=page.host,
            port=page.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=5,
            limit_concurrency=64,
            h11_max_incomplete_event_size=16 * 1024,
            **tls,
        )
    )


class ReviewPageServer:
    """The review page served from a background thread; ``url`` once started."""

    def __init__(
        self,
        site: SiteConfig,
        page: ReviewPageConfig | None = None,
        *,
        users: WebUsers | None = None,
    ) -> None:
        self.page = page or site.review_page or ReviewPageConfig(port=0)
        self.server = review_server(site, self.page, users=users)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> str:
        """Bind, serve, and return the page's base URL once it answers."""
        family = socket.AF_INET6 if ":" in self.page.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.page.host, self.page.port))
        self._socket = sock
        port = sock.getsockname()[1]
        host = f"[{self.page.host}]" if family == socket.AF_INET6 else self.page.host
        scheme = "https" if self.page.tls else "http"
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="review-page", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the review page did not start on {host}:{port}")
            time.sleep(0.02)
        self.url = f"{scheme}://{host}:{port}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> ReviewPageServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
