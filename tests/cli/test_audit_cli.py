"""``fedflow audit verify`` and ``fedflow audit show`` on real SQLite logs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from fedflow.cli.audit import app
from governance.audit import AuditLog
from governance.checkpoints import sign_checkpoint
from governance.receipts import ReceiptKey

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


def _checkpointed(tmp_path: Path) -> tuple[Path, Path, ReceiptKey]:
    """A site log and an orchestrator log that kept two signed checkpoints of it."""
    key = ReceiptKey.load_or_create(tmp_path / "receipt.key.pem")
    site_db, orchestrator_db = tmp_path / "site.db", tmp_path / "orchestrator.db"
    with AuditLog(site_db, site="site-eu") as site, AuditLog(orchestrator_db, site="o") as orch:
        for rid in ("r1", "r2"):
            site.append("gate.allowed", actor="orchestrator", request_id=rid)
            cp = sign_checkpoint(key, site="site-eu", head=site.head(), nonce=rid)
            orch.append(
                "site.checkpoint",
                actor="site-eu",
                request_id=rid,
                details={"seq": cp.seq, "hash": cp.hash, "checkpoint": cp.model_dump(mode="json")},
            )
    return site_db, orchestrator_db, key


def test_verify_against_checkpoints_rechecks_signatures_and_the_orchestrator_log(
    tmp_path: Path,
) -> None:
    site_db, orchestrator_db, key = _checkpointed(tmp_path)
    against = ["verify", str(site_db), "--checkpoints", str(orchestrator_db), "--site", "site-eu"]
    pinned, other = tmp_path / "pinned.pem", tmp_path / "other.pem"
    pinned.write_bytes(key.public_pem)
    other.write_bytes(ReceiptKey.load_or_create(tmp_path / "other.key.pem").public_pem)
    assert runner.invoke(app, [*against, "--receipt-key", str(pinned)]).exit_code == 0
    wrong = runner.invoke(app, [*against, "--receipt-key", str(other)])
    assert wrong.exit_code == 1
    assert "FAILED: 2 of 2 checkpoints" in wrong.stdout and "signature: unknown_key" in wrong.stdout
    nobody = runner.invoke(app, [*against[:-1], "site-us"])
    assert nobody.exit_code == 2 and "no checkpoints of site 'site-us'" in nobody.stderr
    con = sqlite3.connect(orchestrator_db)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET details = replace(details, '\"seq\":2', '\"seq\":1')")
    con.commit()
    con.close()
    tampered = runner.invoke(app, against)
    assert tampered.exit_code == 1 and "is itself tampered" in tampered.stderr
