"""The audit log: appends chain, and verify names every kind of tampering by seq."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from governance import GENESIS, AuditError, AuditLog
from governance.audit import AuditEntry, AuditRecord

SITE = "site-eu"


def _filled(path: Path, n: int = 6) -> AuditLog:
    log = AuditLog(path, site=SITE)
    for i in range(1, n + 1):
        log.append(
            "request" if i % 2 else "decision",
            actor=f"researcher-{i}",
            request_id=f"req-{(i + 1) // 2}",
            details={"step": i, "analysis": "cohort_count@1"},
        )
    return log


def _tamper(path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    for sql in statements:
        db.execute(sql, params if "?" in sql else ())
    db.commit()
    db.close()


def _row(path: Path, seq: int) -> tuple[object, ...]:
    db = sqlite3.connect(path)
    row = db.execute("SELECT * FROM audit WHERE seq = ?", (seq,)).fetchone()
    db.close()
    return tuple(row)


def test_a_clean_log_verifies(tmp_path: Path) -> None:
    log = _filled(tmp_path / "audit.db")
    report = log.verify(expected_head=log.head())
    assert report.ok and report.problems == ()
    assert report.entries == 6
    assert report.head == log.head()
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4, 5, 6]
    log.close()


def test_entries_chain_and_hash_their_content(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", site=SITE)
    assert log.head() == (0, GENESIS)
    assert log.verify().ok and log.verify().entries == 0
    first = log.append("request", actor="alice", request_id="r1", details={"n": 1})
    second = log.append("release", actor="site-eu", details={"cells": 4})
    assert first.seq == 1 and first.prev_hash == GENESIS and first.site == SITE
    assert second.seq == 2 and second.prev_hash == first.hash and second.request_id is None
    assert first.hash == first.expected_hash() and first.hash.startswith("sha256:")
    assert first.time.endswith("+00:00")
    assert log.head() == (2, second.hash)
    assert log.entries() == [first, second]
    log.close()


def test_filters(tmp_path: Path) -> None:
    log = _filled(tmp_path / "audit.db")
    assert [e.seq for e in log.entries(request_id="req-2")] == [3, 4]
    assert [e.seq for e in log.entries(event="decision")] == [2, 4, 6]
    assert [e.seq for e in log.entries(event="request", request_id="req-3")] == [5]
    assert [e.seq for e in log.entries(limit=2)] == [1, 2]
    log.close()


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    _filled(tmp_path / "audit.db", 3).close()
    log = AuditLog(tmp_path / "audit.db", site=SITE)
    assert log.append("release", actor="site-eu").seq == 4
    assert log.verify().ok
    log.close()


def test_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    _filled(tmp_path / "audit.db", 2).close()
    db = sqlite3.connect(tmp_path / "audit.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit WHERE seq = 2")
    db.close()


def test_details_must_be_json(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", site=SITE)
    with pytest.raises(AuditError):
        log.append("request", actor="alice", details={"x": float("nan")})
    assert log.head() == (0, GENESIS)
    log.close()


def test_concurrent_appends_keep_the_chain_contiguous(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", site=SITE)
    other = AuditLog(tmp_path / "audit.db", site=SITE)  # a second connection to the same file
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        target = log if t % 2 else other
        for i in range(25):
            target.append("request", actor=f"thread-{t}", details={"i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = log.verify()
    assert report.ok, report.problems
    assert report.entries == 200 and report.head[0] == 200
    assert [e.seq for e in log.entries()] == list(range(1, 201))
    log.close()
    other.close()


def test_an_edited_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    _tamper(path, 'UPDATE audit SET details = \'{"analysis":"other","step":3}\' WHERE seq = 3')
    report = AuditLog(path, site=SITE).verify()
    assert not report.ok
    assert report.problems == ("seq 3: edited (content does not match its hash)",)


def test_an_edit_with_a_recomputed_hash_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    seq, time, _actor, event, site, request_id, _details, prev, _hash = _row(path, 4)
    forged = AuditEntry(seq, time, "mallory", event, site, request_id, {"step": 4}, prev, "")  # type: ignore[arg-type]
    _tamper(
        path,
        "UPDATE audit SET actor = 'mallory', details = '{\"step\":4}', hash = ? WHERE seq = 4",
        params=(forged.expected_hash(),),
    )
    report = AuditLog(path, site=SITE).verify()
    assert report.problems == (
        "seq 4: edited (hash recomputed: the next entry does not link to it)",
    )


def test_a_deleted_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    _tamper(path, "DELETE FROM audit WHERE seq = 3")
    assert AuditLog(path, site=SITE).verify().problems == ("seq 3: deleted",)


def test_a_deletion_hidden_by_renumbering_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    _tamper(
        path,
        "DELETE FROM audit WHERE seq = 2",
        *(f"UPDATE audit SET seq = {s - 1} WHERE seq = {s}" for s in range(3, 7)),
    )
    assert AuditLog(path, site=SITE).verify().problems == ("seq 2: deleted",)


def test_an_inserted_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    prev = str(_row(path, 2)[8])
    forged = AuditEntry(
        3, "2026-01-01T00:00:00+00:00", "mallory", "release", SITE, None, {}, prev, ""
    )
    _tamper(
        path,
        *(f"UPDATE audit SET seq = {s + 1} WHERE seq = {s}" for s in range(6, 2, -1)),
        "INSERT INTO audit VALUES (3, '2026-01-01T00:00:00+00:00', 'mallory', 'release', ?, NULL,"
        " '{}', ?, ?)",
        params=(SITE, prev, forged.expected_hash()),
    )
    report = AuditLog(path, site=SITE).verify()
    assert report.problems == ("seq 3: inserted",)
    assert report.entries == 7


def test_an_inserted_entry_with_a_bogus_hash_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    _tamper(
        path,
        *(f"UPDATE audit SET seq = {s + 1} WHERE seq = {s}" for s in range(6, 4, -1)),
        "INSERT INTO audit VALUES (5, 't', 'mallory', 'release', ?, NULL, '{}', 'x', 'y')",
        params=(SITE,),
    )
    assert AuditLog(path, site=SITE).verify().problems == ("seq 5: inserted",)


def test_reordered_entries_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    _tamper(
        path,
        "UPDATE audit SET seq = 100 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = 100",
    )
    report = AuditLog(path, site=SITE).verify()
    assert not report.ok
    # one of the two moved: either is a minimal explanation
    assert report.problems in (
        ("seq 3: reordered (stored at seq 4)",),
        ("seq 4: reordered (stored at seq 3)",),
    )


def test_swapped_contents_are_detected_as_reordered(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    a, b = _row(path, 2), _row(path, 5)
    _tamper(
        path,
        "DELETE FROM audit WHERE seq IN (2, 5)",
        "INSERT INTO audit VALUES (2, ?, ?, ?, ?, ?, ?, ?, ?)",
        params=b[1:],
    )
    _tamper_insert(path, 5, a[1:])
    report = AuditLog(path, site=SITE).verify()
    assert report.problems == (
        "seq 2: reordered (stored at seq 5)",
        "seq 5: reordered (stored at seq 2)",
    )


def _tamper_insert(path: Path, seq: int, values: tuple[object, ...]) -> None:
    db = sqlite3.connect(path)
    db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (seq, *values))
    db.commit()
    db.close()


def test_a_truncated_tail_is_detected_against_the_expected_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = _filled(path)
    recorded = log.head()
    log.close()
    _tamper(path, "DELETE FROM audit WHERE seq > 4")
    log = AuditLog(path, site=SITE)
    assert log.verify().ok  # without a recorded head a clean truncation is invisible
    report = log.verify(expected_head=recorded)
    assert report.problems == (
        "seq 5: truncated (entries 5..6 are missing; expected head at seq 6)",
    )
    log.close()


def test_a_rewritten_head_does_not_match_the_expected_head(tmp_path: Path) -> None:
    log = _filled(tmp_path / "audit.db")
    seq, _ = log.head()
    report = log.verify(expected_head=(seq, "sha256:" + "1" * 64))
    assert report.problems == (f"seq {seq}: edited (does not match the expected head)",)
    log.close()


def test_an_unreadable_entry_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _filled(path).close()
    _tamper(path, "UPDATE audit SET details = 'not json' WHERE seq = 2")
    problems = AuditLog(path, site=SITE).verify().problems
    assert problems[0] == "seq 2: unreadable (details are not JSON)"
    with pytest.raises(AuditError):
        AuditLog(path, site=SITE).entries()


@pytest.mark.parametrize("seed", range(30))
def test_random_tampering_is_named_by_kind(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "audit.db"
    log = _filled(path, 12)
    recorded = log.head()
    log.close()
    kind = ["edited", "deleted", "reordered", "inserted", "truncated"][seed % 5]
    k = rng.randint(2, 10)
    if kind == "edited":
        _tamper(path, "UPDATE audit SET actor = 'mallory' WHERE seq = ?", params=(k,))
    elif kind == "deleted":
        _tamper(path, "DELETE FROM audit WHERE seq = ?", params=(k,))
    elif kind == "reordered":
        j = rng.randint(k + 1, 12)
        _tamper(
            path,
            f"UPDATE audit SET seq = 100 WHERE seq = {k}",
            f"UPDATE audit SET seq = {k} WHERE seq = {j}",
            f"UPDATE audit SET seq = {j} WHERE seq = 100",
        )
    elif kind == "inserted":
        prev = str(_row(path, k - 1)[8])
        forged = AuditEntry(k, "t", "mallory", "release", SITE, None, {}, prev, "")
        _tamper(
            path,
            *(f"UPDATE audit SET seq = {s + 1} WHERE seq = {s}" for s in range(12, k - 1, -1)),
            "INSERT INTO audit VALUES (?, 't', 'mallory', 'release', ?, NULL, '{}', ?, ?)",
            params=(k, SITE, prev, forged.expected_hash()),
        )
    else:
        _tamper(path, "DELETE FROM audit WHERE seq > ?", params=(k,))
    report = AuditLog(path, site=SITE).verify(expected_head=recorded)
    assert not report.ok
    assert all(kind in problem for problem in report.problems), report.problems
    assert 1 <= len(report.problems) <= 2


def test_append_many_chains_in_one_transaction_as_verify_reads_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db", site="orchestrator")
    log.append("request.sent", actor="researcher", request_id="r1")
    awkward = {"b": {10: "x", 9: "y"}, "a": ["é", 1.5, None, True], "z": {"nested": {"k": 2}}}
    entries = log.append_many(
        [AuditRecord("site.outcome", f"site-{i}", "r1", {**awkward, "i": i}) for i in range(3)]
    )
    assert [e.seq for e in entries] == [2, 3, 4]
    assert all(e.hash == e.expected_hash() for e in entries)
    assert entries[0].prev_hash == log.entries()[0].hash
    assert log.append_many([]) == []
    with pytest.raises(AuditError):
        log.append_many(
            [AuditRecord("ok", "a"), AuditRecord("bad", "a", None, {"x": float("nan")})]
        )
    assert log.head() == (4, entries[-1].hash)  # nothing of a failed batch is written
    assert log.verify().ok
