"""Opening the SQLite state files that several processes share (audit log, review queue, ...).

A site's audit log is opened at once by its service, the custodian's ``fedflow site airlock``
command and, in a test or the demo, the orchestrator's in-process transport. Two openers of a
fresh file race on switching it to WAL and creating its tables, and SQLite answers some of those
races with ``database is locked`` at once, without waiting on its busy handler: the change of
journal mode, and a deferred transaction that read the schema and then wants to write it.
:func:`open_shared` switches the mode and creates the schema inside ``BEGIN IMMEDIATE`` (which
does wait), and retries either step on a busy answer until ``timeout`` has passed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["open_shared"]

_RETRY_PAUSE: Final = 0.05


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def open_shared(
    path: Path, schema: str, *, timeout: float = 30.0, synchronous_normal: bool = False
) -> sqlite3.Connection:
    """Open ``path`` in WAL mode, create ``schema`` (idempotent DDL) and return the connection.

    The connection is in autocommit mode and may be used from several threads under the
    caller's lock. ``synchronous_normal`` trades the durability of the last commits at a power
    loss (never the consistency of the file) for fewer fsyncs, as the audit log does.
    Raises :class:`sqlite3.Error` when the file cannot be opened or stays locked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        _retrying(lambda: db.execute("PRAGMA journal_mode=WAL"), deadline)
        if synchronous_normal:
            db.execute("PRAGMA synchronous=NORMAL")
        _retrying(lambda: _create(db, schema), deadline)
    except BaseException:
        db.close()
        raise
    return db


def _create(db: sqlite3.Connection, schema: str) -> None:
    if not sqlite3.complete_statement(schema):
        raise sqlite3.ProgrammingError("the schema ends in an incomplete statement")
    try:
        db.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _retrying(action: Callable[[], object], deadline: float) -> None:
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(_RETRY_PAUSE)
