"""A local Prefect API for the CLI, the demo and the tests.

Without ``PREFECT_API_URL`` every Prefect process would start a temporary server of its own,
slowly, and can drop records at exit. :func:`prefect_api` instead starts ``prefect server``
(SQLite under ``home``) on a free loopback port, waits until it is healthy, points this process
at it, and stops it at the end, after flushing logs and events. With ``PREFECT_API_URL`` set it
uses that server and starts nothing. Telemetry is off unless the operator turned it on.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.errors import FlowError

__all__ = ["PrefectServerUnavailable", "prefect_api", "quiet_telemetry"]

log = logging.getLogger(__name__)


class PrefectServerUnavailable(FlowError):
    """The local Prefect server did not become healthy."""


def quiet_telemetry() -> None:
    """Turn Prefect's telemetry off unless the operator set it explicitly."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextmanager
def prefect_api(home: Path, *, timeout: float = 90.0) -> Iterator[str]:
    """Yield the URL of a healthy Prefect API: ``PREFECT_API_URL``, or a local server."""
    quiet_telemetry()
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home.resolve()), "PREFECT_UI_ENABLED": "true"}
    env.pop("PREFECT_API_URL", None)
    logfile = (home / "server.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=logfile,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        _wait_healthy(url, proc, timeout, home / "server.log")
        log.info("Prefect API at %s (UI http://127.0.0.1:%d)", url, port)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _flush()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logfile.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float, logpath: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PrefectServerUnavailable(
                f"prefect server exited with code {proc.returncode}; see {logpath}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise PrefectServerUnavailable(f"prefect server not healthy after {timeout:g} s; see {logpath}")


def _flush() -> None:
    """Send buffered run logs and events before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
