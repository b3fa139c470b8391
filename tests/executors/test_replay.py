"""Replay protection: one use of a nonce per step, only while the request is fresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from executors.replay import ReplayGuard
from fedflow.core.analysis import AnalysisRef
from fedflow.core.messages import Request


def _request(**kw: object) -> Request:
    ref = AnalysisRef(name="cohort_count", version="1.0", code_digest="sha256:" + "1" * 64)
    return Request(analysis=ref, dataset="omop", token="a.b.c", **kw)  # type: ignore[arg-type]


def test_a_nonce_is_used_once_per_step_and_remembered_across_a_restart(tmp_path: Path) -> None:
    guard = ReplayGuard(tmp_path / "nonces.db")
    request = _request()
    assert guard.refusal(request, "check") is None
    assert guard.refusal(request, "submit") is None
    assert "already used for check" in str(guard.refusal(request, "check"))
    guard.close()
    reopened = ReplayGuard(tmp_path / "nonces.db")
    assert "already used for submit" in str(reopened.refusal(request, "submit"))
    assert reopened.refusal(_request(), "submit") is None


def test_stale_and_future_requests_are_refused(tmp_path: Path) -> None:
    guard = ReplayGuard(tmp_path / "nonces.db", max_age=timedelta(minutes=5))
    now = datetime.now(UTC)
    assert "older than 300 s" in str(
        guard.refusal(_request(created_at=now - timedelta(minutes=6)), "check")
    )
    assert "future" in str(guard.refusal(_request(created_at=now + timedelta(hours=1)), "check"))
    naive = _request(created_at=now.replace(tzinfo=None) - timedelta(minutes=1))
    assert guard.refusal(naive, "check") is None


def test_old_nonces_are_pruned(tmp_path: Path) -> None:
    guard = ReplayGuard(tmp_path / "nonces.db", max_age=timedelta(minutes=5))
    now = datetime.now(UTC)
    request = _request(created_at=now - timedelta(minutes=4))
    assert guard.refusal(request, "check", now=now) is None
    later = now + timedelta(minutes=10)
    assert guard.refusal(_request(created_at=later), "check", now=later) is None
    rows = guard._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]
    assert rows == 1  # the first nonce is gone; the request it belonged to is stale anyway
