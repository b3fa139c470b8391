"""flows.server.ad_hoc_runs: a run started in the caller's process ends without waiting on
Prefect's heartbeat thread; an operator's heartbeat setting wins."""

from __future__ import annotations

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
