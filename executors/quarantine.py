"""Quarantine: where a job's partial waits, at the site, until the airlock decides.

Each job is kept on disk (metadata as JSON, the partial as Arrow IPC) as well as in memory,
so what is quarantined survives the process. A job that counted a cohort also keeps the
cohort's person ids (``<job>.cohort.npy``, for the differencing defence) until its release is
decided; they are never part of what is released.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from executors.errors import JobNotFound
from fedflow.core import canonical_json, to_ipc
from fedflow.core.analysis import AnalysisRef, OutputKind
from fedflow.core.messages import Decision, JobState, Release, Request
from governance.differencing import Cohort

__all__ = ["Job", "Quarantine", "read_cohort"]


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
    """Jobs by id, persisted under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def put(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.job_id] = job
            self._persist(job)
        return job

    def update(self, job_id: str, **changes: object) -> Job:
        with self._lock:
            job = replace(self._get(job_id), **changes)  # type: ignore[arg-type]
            self._jobs[job_id] = job
            self._persist(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._get(job_id)

    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} at this site")
        return job

    def _persist(self, job: Job) -> None:
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
        tmp = self._dir / f"{job.job_id}.json.tmp"
        tmp.write_bytes(canonical_json(meta))
        tmp.replace(self._dir / f"{job.job_id}.json")
        # The cohort before the partial: a partial on disk implies its cohort is there too.
        cohort = self._dir / f"{job.job_id}.cohort.npy"
        if job.cohort is None:
            cohort.unlink(missing_ok=True)
        elif not cohort.exists():
            with (self._dir / f"{job.job_id}.cohort.tmp").open("wb") as out:
                np.save(out, job.cohort.persons)
            (self._dir / f"{job.job_id}.cohort.tmp").replace(cohort)
        if job.partial is not None and not (self._dir / f"{job.job_id}.arrow").exists():
            (self._dir / f"{job.job_id}.arrow").write_bytes(to_ipc(job.partial))


def read_cohort(meta_path: Path, population: int | None) -> Cohort | None:
    """The cohort kept next to a job's metadata file, or None if the job kept none.

    Raises ``OSError`` when the metadata says there is a cohort but its file is missing.
    """
    if population is None:
        return None
    persons = np.load(meta_path.with_suffix(".cohort.npy"), allow_pickle=False)
    return Cohort(persons, population=int(population))
