"""Opening a shared SQLite state file while another process is writing or creating it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedflow.core.sqlitedb import open_shared
from governance.audit import AuditLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS item_no_delete BEFORE DELETE ON item
BEGIN SELECT RAISE(ABORT, 'append-only'); END;
"""


@contextmanager
def _writer_holding_the_lock(path: Path, seconds: float | None) -> Iterator[None]:
    """Another connection to a fresh rollback-journal file holds its write lock for ``seconds``
    (None: until the block ends)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE first (a)")
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds or 0.0, lambda: other.execute("COMMIT"))
    if seconds is not None:
        release.start()
    try:
        yield
    finally:
        if seconds is None:
            other.execute("COMMIT")
        else:
            release.join()
        other.close()


def test_opening_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    # sqlite3 answers the change to WAL with "database is locked" at once, whatever its
    # timeout, while another connection holds the write lock: the audit log failed so in CI.
    path = tmp_path / "state" / "shared.db"
    path.parent.mkdir()
    with _writer_holding_the_lock(path, 0.4):
        db = open_shared(path, SCHEMA)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.execute("INSERT INTO item (name) VALUES ('a')")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM item")
    db.close()


def test_a_site_audit_log_opens_beside_a_busy_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with _writer_holding_the_lock(path, 0.3):
        log = AuditLog(path, site="site-a")
    log.append("request.received", actor="alice", details={"analysis": "cohort_count"})
    assert log.verify().ok


def test_a_lock_held_past_the_timeout_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    with (
        _writer_holding_the_lock(path, None),
        pytest.raises(sqlite3.OperationalError, match="locked"),
    ):
        open_shared(path, SCHEMA, timeout=0.3)


def test_an_incomplete_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.ProgrammingError, match="incomplete"):
        open_shared(tmp_path / "x.db", "CREATE TABLE t (a INTEGER")
