"""Jobs for quarantine tests: made, run into quarantine and finished, and aged on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa

from executors.quarantine import Job, Quarantine
from fedflow.core.analysis import AnalysisRef, OutputKind
from fedflow.core.messages import Decision, JobState, Request, Verdict

__all__ = ["age", "job", "run"]


def job(number: int) -> Job:
    """A cohort_count job numbered ``number`` (id ``job<number>``), still running."""
    request = Request(
        analysis=AnalysisRef(name="cohort_count", version="1.0", code_digest="sha256:" + "0" * 64),
        params={"concept_ids": [number]},
        dataset="omop",
        token="a.b.c",
    )
    decision = Decision(
        site="site-a",
        request_id=request.request_id,
        verdict=Verdict.ALLOW,
        reasons=("allowed",),
        policy_digest="sha256:" + "1" * 64,
    )
    return Job(
        job_id=f"job{number:03d}",
        request=request,
        decision=decision,
        analysis=request.analysis,
        output=OutputKind.FREQUENCY,
        dataset_digest="sha256:" + "2" * 64,
    )


def run(quarantine: Quarantine, number: int, *, finish: bool) -> Job:
    """A job put, quarantined with its partial, and (``finish``) refused at release."""
    quarantine.put(job(number))
    partial = pa.table({"n": [number]})
    done = quarantine.update(f"job{number:03d}", state=JobState.QUARANTINED, partial=partial)
    if finish:
        done = quarantine.update(done.job_id, state=JobState.REFUSED, error="below threshold")
    return done


def age(folder: Path, job_id: str, days: float) -> None:
    """Make a job's files look written ``days`` ago."""
    moment = time.time() - days * 86400
    for path in folder.glob(f"{job_id}.*"):
        os.utime(path, (moment, moment))
