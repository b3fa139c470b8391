"""Human review: results the policy holds for a custodian wait at the site until decided.

The policy's ``review`` section says which results need a person's approval before they
leave (:class:`ReviewPolicy`): results of the named analyses, of the named output kinds, or
all of them. When the airlock would release such a result (whole or with suppression), the
site keeps it in quarantine and files a :class:`ReviewItem` in its :class:`ReviewQueue`
(SQLite in the site's state folder) with the airlock's assessment: what would be released
(aggregates only), how many cells were suppressed, and why. A result the airlock refuses is
refused outright: review can hold back what the rules pass, never pass what they refuse.

The custodian lists, inspects and decides items (``fedflow airlock``). A decision is final:
approved items are released exactly as the custodian saw them (the table's digest is kept);
rejected ones are refused with the reviewer's reason. :func:`decide_review` records every decision,
and every attempt that fails (unknown job, decided twice, a rejection without a reason), in
the site's hash-chained audit log.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from fedflow.core import digest_bytes, digest_json, from_ipc
from fedflow.core.analysis import OutputKind
from fedflow.core.controls import Control
from fedflow.core.sqlitedb import open_shared
from governance.audit import AuditLog
from governance.errors import ReviewAlreadyDecided, ReviewError, ReviewInvalid, ReviewNotFound

__all__ = ["ReviewItem", "ReviewPolicy", "ReviewQueue", "ReviewState", "decide_review"]

__controls__ = (
    Control(
        "NIST AC-4",
        "Results the policy holds wait at the site until a custodian approves or rejects them; "
        "the decision is final and audited.",
        tests=(
            "tests/governance/test_review_queue.py::test_approval_is_final_and_audited",
            "tests/flows/test_review_flow.py::test_an_approved_result_completes_the_waiting_flow",
        ),
    ),
    Control(
        "GDPR Art. 5(2)",
        "Human review of outputs, with the reviewer and reason recorded.",
        tests=(
            "tests/governance/test_review_queue.py::test_rejection_needs_a_reason_and_a_reviewer",
        ),
    ),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review (
    job_id        TEXT PRIMARY KEY,
    site          TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    analysis      TEXT NOT NULL,
    output_kind   TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    project       TEXT NOT NULL,
    researcher    TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    suppressed    INTEGER NOT NULL,
    reasons       TEXT NOT NULL,
    result        BLOB NOT NULL,
    result_digest TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    state         TEXT NOT NULL,
    reviewer      TEXT,
    reason        TEXT,
    decided_at    TEXT
);
"""
_COLUMNS = (
    "job_id, site, request_id, analysis, output_kind, dataset, project, researcher, purpose, "
    "outcome, suppressed, reasons, result, result_digest, created_at, state, reviewer, reason, "
    "decided_at"
)


class ReviewPolicy(BaseModel):
    """The policy's ``review`` section: which results wait for a custodian (default: none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    analyses: list[str] = []
    """Analysis names whose results are held for review."""
    output_kinds: list[OutputKind] = []
    """Output kinds (``frequency``, ``summary``, ``regression``, ...) held for review."""
    always: bool = False
    """Hold every result for review."""

    def applies(self, analysis: str, kind: OutputKind | str) -> bool:
        """Whether a result of ``analysis`` (of output ``kind``) needs a custodian's approval."""
        return self.always or analysis in self.analyses or OutputKind(kind) in self.output_kinds


class ReviewState(StrEnum):
    """Where a held result is: waiting, or decided."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ReviewItem:
    """A result held for review, with the airlock's assessment and, once made, the decision."""

    job_id: str
    site: str
    request_id: str
    analysis: str
    output_kind: str
    dataset: str
    project: str
    researcher: str
    purpose: str
    outcome: str
    """What the airlock would do: ``released`` or ``released_with_suppression``."""
    suppressed_cells: int
    reasons: tuple[str, ...]
    result: bytes
    """The table that would be released (Arrow IPC): aggregates, after suppression."""
    result_digest: str
    created_at: str
    state: ReviewState = ReviewState.PENDING
    reviewer: str | None = None
    reason: str | None = None
    decided_at: str | None = None

    def table(self) -> pa.Table:
        """The table that would be (or was) released."""
        return from_ipc(self.result)

    def decision(self) -> dict[str, Any]:
        """The decision as recorded (and signed into the release's receipt)."""
        return {
            "job_id": self.job_id,
            "state": self.state.value,
            "reviewer": self.reviewer,
            "reason": self.reason,
            "decided_at": self.decided_at,
            "result_digest": self.result_digest,
        }

    def decision_digest(self) -> str:
        return digest_json(self.decision())


class ReviewQueue:
    """The site's held results (``review.db`` in its state folder).

    Every read goes to the database, so a decision made by the custodian's command in another
    process is seen by the running site at its next release attempt.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = open_shared(path, _SCHEMA)
        except sqlite3.Error as exc:
            raise ReviewError(f"cannot open the review queue {path.name}: {exc}") from None

    def hold(self, item: ReviewItem) -> tuple[ReviewItem, bool]:
        """File ``item`` unless its job is already held; return the stored item and whether new."""
        if item.result_digest != digest_bytes(item.result):
            raise ReviewInvalid("the held result does not match its digest")
        row = (
            *(item.job_id, item.site, item.request_id, item.analysis, item.output_kind),
            *(item.dataset, item.project, item.researcher, item.purpose, item.outcome),
            item.suppressed_cells,
            "\n".join(item.reasons),
            item.result,
            item.result_digest,
            item.created_at,
            item.state.value,
            item.reviewer,
            item.reason,
            item.decided_at,
        )
        marks = ", ".join("?" * len(row))
        created = self._execute(f"INSERT OR IGNORE INTO review ({_COLUMNS}) VALUES ({marks})", row)
        stored = self.get(item.job_id)
        assert stored is not None
        return stored, created == 1

    def get(self, job_id: str) -> ReviewItem | None:
        """The item held for ``job_id``, or None when the job was never held."""
        rows = self._query(f"SELECT {_COLUMNS} FROM review WHERE job_id = ?", (job_id,))
        return _item(rows[0]) if rows else None

    def items(self, state: ReviewState | None = None) -> list[ReviewItem]:
        """Held items, oldest first (only those in ``state`` when given)."""
        if state is None:
            rows = self._query(f"SELECT {_COLUMNS} FROM review ORDER BY created_at", ())
        else:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM review WHERE state = ? ORDER BY created_at",
                (state.value,),
            )
        return [_item(r) for r in rows]

    def record(self, item: ReviewItem) -> ReviewItem:
        """Store ``item``'s decision, once: a decided item cannot be decided again."""
        changed = self._execute(
            "UPDATE review SET state = ?, reviewer = ?, reason = ?, decided_at = ? "
            "WHERE job_id = ? AND state = ?",
            (
                item.state.value,
                item.reviewer,
                item.reason,
                item.decided_at,
                item.job_id,
                ReviewState.PENDING.value,
            ),
        )
        if changed != 1:
            raise ReviewAlreadyDecided(f"job {item.job_id} was already decided")
        return item

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise ReviewError(f"the review queue cannot be read: {exc}") from None

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            try:
                return self._db.execute(sql, args).rowcount
            except sqlite3.Error as exc:
                raise ReviewError(f"the review queue cannot be written: {exc}") from None


def decide_review(
    queue: ReviewQueue,
    audit: AuditLog,
    job_id: str,
    *,
    approve: bool,
    reviewer: str,
    reason: str | None = None,
) -> ReviewItem:
    """Approve or reject the held result of ``job_id``; audit the decision or the refusal.

    A rejection needs a reason (the researcher is told it); a reviewer must be named. Raises
    :class:`ReviewNotFound`, :class:`ReviewAlreadyDecided` or :class:`ReviewInvalid`, after
    auditing the attempt as ``review.refused``.
    """
    action = "approve" if approve else "reject"
    reason = (reason or "").strip() or None
    reviewer = reviewer.strip()
    item = queue.get(job_id)
    try:
        if not reviewer:
            raise ReviewInvalid("a decision must name its reviewer")
        if not approve and reason is None:
            raise ReviewInvalid("a rejection needs a reason (the researcher is told it)")
        if item is None:
            raise ReviewNotFound(f"no result of job {job_id!r} is held for review")
        if item.state is not ReviewState.PENDING:
            raise ReviewAlreadyDecided(
                f"job {job_id} was already {item.state.value} by {item.reviewer}"
            )
        decided = replace(
            item,
            state=ReviewState.APPROVED if approve else ReviewState.REJECTED,
            reviewer=reviewer,
            reason=reason,
            decided_at=datetime.now(UTC).isoformat(),
        )
        queue.record(decided)
    except ReviewError as exc:
        audit.append(
            "review.refused",
            actor=reviewer or "custodian",
            request_id=None if item is None else item.request_id,
            details={"job_id": job_id, "action": action, "error": type(exc).__name__},
        )
        raise
    audit.append(
        f"review.{decided.state.value}",
        actor=reviewer,
        request_id=decided.request_id,
        details={**decided.decision(), "decision_digest": decided.decision_digest()},
    )
    return decided


def _item(row: tuple[Any, ...]) -> ReviewItem:
    (job_id, site, request_id, analysis, kind, dataset, project, researcher, purpose) = row[:9]
    outcome, suppressed, reasons, result, digest, created, state, reviewer, reason, at = row[9:]
    return ReviewItem(
        job_id=job_id,
        site=site,
        request_id=request_id,
        analysis=analysis,
        output_kind=kind,
        dataset=dataset,
        project=project,
        researcher=researcher,
        purpose=purpose,
        outcome=outcome,
        suppressed_cells=int(suppressed),
        reasons=tuple(r for r in reasons.split("\n") if r),
        result=bytes(result),
        result_digest=digest,
        created_at=created,
        state=ReviewState(state),
        reviewer=reviewer,
        reason=reason,
        decided_at=at,
    )
