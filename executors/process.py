"""Site services as child processes: start a site service, wait for health, stop.

The demo and the tests use :class:`SiteProcess` to run each site as its own process on a
loopback port. :meth:`SiteProcess.stop` sends SIGTERM, so the service shuts down gracefully
(running jobs finish into quarantine, the audit log records the stop); :meth:`SiteProcess.kill`
is the crash.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from executors.errors import SiteUnavailable

__all__ = ["SiteProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class SiteProcess:
    """One ``fedflow site serve`` process; its output goes to ``log``."""

    def __init__(
        self,
        config: Path,
        *,
        port: int,
        log: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.config, self.port, self.log, self.args = Path(config), port, Path(log), tuple(args)
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> SiteProcess:
        """Start the service (returns at once; see :meth:`wait_healthy`)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "executors.service",  # what ``fedflow site serve`` runs, without the CLI's imports
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_healthy(self, probe: Callable[[], object], timeout: float = 90.0) -> None:
        """Call ``probe`` until it returns without error; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise SiteUnavailable(
                    f"site service {self.config} exited (code {self.returncode}); see {self.log}"
                )
            try:
                probe()
                return
            except SiteUnavailable:
                if time.monotonic() > deadline:
                    raise SiteUnavailable(
                        f"site service {self.config} not healthy after {timeout:g} s"
                    ) from None
                time.sleep(0.25)

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL after ``timeout`` s."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def kill(self) -> None:
        """SIGKILL: the crash (nothing is flushed)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> SiteProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
