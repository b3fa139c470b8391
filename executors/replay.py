"""Replay protection: a request's nonce may be used once per step, and only while it is fresh.

A request carries a random ``nonce`` and its ``created_at`` time. The site refuses a request
older than ``max_age`` (or dated more than ``max_skew`` in the future), and one whose nonce it
has already seen for the same step (``check`` and ``submit`` are separate steps, so the same
request may be checked and then submitted once each). Seen nonces are kept in SQLite in the
site's state folder, so a restart does not reopen the window; nonces older than ``max_age``
are pruned (at most once a minute, in the same transaction as a new nonce), as a request that
old is refused anyway. Recording a nonce is one SQLite transaction: the pre-gate runs on every
request at every site, twice per federated step.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fedflow.core.controls import Control
from fedflow.core.messages import Request
from fedflow.core.sqlitedb import open_shared

__all__ = ["DEFAULT_MAX_AGE", "ReplayGuard"]

__controls__ = (
    Control(
        "NIST SI-10",
        "A request's nonce is used once and its timestamp must be fresh; replays are refused.",
        tests=(
            "tests/executors/test_replay.py::test_a_nonce_is_used_once_per_step_and_remembered_across_a_restart",
            "tests/executors/test_service.py::test_replayed_and_stale_requests_are_refused_and_audited",
        ),
    ),
)

DEFAULT_MAX_AGE = timedelta(minutes=15)
DEFAULT_MAX_SKEW = timedelta(minutes=2)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    step TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL, PRIMARY KEY (step, nonce)
);
"""
PRUNE_EVERY = timedelta(minutes=1)
"""How often the nonces older than ``max_age`` are deleted."""


class ReplayGuard:
    """Remembers (step, nonce) pairs for ``max_age``; says why a request is stale or replayed."""

    def __init__(
        self,
        path: Path,
        *,
        max_age: timedelta = DEFAULT_MAX_AGE,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
    ) -> None:
        self.max_age = max_age
        self.max_skew = max_skew
        self._lock = threading.Lock()
        self._next_prune: datetime | None = None
        # synchronous=NORMAL, as the audit log: a power loss may forget the last nonces only
        self._db = open_shared(path, _SCHEMA, synchronous_normal=True)

    def refusal(self, request: Request, step: str, *, now: datetime | None = None) -> str | None:
        """Why ``request`` must be refused at ``step`` (and record its nonce), or None."""
        moment = now or datetime.now(UTC)
        created = request.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if created < moment - self.max_age:
            return f"the request is older than {int(self.max_age.total_seconds())} s"
        if created > moment + self.max_skew:
            return "the request is dated in the future"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._next_prune is None or moment >= self._next_prune:
                    self._db.execute(
                        "DELETE FROM nonces WHERE seen < ?",
                        ((moment - self.max_age - self.max_skew).timestamp(),),
                    )
                    self._next_prune = moment + PRUNE_EVERY
                self._db.execute(
                    "INSERT INTO nonces (step, nonce, seen) VALUES (?, ?, ?)",
                    (step, request.nonce, created.timestamp()),
                )
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                self._next_prune = None  # the DELETE, if any, was rolled back with it
                return f"replayed request: its nonce was already used for {step}"
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
