"""A local Prefect API for the CLI, the demo and the tests.

Without ``PREFECT_API_URL`` every Prefect process would start a temporary server of its own,
slowly, and can drop records at exit. :func:`prefect_api` instead starts ``prefect server``
(SQLite under ``home``, or the database ``database_url`` names, e.g.
``postgresql+asyncpg://user:password@host/prefect``) on a free loopback port (or the given
host and port), points this process at it, and stops it at the end, after flushing logs and
events. With ``PREFECT_API_URL`` set it uses that server and starts nothing, unless
``reuse=False`` (``fedflow server start`` always starts its own). Telemetry is off unless the
operator turned it on. On Linux the server stops with this process even when it is killed
outright. :func:`ad_hoc_runs` spares the runs a caller starts in its own process Prefect's
heartbeat thread, which made every run end up to a second late.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.errors import FlowError

if TYPE_CHECKING:
    from prefect.settings import Settings

__all__ = [
    "PrefectApi",
    "PrefectServerUnavailable",
    "ad_hoc_runs",
    "prefect_api",
    "quiet_telemetry",
]

HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a child gets when the thread that started it ends."""

log = logging.getLogger(__name__)


class PrefectServerUnavailable(FlowError):
    """The local Prefect server did not become healthy."""


def quiet_telemetry() -> None:
    """Turn Prefect's telemetry off unless the operator set it explicitly."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@contextmanager
def ad_hoc_runs() -> Iterator[None]:
    """Flow runs started in this block, in the caller's own process, send no heartbeats.

    Prefect (3.9) sends a flow run's heartbeats from a thread that sleeps in one-second steps,
    and joins that thread when the run ends: every run ended up to a second late (an empty
    flow took 1.2 s, 0.2 s without). Heartbeats let the Prefect server find crashed runs of
    *deployments* (zombie detection); a run started by ``run_analysis`` or a fit in the
    researcher's own process reports its own failure. Served deployments (``fedflow server
    start``) keep them, and an operator who sets a heartbeat frequency keeps them everywhere.
    """
    if any(name in os.environ for name in HEARTBEAT_SETTINGS):
        yield
        return
    from prefect.context import SettingsContext, get_settings_context

    current = get_settings_context()
    with SettingsContext(profile=current.profile, settings=_without_heartbeats(current.settings)):
        yield


_last_without_heartbeats: list[tuple[Settings, Settings]] = []


def _without_heartbeats(settings: Settings) -> Settings:
    """``settings`` with no flow heartbeats. Building Prefect settings takes about a quarter
    of a second, which a fit paid on every call: the last one built is kept for the next."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if _last_without_heartbeats and _last_without_heartbeats[0][0] is settings:
        return _last_without_heartbeats[0][1]
    updated = settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    _last_without_heartbeats[:] = [(settings, updated)]
    return updated


class PrefectApi:
    """A handle on the Prefect API this process uses; :meth:`wait` blocks until it is healthy."""

    def __init__(
        self, url: str, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float
    ) -> None:
        self.url = url
        self._proc = proc
        self._log = log
        self._timeout = timeout
        self._ready = proc is None

    def wait(self) -> str:
        """Block until the API answers its health check; return its URL."""
        if not self._ready:
            assert self._proc is not None and self._log is not None
            _wait_healthy(self.url, self._proc, self._timeout, self._log)
            self._ready = True
        return self.url


@contextmanager
def prefect_api(
    home: Path,
    *,
    timeout: float = 120.0,
    host: str = "127.0.0.1",
    port: int | None = None,
    database_url: str | None = None,
    reuse: bool = True,
) -> Iterator[PrefectApi]:
    """The Prefect API to use: ``PREFECT_API_URL``, or a local server started now.

    The local server starts in the background; call :meth:`PrefectApi.wait` before the first
    flow, so that work before it overlaps the server's start-up. ``database_url``: the
    server's database (``PREFECT_API_DATABASE_CONNECTION_URL``); default SQLite under ``home``
    (or whatever the environment already configures). ``reuse=False``: start a server even
    when ``PREFECT_API_URL`` is set.
    """
    quiet_telemetry()
    if reuse and os.environ.get("PREFECT_API_URL"):
        yield PrefectApi(os.environ["PREFECT_API_URL"], None, None, timeout)
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    url = f"http://{_client_host(host)}:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home.resolve())}
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    elif not env.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        _seed_sqlite(home, env)
    # The UI asks the API it was served from (else it assumes port 4200), from any host.
    env.setdefault("PREFECT_UI_API_URL", "/api")
    logpath = home / "server.log"
    with logpath.open("ab") as logfile:
        proc = _start_tied(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own process group: a terminal's Ctrl-C reaches this process only, which
            # stops its work (and flushes logs and events) before it stops the server.
            process_group=0,
        )
    api = PrefectApi(url, proc, logpath, timeout)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield api
            finally:
                if api._ready:
                    _flush()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("stopped the local Prefect server at %s", url)


def _start_tied(args: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **options)``, stopped (SIGTERM) when this process dies.

    ``prefect_api`` stops its server on the way out, but a process killed outright (SIGKILL,
    the out-of-memory killer) left it running. On Linux the child asks for a parent-death
    signal, which fires when the *thread* that started it ends; so a daemon thread starts it
    and then waits for it, and ends only with the server or with this process.
    """
    started: queue.SimpleQueue[subprocess.Popen[bytes] | BaseException] = queue.SimpleQueue()

    def launch() -> None:
        try:
            proc = subprocess.Popen(args, preexec_fn=_dies_with(os.getpid()), **options)
        except BaseException as exc:  # handed to the caller, which raises it
            started.put(exc)
            return
        started.put(proc)
        proc.wait()

    threading.Thread(target=launch, name="prefect-server", daemon=True).start()
    result = started.get()
    if isinstance(result, BaseException):
        raise result
    return result


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child SIGTERM when its parent thread ends (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os._exit(1)

    return preexec


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


def _seed_sqlite(home: Path, env: dict[str, str]) -> None:
    """Give a new home a copy of an empty database already migrated to this Prefect version.

    A server migrates a new SQLite database through every schema version Prefect ever had,
    which costs it about 14 s of CPU, more than the rest of its start (about 12 s). The empty
    migrated database is made once per Prefect version, under ``$XDG_CACHE_HOME/fedflow``
    (default ``~/.cache/fedflow``); where that fails the server migrates as it would anyway.
    """
    import prefect

    target = home / "prefect.db"
    if target.exists():
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedflow"
    template = cache / f"prefect-{prefect.__version__}.db"
    try:
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as scratch:
                subprocess.run(
                    [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                    env={**env, "PREFECT_HOME": scratch},
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=True,
                    timeout=600,
                )
                os.replace(Path(scratch) / "prefect.db", template)  # atomic: racers agree
        partial = target.with_suffix(".db.partial")
        shutil.copyfile(template, partial)
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("no migrated Prefect database to start from (%s); the server migrates", exc)


def _client_host(host: str) -> str:
    """Where this process reaches a server bound to ``host`` (a wildcard: the loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
