"""The Prefect tasks of one federated step: gate_before, run, gate_after at each site.

Each task is coarse (one site, one stage) so the orchestrator's cost grows with sites, not
with rows. A task fails (and shows red in the Prefect UI) when its site fails; the flow turns
that into the site's outcome and carries on with the others.

Given a :class:`~flows.strategy.StepPolicy`, each site call runs within the policy's timeout
and a transient failure (the site unreachable, busy or slow) is retried with backoff; a site
that fails for good raises :class:`~flows.errors.StageFailed` naming the kind of failure and
the attempts. Without one, a stage makes one attempt and raises the site's own error.

:func:`submit_stage` starts a stage as its own task run, or, given a thread pool, inside the
caller's task run (a fit's round runs many steps; one task run per round is cheaper);
:func:`stage_result` turns a stage's failure into the site's outcome; :func:`run_and_release`
runs ``run`` then ``gate_after`` at a set of sites, or :func:`step` in a fit's later rounds (a
step of the fit the site's gate allowed, or the whole protocol where the site has none open);
a federated step runs it again with the sites that delivered when a member of a
secure-aggregation group drops out.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from executors import AnalysisFailed, FitNotOpen, SiteTransport, SiteUnavailable
from fedflow.core import FedflowError
from fedflow.core.messages import Decision, JobState, JobStatus, Release, ReleaseOutcome, Request
from flows.errors import ReviewPending, StageFailed, StageTimedOut
from flows.outcomes import SiteOutcome, SiteStatus
from flows.strategy import FailureKind, StepPolicy, attempt, classify
from governance.receipts import verify_release

__all__ = [
    "DEFAULT_REVIEW_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "failure_outcome",
    "gate_after",
    "gate_before",
    "release_outcome",
    "run",
    "run_and_release",
    "stage_result",
    "step",
    "submit_stage",
]

StageFuture = PrefectFuture[Any] | Future[Any]
T = TypeVar("T")

DEFAULT_TIMEOUT = 600.0
DEFAULT_REVIEW_TIMEOUT = 300.0
"""How long ``gate_after`` waits for a custodian's decision on a result held for review (s)."""
_POLL_FIRST, _POLL_MAX = 0.2, 2.0


def _call(
    policy: StepPolicy | None, stage: str, site: str, request_id: str | None, call: Callable[[], T]
) -> T:
    """``call()`` once (no policy), or under the policy's timeout and retries."""
    if policy is None:
        return call()
    return attempt(call, policy, stage=stage, site=site, request_id=request_id)


@task(name="gate_before", task_run_name="gate_before-{site}", cache_policy=NO_CACHE)
def gate_before(
    site: str, transport: SiteTransport, request: Request, policy: StepPolicy | None = None
) -> Decision:
    """Ask the site's pre-gate whether it will run the request."""
    decision = _call(
        policy, "gate_before", site, request.request_id, lambda: transport.check(request)
    )
    get_run_logger().info("%s: %s (%s)", site, decision.verdict.value, "; ".join(decision.reasons))
    return decision


@task(name="run", task_run_name="run-{site}", cache_policy=NO_CACHE)
def run(
    site: str,
    transport: SiteTransport,
    request: Request,
    timeout: float = DEFAULT_TIMEOUT,
    policy: StepPolicy | None = None,
) -> str:
    """Have the site run the request on its Dask cluster into quarantine; return the job id.

    With a policy, its ``timeout`` replaces ``timeout``: a job still running then is a
    transient failure, and a retry waits for the same job again (it never resubmits a request
    the site has: the site would refuse the replay).
    """
    limit = timeout if policy is None else policy.timeout
    request_id = request.request_id

    def finished() -> JobStatus:
        status = transport.wait(job_id, limit)
        if status.state is JobState.RUNNING:
            raise StageTimedOut(
                f"job did not finish within {limit:g} s", site=site, request_id=request_id
            )
        return status

    job_id = _call(policy, "run", site, request_id, lambda: transport.submit(request))
    # the deadline of one wait: the site's own wait, plus a little for its answer
    patient = None if policy is None else policy.model_copy(update={"timeout": limit + 5.0})
    try:
        status = _call(patient, "run", site, request_id, finished)
    except StageTimedOut as exc:  # without a policy: reported as before, the site too slow
        raise SiteUnavailable(exc.message, site=site, request_id=request_id) from None
    if status.state is JobState.FAILED:
        raise AnalysisFailed(status.error or "analysis failed", site=site, request_id=request_id)
    get_run_logger().info("%s: job %s quarantined", site, job_id)
    return job_id


@task(name="gate_after", task_run_name="gate_after-{site}", cache_policy=NO_CACHE)
def gate_after(
    site: str,
    transport: SiteTransport,
    job_id: str,
    request: Request | None = None,
    review_timeout: float = DEFAULT_REVIEW_TIMEOUT,
    policy: StepPolicy | None = None,
) -> Release:
    """Ask the site's airlock to release the partial; refuse it unless its receipt verifies.

    The receipt must be signed by the site's pinned key, sign the digests the release carries,
    match the payload's bytes and, when ``request`` is given, name that request. While the
    site holds the result for its custodian's review, ask again (every 0.2 s, backing off to
    2 s) for up to ``review_timeout`` seconds; then raise :class:`ReviewPending`. A release
    that does not verify is a final failure (``corrupt_payload``), never retried.
    """
    request_id = None if request is None else request.request_id

    def fetch() -> Release:
        release = transport.release(job_id)
        verify_release(release, transport.receipt_key, site=site, request=request)
        return release

    deadline = time.monotonic() + review_timeout
    pause = _POLL_FIRST
    release = _call(policy, "gate_after", site, request_id, fetch)
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
        release = _call(policy, "gate_after", site, request_id, fetch)
    get_run_logger().info(
        "%s: %s, %d cell(s) suppressed", site, release.outcome.value, release.suppressed_cells
    )
    return release


@task(name="step", task_run_name="step-{site}", cache_policy=NO_CACHE)
def step(
    site: str,
    transport: SiteTransport,
    request: Request,
    timeout: float = DEFAULT_TIMEOUT,
    review_timeout: float = DEFAULT_REVIEW_TIMEOUT,
    policy: StepPolicy | None = None,
) -> Release | Decision:
    """A later round of a fit at a site: a step of the fit the site holds open
    (:meth:`~executors.SiteTransport.step`: no pre-gate, the airlock and a verified receipt as
    ever), or, when the site has none open (its policy changed, the token expired, it
    restarted), the full protocol in this stage: ``gate_before``, ``run``, ``gate_after``.
    The release, or the pre-gate's decision when it now refuses."""

    def stepped() -> Release | None:
        try:
            release = transport.step(request)
        except FitNotOpen:
            return None
        verify_release(release, transport.receipt_key, site=site, request=request)
        return release

    release = _call(policy, "step", site, request.request_id, stepped)
    if release is not None:
        return release
    get_run_logger().info("%s: no open fit; the round goes through the gate", site)
    decision = gate_before.fn(site, transport, request, policy)
    if not decision.allowed:
        return decision
    job_id = run.fn(site, transport, request, timeout, policy)
    return gate_after.fn(site, transport, job_id, request, review_timeout, policy)


def release_outcome(site: str, release: Release, attempts: int = 1) -> SiteOutcome:
    """The outcome of a site whose airlock answered (released, suppressed, held, refused)."""
    status = {
        ReleaseOutcome.RELEASED: SiteStatus.RELEASED,
        ReleaseOutcome.SUPPRESSED: SiteStatus.SUPPRESSED,
        ReleaseOutcome.REVIEW: SiteStatus.REVIEW_PENDING,
        ReleaseOutcome.REFUSED: SiteStatus.REFUSED,
    }[release.outcome]
    return SiteOutcome(
        site,
        status,
        "review" if "review" in release.digests else "gate_after",
        release.reasons,
        release.suppressed_cells,
        release.job_id,
        release.digests,
        attempts=attempts,
    )


def run_and_release(
    transports: Mapping[str, SiteTransport],
    request: Request,
    sites: list[str],
    timeout: float,
    review_timeout: float,
    outcomes: dict[str, SiteOutcome],
    pool: Executor | None = None,
    policy: StepPolicy | None = None,
    *,
    stepping: bool = False,
) -> dict[str, Release]:
    """run then gate_after at each of ``sites`` (with ``stepping``, a later round of a fit:
    :func:`step`); record each site's outcome; the releases."""
    futures: dict[str, StageFuture] = {}
    if stepping:
        futures = {
            s: submit_stage(pool, step, s, transports[s], request, timeout, review_timeout, policy)
            for s in sites
        }
    else:
        runs = {
            s: submit_stage(pool, run, s, transports[s], request, timeout, policy) for s in sites
        }
        for site, run_future in runs.items():
            job_id = stage_result(run_future, site, "run", outcomes)
            if job_id is not None:
                futures[site] = submit_stage(
                    pool,
                    gate_after,
                    site,
                    transports[site],
                    job_id,
                    request,
                    review_timeout,
                    policy,
                )
    releases = {}
    for site, release_future in futures.items():
        release = stage_result(release_future, site, "step" if stepping else "gate_after", outcomes)
        if isinstance(release, Decision):  # a step's pre-gate, asked again, refused
            outcomes[site] = SiteOutcome(site, SiteStatus.REFUSED, "gate_before", release.reasons)
        elif release is not None:
            outcomes[site] = release_outcome(site, release)
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
    """The stage's result, or None after recording the site's failure (what, where, why)."""
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
    outcomes[site] = failure_outcome(site, stage, error)
    return None


def failure_outcome(site: str, stage: str, error: BaseException) -> SiteOutcome:
    """The outcome of a site whose ``stage`` raised ``error``."""
    reason = error.message if isinstance(error, FedflowError) else type(error).__name__
    if isinstance(error, ReviewPending):
        return SiteOutcome(site, SiteStatus.REVIEW_PENDING, "review", (reason,))
    kind = FailureKind(error.reason or "error") if isinstance(error, StageFailed) else None
    if kind is FailureKind.REVIEW:
        return SiteOutcome(site, SiteStatus.REVIEW_PENDING, "review", (reason,))
    if isinstance(error, StageFailed):
        return SiteOutcome(
            site,
            SiteStatus.FAILED,
            error.stage or stage,
            (reason,),
            failure=error.reason,
            attempts=error.attempts,
        )
    kind = classify(error)
    if isinstance(error, FedflowError) and error.reason:
        reason = f"{reason} ({error.reason})"
    return SiteOutcome(site, SiteStatus.FAILED, stage, (reason,), failure=kind.value)
