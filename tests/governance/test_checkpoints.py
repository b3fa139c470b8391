"""Signed audit checkpoints: signatures, and checking a log against the checkpoints kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from governance.audit import GENESIS, AuditLog
from governance.checkpoints import Checkpoint, check_checkpoints, sign_checkpoint, verify_checkpoint
from governance.errors import CheckpointInvalid
from governance.receipts import ReceiptKey
from tests.forgery import rewrite_log


@pytest.fixture
def key(tmp_path: Path) -> ReceiptKey:
    return ReceiptKey.load_or_create(tmp_path / "receipt.key.pem")


def test_a_checkpoint_verifies_against_the_pinned_key_only(key: ReceiptKey, tmp_path: Path) -> None:
    cp = sign_checkpoint(key, site="site-eu", head=(7, "sha256:" + "a" * 64), nonce="r1")
    assert verify_checkpoint(cp, key.public_pem, site="site-eu", nonce="r1") == cp

    def reason(
        checkpoint: Checkpoint,
        pem: bytes | None = key.public_pem,
        site: str = "site-eu",
        nonce: str = "r1",
    ) -> str:
        with pytest.raises(CheckpointInvalid) as refused:
            verify_checkpoint(checkpoint, pem, site=site, nonce=nonce)
        return str(refused.value.reason)

    assert reason(cp.model_copy(update={"seq": 8})) == "bad_signature"
    assert reason(cp.model_copy(update={"hash": "sha256:" + "b" * 64})) == "bad_signature"
    other = ReceiptKey.load_or_create(tmp_path / "other.key.pem")
    assert reason(cp, pem=other.public_pem) == "unknown_key"
    forged = sign_checkpoint(other, site="site-eu", head=(7, cp.hash), nonce="r1")
    forged = forged.model_copy(update={"key_id": key.key_id})
    assert reason(forged) == "bad_signature"
    assert reason(cp, site="site-us") == "mismatch"
    assert reason(cp, nonce="r2") == "stale"
    assert reason(cp, pem=None) == "no_pinned_key"


def _fill(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append("gate.allowed", actor="orchestrator", request_id=f"r{i}", details={"i": i})


def test_a_complete_rewrite_passes_alone_but_breaks_the_later_checkpoints(
    key: ReceiptKey, tmp_path: Path
) -> None:
    original = tmp_path / "audit.db"
    kept = []
    with AuditLog(original, site="site-eu") as log:
        for batch in range(3):
            _fill(log, 4, start=4 * batch)
            kept.append(sign_checkpoint(key, site="site-eu", head=log.head()))
        assert [c.ok for c in check_checkpoints(log, kept)] == [True, True, True]

    forged = tmp_path / "rewritten.db"
    rewrite_log(original, forged, alter_seq=6, change={"i": -1})
    with AuditLog(forged, site="site-eu") as log:
        assert log.verify().ok  # on its own, the rewrite is a perfect chain
        checks = check_checkpoints(log, kept)
    assert [c.ok for c in checks] == [True, False, False]  # seq 4 holds; 8 and 12 do not
    assert checks[1].problem == "rewritten: the entry has another hash"


def test_a_cut_tail_is_missing_checkpoints(key: ReceiptKey, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with AuditLog(db, site="site-eu") as log:
        _fill(log, 5)
        kept = [
            sign_checkpoint(key, site="site-eu", head=(0, GENESIS)),
            sign_checkpoint(key, site="site-eu", head=log.head()),
        ]
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER audit_no_delete")
    con.execute("DELETE FROM audit WHERE seq >= 4")
    con.commit()
    con.close()
    with AuditLog(db, site="site-eu") as log:
        checks = check_checkpoints(log, kept)
    assert [c.ok for c in checks] == [True, False]
    assert checks[1].problem == "missing: the log ends at seq 3"
