"""flows.server: a run started in the caller's process ends without waiting on Prefect's
heartbeat thread, an operator's heartbeat setting wins, and the local server does not outlive
a process killed outright."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from prefect import flow
from prefect.settings import get_current_settings

from flows.server import ad_hoc_runs


@flow(name="heartbeat-probe")
def _heartbeat_frequency() -> int | None:
    return get_current_settings().flows.heartbeat_frequency


def test_ad_hoc_runs_send_no_heartbeats(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"):
        monkeypatch.delenv(name, raising=False)
    assert _heartbeat_frequency() is not None  # Prefect's default: heartbeats on
    api = get_current_settings().api.url
    with ad_hoc_runs():
        assert _heartbeat_frequency() is None
        assert get_current_settings().api.url == api  # the rest is kept
    assert _heartbeat_frequency() is not None


def test_an_operator_heartbeat_setting_is_kept(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with ad_hoc_runs():
        assert get_current_settings().flows.heartbeat_frequency is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_the_local_server_stops_when_its_process_is_killed(tmp_path: Path) -> None:
    # A process killed outright (SIGKILL, the out-of-memory killer) cannot stop its Prefect
    # server on the way out; the server stops anyway, and so does everything it started.
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from flows.server import prefect_api\n"
        "with prefect_api(Path(sys.argv[1])) as api:\n"
        "    api.wait()\n"
        "    print(api._proc.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "prefect")],
        stdout=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line.strip(), "the server did not start"
        server = psutil.Process(int(line))
        tree = [server, *server.children(recursive=True)]
        owner.kill()
        owner.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=30)
        left = [" ".join(p.cmdline()[:4]) for p in alive]
        for process in alive:
            process.kill()
        assert not left, left
    finally:
        owner.kill()
        owner.wait(10)
