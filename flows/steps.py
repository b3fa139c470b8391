"""The Prefect tasks of one federated step: gate_before, run, gate_after at each site.

Each task is coarse (one site, one stage) so the orchestrator's cost grows with sites, not
with rows. A task fails (and shows red in the Prefect UI) when its site fails; the flow turns
that into the site's outcome and carries on with the others.

:func:`submit_stage` starts a stage as its own task run, or, given a thread pool, inside the
caller's task run (a fit's round runs many steps; one task run per round is cheaper);
:func:`stage_result` turns a stage's failure into the site's outcome; :func:`run_and_release`
runs ``run`` then ``gate_after`` at a set of sites (a step runs it again with the sites that
delivered when a member of a secure-aggregation group drops out).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from executors import AnalysisFailed, SiteTransport, SiteUnavailable
from fedflow.core import FedflowError
from fedflow.core.messages import Decision, JobState, Release, ReleaseOutcome, Request
from flows.errors import ReviewPending
from flows.outcomes import SiteOutcome, SiteStatus
from governance.receipts import verify_release

__all__ = [
    "DEFAULT_REVIEW_TIMEOUT",
    "gate_after",
    "gate_before",
    "run",
    "run_and_release",
    "stage_result",
    "submit_stage",
]

StageFuture = PrefectFuture[Any] | Future[Any]

DEFAULT_TIMEOUT = 600.0
DEFAULT_REVIEW_TIMEOUT = 300.0
"""How long ``gate_after`` waits for a custodian's decision on a result held for review (s)."""
_POLL_FIRST, _POLL_MAX = 0.2, 2.0


@task(name="gate_before", task_run_name="gate_before-{site}", cache_policy=NO_CACHE)
def gate_before(site: str, transport: SiteTransport, request: Request) -> Decision:
    """Ask the site's pre-gate whether it will run the request."""
    decision = transport.check(request)
    get_run_logger().info("%s: %s (%s)", site, decision.verdict.value, "; ".join(decision.reasons))
    return decision


@task(name="run", task_run_name="run-{site}", cache_policy=NO_CACHE)
def run(
    site: str, transport: SiteTransport, request: Request, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """Have the site run the request on its Dask cluster into quarantine; return the job id."""
    job_id = transport.submit(request)
    status = transport.wait(job_id, timeout)
    if status.state is JobState.RUNNING:
        raise SiteUnavailable(
            f"job did not finish within {timeout:g} s", site=site, request_id=request.request_id
        )
    if status.state is JobState.FAILED:
        raise AnalysisFailed(
            status.error or "analysis failed", site=site, request_id=request.request_id
        )
    get_run_logger().info("%s: job %s quarantined", site, job_id)
    return job_id


@task(name="gate_after", task_run_name="gate_after-{site}", cache_policy=NO_CACHE)
def gate_after(
    site: str,
    transport: SiteTransport,
    job_id: str,
    request: Request | None = None,
    review_timeout: float = DEFAULT_REVIEW_TIMEOUT,
) -> Release:
    """Ask the site's airlock to release the partial; refuse it unless its receipt verifies.

    The receipt must be signed by the site's pinned key, sign the digests the release carries,
    match the payload's bytes and, when ``request`` is given, name that request. While the
    site holds the result for its custodian's review, ask again (every 0.2 s, backing off to
    2 s) for up to ``review_timeout`` seconds; then raise :class:`ReviewPending`.
    """
    deadline = time.monotonic() + review_timeout
    pause = _POLL_FIRST
    release = transport.release(job_id)
    verify_release(release, transport.receipt_key, site=site, request=request)
    if release.outcome is ReleaseOutcome.REVIEW:
        get_run_logger().info(
            "%s: %s; waiting up to %g s", site, release.reasons[0], review_timeout
        )
    while release.outcome is ReleaseOutcome.REVIEW:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReviewPending(
                f"site {site} still holds the result for its custodian's review after "
                f"{review_timeout:g} s",
                site=site,
                request_id=release.request_id,
                reason="review_pending",
            )
        time.sleep(min(pause, left))
        pause = min(pause * 2, _POLL_MAX)
        release = transport.release(job_id)
        verify_release(release, transport.receipt_key, site=site, request=request)
    get_run_logger().info(
        "%s: %s, %d cell(s) suppressed", site, release.outcome.value, release.suppressed_cells
    )
    return release


def run_and_release(
    transports: Mapping[str, SiteTransport],
    request: Request,
    sites: list[str],
    timeout: float,
    review_timeout: float,
    outcomes: dict[str, SiteOutcome],
    pool: Executor | None = None,
) -> dict[str, Release]:
    """run then gate_after at each of ``sites``; record each site's outcome; the releases."""
    runs = {s: submit_stage(pool, run, s, transports[s], request, timeout) for s in sites}
    futures = {}
    for site, run_future in runs.items():
        job_id = stage_result(run_future, site, "run", outcomes)
        if job_id is not None:
            futures[site] = submit_stage(
                pool, gate_after, site, transports[site], job_id, request, review_timeout
            )
    releases = {}
    for site, release_future in futures.items():
        release = stage_result(release_future, site, "gate_after", outcomes)
        if release is None:
            continue
        status = {
            ReleaseOutcome.RELEASED: SiteStatus.RELEASED,
            ReleaseOutcome.SUPPRESSED: SiteStatus.SUPPRESSED,
            ReleaseOutcome.REVIEW: SiteStatus.REVIEW_PENDING,
            ReleaseOutcome.REFUSED: SiteStatus.REFUSED,
        }[release.outcome]
        outcomes[site] = SiteOutcome(
            site,
            status,
            "review" if "review" in release.digests else "gate_after",
            release.reasons,
            release.suppressed_cells,
            release.job_id,
            release.digests,
        )
        releases[site] = release
    return releases


def submit_stage(pool: Executor | None, stage: Any, *args: Any) -> StageFuture:
    """Start a site stage: as a Prefect task run, or (with ``pool``) in the caller's task run."""
    if pool is None:
        future: StageFuture = stage.submit(*args)
        return future
    return pool.submit(contextvars.copy_context().run, stage.fn, *args)


def stage_result(
    future: StageFuture, site: str, stage: str, outcomes: dict[str, SiteOutcome]
) -> Any:
    """The stage's result, or None after recording the site as failed."""
    if isinstance(future, Future):
        try:
            return future.result()
        except Exception as exc:  # the site's failure, recorded below
            error: Any = exc
    else:
        future.wait()
        state = future.state
        if state.is_completed():
            return future.result()
        error = state.result(raise_on_failure=False)
    reason = error.message if isinstance(error, FedflowError) else type(error).__name__
    if isinstance(error, ReviewPending):
        outcomes[site] = SiteOutcome(site, SiteStatus.REVIEW_PENDING, "review", (reason,))
        return None
    if isinstance(error, FedflowError) and error.reason:
        reason = f"{reason} ({error.reason})"
    outcomes[site] = SiteOutcome(site, SiteStatus.FAILED, stage, (reason,))
    return None
