"""The Prefect tasks of one federated step: gate_before, run, gate_after at each site.

Each task is coarse (one site, one stage) so the orchestrator's cost grows with sites, not
with rows. A task fails (and shows red in the Prefect UI) when its site fails; the flow turns
that into the site's outcome and carries on with the others.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from executors import AnalysisFailed, SiteTransport, SiteUnavailable
from fedflow.core.messages import Decision, JobState, Release, ReleaseOutcome, Request
from flows.errors import ReviewPending
from governance.receipts import verify_release

__all__ = ["DEFAULT_REVIEW_TIMEOUT", "gate_after", "gate_before", "run"]

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
