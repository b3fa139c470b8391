"""``fedflow audit verify`` and ``fedflow audit show`` on real SQLite logs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from fedflow.cli.audit import app
from governance.audit import AuditLog

runner = CliRunner()


def _log(path: Path) -> tuple[int, str]:
    log = AuditLog(path, site="site-eu")
    log.append("request", actor="alice", request_id="r1", details={"analysis": "cohort_count@1"})
    log.append("decision", actor="site-eu", request_id="r1", details={"allow": True})
    log.append("release", actor="site-eu", request_id="r1", details={"suppressed_cells": 2})
    log.append("request", actor="bob", request_id="r2", details={"analysis": "summary@1"})
    head = log.head()
    log.close()
    return head


def test_verify_a_clean_log(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    seq, digest = _log(db)
    result = runner.invoke(app, ["verify", str(db)])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"OK: 4 entries, head {seq}:{digest}"
    result = runner.invoke(app, ["verify", str(db), "--expect-head", f"{seq}:{digest}"])
    assert result.exit_code == 0


def test_verify_lists_the_problems_of_a_tampered_log(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    _log(db)
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    con.commit()
    con.close()
    result = runner.invoke(app, ["verify", str(db)])
    assert result.exit_code == 1
    assert "seq 2: edited" in result.stdout


def test_verify_detects_a_cut_tail_against_the_expected_head(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    seq, digest = _log(db)
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_no_delete")
    con.execute("DELETE FROM audit WHERE seq = 4")
    con.commit()
    con.close()
    assert runner.invoke(app, ["verify", str(db)]).exit_code == 0
    result = runner.invoke(app, ["verify", str(db), "--expect-head", f"{seq}:{digest}"])
    assert result.exit_code == 1 and "seq 4: truncated" in result.stdout
    bad = runner.invoke(app, ["verify", str(db), "--expect-head", "four"])
    assert bad.exit_code == 2


def test_show_as_a_table_and_as_json(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    _log(db)
    result = runner.invoke(app, ["show", str(db)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["seq", "time", "actor", "event", "request", "details"]
    assert len(lines) == 5
    assert "analysis=cohort_count@1" in lines[1] and "suppressed_cells=2" in lines[3]
    result = runner.invoke(
        app, ["show", str(db), "--request", "r1", "--event", "release", "--json"]
    )
    entries = json.loads(result.stdout)
    assert [e["seq"] for e in entries] == [3]
    assert entries[0]["details"] == {"suppressed_cells": 2}
    limited = runner.invoke(app, ["show", str(db), "--limit", "2", "--json"])
    assert [e["seq"] for e in json.loads(limited.stdout)] == [1, 2]


def test_show_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", str(tmp_path / "absent.db")])
    assert result.exit_code == 2
