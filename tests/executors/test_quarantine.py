"""Quarantine: open jobs in memory, finished ones on disk and read back as they were."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from executors import JobNotFound
from executors.quarantine import Quarantine
from fedflow.core.messages import JobState
from tests.quarantined import age, job, run


def test_finished_jobs_leave_memory_and_are_read_back_as_they_were(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, keep_finished=2)
    finished = [run(quarantine, n, finish=True) for n in range(5)]
    still_open = run(quarantine, 9, finish=False)
    assert quarantine.in_memory() == (1, 2)  # the open job and the two latest finished
    assert quarantine.get(finished[0].job_id) == finished[0]  # from disk
    assert quarantine.get(still_open.job_id) == still_open
    assert quarantine.in_memory() == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished", "job009.arrow", "job009.json"]
    assert len(list((tmp_path / "finished").glob("*.json"))) == 5


def test_a_restart_reads_back_only_the_open_jobs(tmp_path: Path) -> None:
    before = Quarantine(tmp_path)
    finished = [run(before, n, finish=True) for n in range(3)]
    quarantined = run(before, 7, finish=False)
    before.put(job(8))  # still running when the process died
    after = Quarantine(tmp_path)
    restored, interrupted = after.restore()
    assert restored == 2
    assert [(j.job_id, j.state, j.error) for j in interrupted] == [
        ("job008", JobState.FAILED, "interrupted")
    ]
    assert after.in_memory() == (1, 1)  # job007 open, job008 failed
    assert after.get("job007") == quarantined
    assert [after.get(j.job_id) for j in finished] == finished


def test_a_move_to_finished_that_a_crash_cut_short_is_completed(tmp_path: Path) -> None:
    before = Quarantine(tmp_path)
    done = run(before, 1, finish=True)
    # the crash: the finished metadata was written, the open files not yet removed
    shutil.copy(tmp_path / "finished" / "job001.json", tmp_path / "job001.json")
    shutil.copy(tmp_path / "finished" / "job001.arrow", tmp_path / "job001.arrow")
    (tmp_path / "finished" / "job001.arrow").unlink()
    after = Quarantine(tmp_path)
    assert after.restore() == (0, [])
    assert not (tmp_path / "job001.json").exists() and not (tmp_path / "job001.arrow").exists()
    assert after.get("job001") == done


def test_a_finished_job_left_in_the_open_folder_moves_on_restore(tmp_path: Path) -> None:
    """A state folder written before finished jobs had a folder of their own."""
    before = Quarantine(tmp_path)
    done = run(before, 1, finish=True)
    shutil.move(tmp_path / "finished" / "job001.json", tmp_path / "job001.json")
    shutil.move(tmp_path / "finished" / "job001.arrow", tmp_path / "job001.arrow")
    after = Quarantine(tmp_path)
    assert after.restore() == (1, [])
    assert (tmp_path / "finished" / "job001.json").exists()
    assert not (tmp_path / "job001.json").exists()
    assert after.in_memory() == (0, 1)
    assert after.get("job001") == done


@pytest.mark.parametrize("job_id", ["nope", "../job001", ".job001", "job001/x", ""])
def test_unknown_and_unsafe_job_ids_are_not_found(tmp_path: Path, job_id: str) -> None:
    quarantine = Quarantine(tmp_path)
    run(quarantine, 1, finish=True)
    (tmp_path / ".job001.json").write_text(json.dumps({"job_id": ".job001"}))
    with pytest.raises(JobNotFound):
        quarantine.get(job_id)


def test_an_unreadable_finished_job_is_not_found_and_others_still_are(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path, keep_finished=0)
    run(quarantine, 1, finish=True)
    kept = run(quarantine, 2, finish=True)
    (tmp_path / "finished" / "job001.json").write_text("{not json")
    with pytest.raises(JobNotFound):
        quarantine.get("job001")
    assert quarantine.get("job002") == kept


def test_prune_deletes_only_jobs_that_finished_before_the_cutoff(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path)
    old, recent = run(quarantine, 1, finish=True), run(quarantine, 2, finish=True)
    still_open = run(quarantine, 3, finish=False)
    age(tmp_path / "finished", old.job_id, 10)
    age(tmp_path, still_open.job_id, 10)  # open: never pruned, however old
    assert quarantine.prune(datetime.now(UTC) - timedelta(days=7)) == 1
    with pytest.raises(JobNotFound):
        quarantine.get(old.job_id)
    assert quarantine.get(recent.job_id) == recent
    assert quarantine.get(still_open.job_id) == still_open
    assert sorted(p.name for p in (tmp_path / "finished").iterdir()) == [
        "job002.arrow",
        "job002.json",
    ]
    assert quarantine.prune(datetime.now(UTC) - timedelta(days=7)) == 0
