"""The audit log: an append-only, hash-chained record of every request, decision and release.

Each site and the orchestrator keep one in SQLite. Entry ``seq`` (1, 2, 3, ...) stores
``hash = sha256(canonical JSON of every other field)``, and that includes ``prev_hash``, the
hash of entry ``seq - 1`` (:data:`GENESIS` for the first), so changing, removing, adding or
moving any entry breaks the chain where it happened. :meth:`AuditLog.verify` walks the chain
and names each problem by seq and kind: ``edited``, ``deleted``, ``inserted``, ``reordered``,
``truncated`` (the last entries removed: only detectable against a head recorded elsewhere,
``expected_head``) and ``unreadable``.

SQLite triggers refuse UPDATE and DELETE: they stop accidents, not an attacker with the file;
:meth:`AuditLog.verify` is the security boundary.

:meth:`AuditLog.append` returns once its entry is committed; :meth:`AuditLog.append_many`
chains several entries in one transaction (all or none are committed, in order), which is what
an orchestrator recording one outcome per site of a step wants: one commit instead of one per
site. Either way every entry is sealed and chained exactly as :meth:`AuditLog.verify` reads it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fedflow.core.controls import Control
from fedflow.core.digest import canonical_json, digest_bytes
from fedflow.core.sqlitedb import open_shared
from governance.errors import AuditError

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "AuditRecord", "AuditReport"]

__controls__ = (
    Control(
        "HIPAA 164.312(b)",
        "Every request, decision, release and refusal at a site, and every flow step at the "
        "orchestrator, is appended to a hash-chained SQLite audit log.",
        tests=(
            "tests/executors/test_node.py::test_refused_analysis_is_refused_with_its_reason_and_audited",
            "tests/governance/test_audit.py::test_entries_chain_and_hash_their_content",
        ),
    ),
    Control(
        "NIST AU-2",
        "Logged events: request checked, job run, released, refused, reviewed, bad input.",
        tests=(
            "tests/executors/test_node.py::test_bad_tokens_are_refused_and_audited",
            "tests/executors/test_service.py::test_oversized_and_malformed_requests_get_clear_4xx_and_are_audited",
        ),
    ),
    Control(
        "NIST AU-9",
        "Triggers refuse UPDATE and DELETE; the hash chain detects any edit, deletion, insertion "
        "or reordering (`fedflow audit verify`).",
        tests=(
            "tests/governance/test_audit.py::test_triggers_refuse_update_and_delete",
            "tests/governance/test_audit.py::test_random_tampering_is_named_by_kind",
        ),
    ),
    Control(
        "ISO 27001 A.8.15",
        "Append-only, hash-chained logs at every site and at the orchestrator.",
        tests=("tests/cli/test_audit_cli.py::test_verify_lists_the_problems_of_a_tampered_log",),
    ),
    Control(
        "GDPR Art. 30",
        "The audit log records who asked for which analysis, for which project and purpose, "
        "on which dataset, and what was released.",
        tests=("tests/cli/test_audit_cli.py::test_show_as_a_table_and_as_json",),
    ),
)

GENESIS: Final = "sha256:" + "0" * 64
"""The ``prev_hash`` of the first entry."""

_SEARCH_WINDOW = 16
"""How far from its stored position verify looks for an entry's original seq."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL,
    site TEXT NOT NULL,
    request_id TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_request ON audit (request_id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_COLUMNS = "seq, time, actor, event, site, request_id, details, prev_hash, hash"


@dataclass(frozen=True)
class AuditEntry:
    """One audit record. ``hash`` covers every other field, ``prev_hash`` included."""

    seq: int
    time: str
    actor: str
    event: str
    site: str
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def expected_hash(self, seq: int | None = None) -> str:
        """The hash this entry's content should have (at ``seq``, by default its own)."""
        body = asdict(self)
        del body["hash"]
        if seq is not None:
            body["seq"] = seq
        return digest_bytes(canonical_json(body))


@dataclass(frozen=True)
class AuditRecord:
    """An event to append (:meth:`AuditLog.append_many`): what :meth:`AuditLog.append` takes."""

    event: str
    actor: str
    request_id: str | None = None
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class AuditReport:
    """The outcome of :meth:`AuditLog.verify`: ``ok`` when ``problems`` is empty."""

    ok: bool
    entries: int
    head: tuple[int, str]
    problems: tuple[str, ...] = field(default=())


class AuditLog:
    """A site's (or the orchestrator's) audit log in the SQLite file ``path``."""

    def __init__(self, path: Path, *, site: str) -> None:
        self.path = Path(path)
        self.site = site
        self._lock = threading.Lock()
        try:
            self._db = open_shared(self.path, _SCHEMA, synchronous_normal=True)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit log {self.path}: {exc}", site=site) from None

    def append(
        self,
        event: str,
        *,
        actor: str,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Record ``event`` by ``actor`` and return the chained entry."""
        return self.append_many([AuditRecord(event, actor, request_id, details)])[0]

    def append_many(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Record ``records`` in order, in one transaction; return the chained entries."""
        prepared = [(r, *_details(r.details)) for r in records]
        if not prepared:
            return []
        entries: list[AuditEntry] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq, prev = self._head_unlocked()
                    rows = []
                    for record, body, stored, canonical in prepared:
                        seq += 1
                        entry = _seal(
                            seq=seq,
                            time=datetime.now(UTC).isoformat(timespec="microseconds"),
                            actor=record.actor,
                            event=record.event,
                            site=self.site,
                            request_id=record.request_id,
                            details=body,
                            prev_hash=prev,
                            canonical_details=canonical,
                        )
                        rows.append((*_row(entry), stored, entry.prev_hash, entry.hash))
                        entries.append(entry)
                        prev = entry.hash
                    self._db.executemany(
                        f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"cannot append to audit log: {exc}", site=self.site) from None
        return entries

    def entries(
        self,
        *,
        request_id: str | None = None,
        event: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries in seq order, optionally only those of one request and/or event."""
        where, args = [], []
        if request_id is not None:
            where.append("request_id = ?")
            args.append(request_id)
        if event is not None:
            where.append("event = ?")
            args.append(event)
        sql = f"SELECT {_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._query(sql, args)
        out = []
        for row in rows:
            entry = _parse(row)
            if isinstance(entry, str):
                raise AuditError(f"audit entry {row[0]} is unreadable: {entry}", site=self.site)
            out.append(entry)
        return out

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry; ``(0, GENESIS)`` when the log is empty."""
        with self._lock:
            return self._head_unlocked()

    def hashes(self) -> dict[int, str]:
        """Each stored entry's ``hash`` by ``seq``, as stored (rows of the wrong type skipped)."""
        rows = self._query("SELECT seq, hash FROM audit ORDER BY seq", [])
        return {s: h for s, h in rows if isinstance(s, int) and isinstance(h, str)}

    def verify(self, *, expected_head: tuple[int, str] | None = None) -> AuditReport:
        """Walk the chain and report every problem; see the module docstring."""
        rows = self._query(f"SELECT {_COLUMNS} FROM audit ORDER BY seq", [])
        problems = _check(rows, expected_head)
        head = (int(rows[-1][0]), str(rows[-1][8])) if rows else (0, GENESIS)
        return AuditReport(ok=not problems, entries=len(rows), head=head, problems=problems)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _head_unlocked(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def _query(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read audit log: {exc}", site=self.site) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _details(details: Mapping[str, Any] | None) -> tuple[dict[str, Any], str, str]:
    """The details as verify will read them, the JSON text stored, and their canonical JSON."""
    try:
        stored = canonical_json(dict(details or {})).decode()
        body = json.loads(stored, parse_constant=_no_constant)  # as verify reads it
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit details are not JSON-serialisable: {exc}") from None
    return body, stored, canonical_json(body).decode()


def _seal(*, canonical_details: str, **fields: Any) -> AuditEntry:
    """The entry with its hash: :meth:`AuditEntry.expected_hash`, without copying the details.

    The canonical JSON of the body is that of its sorted keys, so the details' canonical text
    (of the parsed details, as verify hashes them) is spliced into it as is.
    """
    text = ",".join(
        f"{json.dumps(key)}:{canonical_details if key == 'details' else _scalar(fields[key])}"
        for key in sorted(fields)
    )
    return AuditEntry(hash=digest_bytes(("{" + text + "}").encode()), **fields)


def _scalar(value: Any) -> str:
    return canonical_json(value).decode()


def _row(entry: AuditEntry) -> tuple[Any, ...]:
    return (entry.seq, entry.time, entry.actor, entry.event, entry.site, entry.request_id)


def _parse(row: tuple[Any, ...]) -> AuditEntry | str:
    """An entry from a database row, or what makes the row unreadable."""
    seq, time, actor, event, site, request_id, details, prev_hash, hash_ = row
    if not isinstance(seq, int):
        return "seq is not an integer"
    texts = {"time": time, "actor": actor, "event": event, "site": site, "hash": hash_}
    bad = [k for k, v in {**texts, "prev_hash": prev_hash}.items() if not isinstance(v, str)]
    if bad or not (request_id is None or isinstance(request_id, str)):
        return f"fields of the wrong type: {', '.join(bad) or 'request_id'}"
    try:
        parsed = json.loads(details)
    except (TypeError, ValueError):
        return "details are not JSON"
    if not isinstance(parsed, dict):
        return "details are not a JSON object"
    return AuditEntry(seq, time, actor, event, site, request_id, parsed, prev_hash, hash_)


def _check(rows: list[tuple[Any, ...]], expected_head: tuple[int, str] | None) -> tuple[str, ...]:
    """Problems of a stored chain, by seq and kind; see the module docstring."""
    problems: list[tuple[int, str]] = []
    entries: list[AuditEntry] = []
    for row in rows:
        parsed = _parse(row)
        if isinstance(parsed, str):
            problems.append((row[0] if isinstance(row[0], int) else 0, f"unreadable ({parsed})"))
        else:
            entries.append(parsed)
    # The seq each entry's content was sealed at (None: content changed since).
    origin: dict[int, int | None] = {}
    by_hash = {e.hash: e for e in entries}
    for e in entries:
        origin[e.seq] = _origin(e, by_hash, origin)
    sealed_at: dict[int, list[AuditEntry]] = {}
    for e in entries:
        o = origin[e.seq]
        if o is not None:
            sealed_at.setdefault(o, []).append(e)
    successors = {e.prev_hash for e in entries}
    genuine: dict[int, AuditEntry] = {}
    for o, group in sealed_at.items():
        linked = [e for e in group if e.hash in successors] or group[:1]
        genuine[o] = linked[0]
        problems += [(e.seq, "inserted") for e in group if e is not linked[0]]
    for i, e in enumerate(entries):
        if origin[e.seq] is not None:
            continue
        before = entries[i - 1].hash if i else GENESIS
        after = entries[i + 1].prev_hash if i + 1 < len(entries) else None
        skipped = after is not None and after == before and e.hash != after
        problems.append(
            (e.seq, "inserted" if skipped else "edited (content does not match its hash)")
        )
    last = max(genuine, default=0)
    for o in range(1, last + 1):
        sealed = genuine.get(o)
        if sealed is None:
            if not any(x.seq == o and origin[x.seq] is None for x in entries):
                problems.append((o, "deleted"))
            continue
        nxt = genuine.get(o + 1)
        if nxt is not None and nxt.prev_hash != sealed.hash:
            problems.append((o, "edited (hash recomputed: the next entry does not link to it)"))
    placed = [(e, o) for e in entries if (o := origin[e.seq]) is not None and genuine[o] is e]
    in_order = _longest_increasing([o for _, o in placed])
    for i, (e, o) in enumerate(placed):
        if i not in in_order:
            problems.append((o, f"reordered (stored at seq {e.seq})"))
    if expected_head is not None:
        problems += _check_head(expected_head, genuine, last)
    problems.sort(key=lambda p: p[0])
    return tuple(f"seq {seq}: {kind}" for seq, kind in dict.fromkeys(problems))


def _longest_increasing(values: list[int]) -> set[int]:
    """Indices of a longest strictly increasing subsequence (patience sorting)."""
    tails: list[int] = []  # index of the smallest tail of each length
    parent: list[int | None] = [None] * len(values)
    for i, v in enumerate(values):
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if values[tails[mid]] < v:
                lo = mid + 1
            else:
                hi = mid
        parent[i] = tails[lo - 1] if lo else None
        if lo == len(tails):
            tails.append(i)
        else:
            tails[lo] = i
    kept: set[int] = set()
    at = tails[-1] if tails else None
    while at is not None:
        kept.add(at)
        at = parent[at]
    return kept


def _origin(
    entry: AuditEntry, by_hash: Mapping[str, AuditEntry], known: Mapping[int, int | None]
) -> int | None:
    """The seq ``entry``'s content was sealed at, or None if its content changed."""
    candidates = [entry.seq]
    if entry.prev_hash == GENESIS:
        candidates.append(1)
    elif entry.prev_hash in by_hash:
        before = by_hash[entry.prev_hash]
        candidates.append((known.get(before.seq) or before.seq) + 1)
    for d in range(1, _SEARCH_WINDOW + 1):
        candidates += [entry.seq - d, entry.seq + d]
    for seq in dict.fromkeys(c for c in candidates if c >= 1):
        if entry.expected_hash(seq) == entry.hash:
            return seq
    return None


def _check_head(
    expected: tuple[int, str], genuine: Mapping[int, AuditEntry], last: int
) -> list[tuple[int, str]]:
    seq, digest = expected
    if seq == 0:
        return [] if digest == GENESIS else [(0, "edited (expected head is not the genesis)")]
    if seq > last:
        missing = f"{last + 1}" if seq == last + 1 else f"{last + 1}..{seq}"
        return [
            (last + 1, f"truncated (entries {missing} are missing; expected head at seq {seq})")
        ]
    entry = genuine.get(seq)
    if entry is not None and entry.hash != digest:
        return [(seq, "edited (does not match the expected head)")]
    return []
