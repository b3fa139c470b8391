"""Quarantine: where a job's partial waits, at the site, until the airlock decides.

Each job is kept on disk (metadata as JSON, the partial as Arrow IPC), so what is quarantined
survives the process. A job that counted a cohort also keeps the cohort's person ids
(``<job>.cohort.npy``, for the differencing defence) until its release is decided; they are
never part of what is released.

Open jobs (running, or quarantined until the airlock or a reviewer decides) are in memory and in
the quarantine folder. A finished job (released, refused or failed) moves to its ``finished``
subfolder; the latest :data:`KEEP_FINISHED` stay in memory and older ones are read back when
asked for (a released job returns the same release). So a site's memory and its restart time
follow its open jobs, not every job it ever ran: :meth:`Quarantine.restore` reads back only
the open ones. Finished jobs stay on disk until the custodian prunes them
(:meth:`Quarantine.prune`, ``fedflow site prune-jobs``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa

from executors.errors import JobNotFound
from fedflow.core import canonical_json, from_ipc, to_ipc
from fedflow.core.analysis import AnalysisRef, OutputKind
from fedflow.core.controls import Control
from fedflow.core.messages import Decision, JobState, Release, Request
from governance.differencing import Cohort

__all__ = ["FINISHED", "FOLDER", "KEEP_FINISHED", "Job", "Quarantine"]

__controls__ = (
    Control(
        "GDPR Art. 5(1)(e)",
        "A site keeps finished jobs' partials and releases until its custodian deletes those "
        "older than a chosen age (`fedflow site prune-jobs`, audited); open jobs are never "
        "deleted.",
        tests=(
            "tests/executors/test_quarantine.py::test_prune_deletes_only_jobs_that_finished_before_the_cutoff",
            "tests/cli/test_site_cli.py::test_prune_jobs_deletes_old_finished_jobs_and_is_audited",
        ),
    ),
)

log = logging.getLogger(__name__)

FOLDER: Final = "quarantine"
"""The quarantine's folder in a site's state folder."""
FINISHED: Final = frozenset({JobState.RELEASED, JobState.REFUSED, JobState.FAILED})
"""The states a job does not leave."""
KEEP_FINISHED: Final = 256
"""Finished jobs kept in memory (the most recently used); the others are read from disk."""
_JOB_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Job:
    """A job and everything its release must be traced to."""

    job_id: str
    request: Request
    decision: Decision
    analysis: AnalysisRef
    output: OutputKind
    dataset_digest: str
    state: JobState = JobState.RUNNING
    error: str | None = None
    partial: pa.Table | None = field(default=None, repr=False)
    release: Release | None = None
    cohort: Cohort | None = field(default=None, repr=False)


class Quarantine:
    """Jobs by id, persisted under ``directory`` (finished ones under ``directory/finished``)."""

    def __init__(self, directory: Path, *, keep_finished: int = KEEP_FINISHED) -> None:
        self._dir = directory
        self._finished_dir = directory / "finished"
        self._finished_dir.mkdir(parents=True, exist_ok=True)
        self._keep = keep_finished
        self._open: dict[str, Job] = {}
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, job: Job) -> Job:
        with self._lock:
            self._store(job)
        return job

    def update(self, job_id: str, **changes: object) -> Job:
        with self._lock:
            job = replace(self._get(job_id), **changes)  # type: ignore[arg-type]
            self._store(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._get(job_id)

    def in_memory(self) -> tuple[int, int]:
        """How many open and finished jobs are held in memory."""
        with self._lock:
            return len(self._open), len(self._finished)

    def restore(self) -> tuple[int, list[Job]]:
        """Read back the open jobs a previous run left, once, before any other call.

        A job it left running, or quarantined without its partial (the process died while
        writing it), failed: it is stored as failed with the error ``interrupted`` and returned
        with the others so marked. A move to ``finished`` that a crash cut short is completed,
        and a finished job found among the open ones (a folder written before finished jobs
        had their own) is moved. Returns how many jobs were read back from the open folder, and
        the interrupted ones.
        """
        restored, interrupted = 0, []
        for meta_path in sorted(self._dir.glob("*.json")):
            job_id = meta_path.stem
            if (self._finished_dir / meta_path.name).exists():
                self._move_files(job_id)  # it had finished: finish the move
                continue
            try:
                job = _read(meta_path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot restore job file %s: %s", meta_path.name, type(exc).__name__)
                continue
            if job.state is JobState.RUNNING or (
                job.state is JobState.QUARANTINED and job.partial is None
            ):
                job = replace(job, state=JobState.FAILED, error="interrupted")
                interrupted.append(job)
            self.put(job)
            restored += 1
        return restored, interrupted

    def prune(self, before: datetime) -> int:
        """Delete the files of the jobs that finished before ``before``; return how many.

        A job's finishing time is when its metadata was last written. Open jobs are never
        touched. A pruned job is no longer found (a release call for it gets "no such job");
        the audit log keeps its digests and receipt.
        """
        cutoff = before.timestamp()
        removed = 0
        for meta_path in sorted(self._finished_dir.glob("*.json")):
            try:
                finished_at = meta_path.stat().st_mtime
            except FileNotFoundError:  # pruned at the same time by another process
                continue
            if finished_at >= cutoff:
                continue
            for suffix in (".arrow", ".cohort.npy"):
                meta_path.with_suffix(suffix).unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)  # last: a half-pruned job is pruned again
            with self._lock:
                self._finished.pop(meta_path.stem, None)
            removed += 1
        return removed

    def _get(self, job_id: str) -> Job:
        job = self._open.get(job_id)
        if job is not None:
            return job
        job = self._finished.get(job_id)
        if job is None:
            job = self._load_finished(job_id)
        self._remember(job)
        return job

    def _load_finished(self, job_id: str) -> Job:
        meta_path = self._finished_dir / f"{job_id}.json"
        if not _JOB_ID.fullmatch(job_id) or not meta_path.is_file():
            raise JobNotFound(f"no job {job_id!r} at this site")
        try:
            return _read(meta_path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read job file %s: %s", meta_path.name, type(exc).__name__)
            raise JobNotFound(f"no job {job_id!r} at this site") from None

    def _remember(self, job: Job) -> None:
        self._finished[job.job_id] = job
        self._finished.move_to_end(job.job_id)
        while len(self._finished) > self._keep:
            self._finished.popitem(last=False)

    def _store(self, job: Job) -> None:
        if job.state in FINISHED:
            self._write(job, self._finished_dir)
            self._move_files(job.job_id)
            self._open.pop(job.job_id, None)
            self._remember(job)
        else:
            self._write(job, self._dir)
            self._open[job.job_id] = job

    def _write(self, job: Job, folder: Path) -> None:
        meta = {
            "job_id": job.job_id,
            "request": job.request.model_dump(mode="json"),
            "decision": job.decision.model_dump(mode="json"),
            "analysis": job.analysis.model_dump(mode="json"),
            "output": job.output.value,
            "dataset_digest": job.dataset_digest,
            "state": job.state.value,
            "error": job.error,
            "release": None if job.release is None else job.release.model_dump(mode="json"),
            "cohort_population": None if job.cohort is None else job.cohort.population,
        }
        tmp = folder / f"{job.job_id}.json.tmp"
        tmp.write_bytes(canonical_json(meta))
        tmp.replace(folder / f"{job.job_id}.json")
        # The cohort before the partial: a partial on disk implies its cohort is there too.
        cohort = folder / f"{job.job_id}.cohort.npy"
        if job.cohort is None:
            cohort.unlink(missing_ok=True)
        elif not cohort.exists():
            with (folder / f"{job.job_id}.cohort.tmp").open("wb") as out:
                np.save(out, job.cohort.persons)
            (folder / f"{job.job_id}.cohort.tmp").replace(cohort)
        # A finishing job's partial still in the open folder is moved by _move_files.
        arrow = folder / f"{job.job_id}.arrow"
        on_disk = arrow.exists() or (self._dir / arrow.name).exists()
        if job.partial is not None and not on_disk:
            arrow.write_bytes(to_ipc(job.partial))

    def _move_files(self, job_id: str) -> None:
        """Move a finished job's partial out of the open folder and remove the rest there, the
        metadata last (while it is there, :meth:`restore` finds the job and completes this)."""
        arrow = self._dir / f"{job_id}.arrow"
        if arrow.exists():
            arrow.replace(self._finished_dir / arrow.name)
        (self._dir / f"{job_id}.cohort.npy").unlink(missing_ok=True)
        (self._dir / f"{job_id}.json").unlink(missing_ok=True)


def _read(meta_path: Path) -> Job:
    """A job from its metadata file and the files next to it."""
    meta = json.loads(meta_path.read_bytes())
    arrow = meta_path.with_suffix(".arrow")
    partial: pa.Table | None = from_ipc(arrow.read_bytes()) if arrow.exists() else None
    try:
        cohort = _read_cohort(meta_path, meta.get("cohort_population"))
    except OSError:  # written before the partial: without it, the job did not finish
        cohort, partial = None, None
    return Job(
        job_id=meta["job_id"],
        request=Request.model_validate(meta["request"]),
        decision=Decision.model_validate(meta["decision"]),
        analysis=AnalysisRef.model_validate(meta["analysis"]),
        output=OutputKind(meta["output"]),
        dataset_digest=meta["dataset_digest"],
        state=JobState(meta["state"]),
        error=meta["error"],
        partial=partial,
        release=None if meta["release"] is None else Release.model_validate(meta["release"]),
        cohort=cohort,
    )


def _read_cohort(meta_path: Path, population: int | None) -> Cohort | None:
    """The cohort kept next to a job's metadata file, or None if the job kept none.

    Raises ``OSError`` when the metadata says there is a cohort but its file is missing.
    """
    if population is None:
        return None
    persons = np.load(meta_path.with_suffix(".cohort.npy"), allow_pickle=False)
    return Cohort(persons, population=int(population))
