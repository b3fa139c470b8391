"""What a federated step does when a site fails: timeout, retries with backoff, quorum, strategy.

In the spirit of Nextflow's ``errorStrategy`` / ``maxRetries``, a :class:`StepPolicy` says, per
step (or per fit, for every round of it):

- ``timeout``: seconds one site stage (``gate_before``, ``run``, ``gate_after``) may take per
  attempt; a stage that takes longer fails that attempt with :class:`StageTimedOut`;
- ``error_strategy``: what to do with a site that fails:
  ``retry`` retries a *transient* failure (the site is unreachable, busy or timed out) up to
  ``max_retries`` times with exponential backoff and jitter, then gives up on the site and goes
  on without it; ``ignore`` goes on without the site at once; ``terminate`` stops the flow with
  :class:`~flows.errors.SiteFailed` when a site fails;
- ``min_sites`` / ``min_fraction``: the quorum, the sites that must release a partial
  (:meth:`StepPolicy.required`).

A final failure is never retried: a gate's refusal, an invalid request, an analysis that raised,
or a release whose receipt does not verify (a corrupt payload) fail the site at once.

:func:`attempt` runs one site stage under the policy and returns its value; when the site
definitively fails it raises :class:`~flows.errors.StageFailed`, which carries the failure's
kind (``reason``) and the number of attempts for the step's report. Under ``terminate`` the
step then stops with :class:`~flows.errors.SiteFailed`, naming every site's outcome.
"""

from __future__ import annotations

import contextvars
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from executors import SiteUnavailable
from fedflow.core import FedflowError, InvalidRequest
from flows.errors import ReviewPending, SiteFailed, StageFailed, StageTimedOut
from flows.outcomes import SiteOutcome, SiteStatus
from governance.audit import AuditLog
from governance.errors import ReceiptInvalid

__all__ = [
    "ErrorStrategy",
    "FailureKind",
    "StepPolicy",
    "attempt",
    "classify",
    "stop_on_failure",
    "with_deadline",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ErrorStrategy(StrEnum):
    """What a step does with a site that fails (Nextflow's ``errorStrategy``)."""

    RETRY = "retry"
    """Retry transient failures up to ``max_retries`` times, then go on without the site."""
    IGNORE = "ignore"
    """Go on without the site at once (no retry)."""
    TERMINATE = "terminate"
    """Stop the flow when a site fails (:class:`~flows.errors.SiteFailed`), no retry."""


class FailureKind(StrEnum):
    """Why a site stage failed, as the step's report names it."""

    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    CORRUPT = "corrupt_payload"
    INVALID = "invalid_request"
    REVIEW = "review_pending"
    ERROR = "error"

    @property
    def transient(self) -> bool:
        """Whether another attempt may succeed (the site down, busy or slow)."""
        return self in (FailureKind.UNAVAILABLE, FailureKind.TIMEOUT)


def classify(error: BaseException) -> FailureKind:
    """The kind of a stage's failure: transient (unavailable, timeout) or final (the rest)."""
    if isinstance(error, StageTimedOut | TimeoutError):
        return FailureKind.TIMEOUT
    if isinstance(error, ReceiptInvalid):
        return FailureKind.CORRUPT
    if isinstance(error, ReviewPending):
        return FailureKind.REVIEW
    if isinstance(error, SiteUnavailable | ConnectionError):
        return FailureKind.UNAVAILABLE
    if isinstance(error, InvalidRequest):
        return FailureKind.INVALID
    return FailureKind.ERROR


class StepPolicy(BaseModel):
    """Per step: timeout, retries with backoff, quorum and what to do with a failing site."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_strategy: ErrorStrategy = ErrorStrategy.RETRY
    max_retries: int = Field(default=2, ge=0, le=20)
    """Retries of a transient failure per site stage (``retry`` only)."""
    backoff: float = Field(default=0.5, ge=0, le=600)
    """Seconds before the first retry; doubled for each further one."""
    backoff_max: float = Field(default=30.0, ge=0, le=3600)
    jitter: float = Field(default=0.25, ge=0, le=1)
    """Each delay is drawn uniformly within ± this fraction of itself."""
    timeout: float = Field(default=600.0, gt=0, le=86_400)
    """Seconds one attempt of a site stage may take."""
    min_sites: int = Field(default=1, ge=0)
    min_fraction: float = Field(default=0.0, ge=0, le=1)
    """Fraction of the federation's sites that must release a partial (rounded up)."""

    def required(self, sites: int) -> int:
        """How many sites must release a partial in a step over ``sites`` sites."""
        return max(self.min_sites, math.ceil(self.min_fraction * sites - 1e-9))

    @property
    def retries(self) -> int:
        """Retries a transient failure gets under this policy."""
        return self.max_retries if self.error_strategy is ErrorStrategy.RETRY else 0

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): exponential, jittered."""
        base = min(self.backoff * 2 ** (retry - 1), self.backoff_max)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


class _CallThreads:
    """Daemon threads that run site calls under a deadline, kept for the next call when idle.

    A step makes up to four calls per site (a thread each, so a call that overruns can be
    abandoned); starting a thread per call cost a 100-site step 400 thread starts. A thread
    whose call overran stays with it until it returns; an idle thread exits after ``idle`` s.
    """

    def __init__(self, idle: float = 30.0) -> None:
        self._idle_s = idle
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]]
        self._calls = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def start(self, call: Callable[[], None], done: threading.Event) -> None:
        """Run ``call`` (which must not raise) in an idle thread, or a new one; then set ``done``.

        The thread counts itself idle before it sets ``done``, so a caller's next call reuses it.
        """
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._calls.put((call, done))
                return
        threading.Thread(
            target=self._serve, args=((call, done),), name="site-call", daemon=True
        ).start()

    def _serve(self, job: tuple[Callable[[], None], threading.Event]) -> None:
        while True:
            call, done = job
            try:
                call()
            finally:
                with self._lock:
                    self._idle += 1
                done.set()
            try:
                job = self._calls.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:  # a call handed over as this thread timed out is still ours
                    try:
                        job = self._calls.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return


_CALL_THREADS = _CallThreads()


def with_deadline(call: Callable[[], T], seconds: float, *, what: str, site: str) -> T:
    """``call()``, or :class:`StageTimedOut` when it has not returned within ``seconds``.

    The call runs in a daemon thread (with this thread's context, so Prefect's run logger works
    there); one that overruns is abandoned, not killed: a site call cannot be interrupted, but
    the step no longer waits for it.
    """
    box: dict[str, Any] = {}
    context = contextvars.copy_context()
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = context.run(call)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    _CALL_THREADS.start(target, done)
    if not done.wait(seconds):
        raise StageTimedOut(
            f"{what} did not finish within {seconds:g} s", site=site, reason="timeout"
        )
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def attempt(
    call: Callable[[], T],
    policy: StepPolicy,
    *,
    stage: str,
    site: str,
    request_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run one site stage under ``policy``: each attempt within ``policy.timeout`` seconds,
    transient failures retried with backoff; a definitive failure raises :class:`StageFailed`."""
    tries = 0
    while True:
        tries += 1
        try:
            return with_deadline(call, policy.timeout, what=stage, site=site)
        except FedflowError as exc:
            error: BaseException = exc
        except (OSError, TimeoutError) as exc:
            error = exc
        kind = classify(error)
        if kind.transient and tries <= policy.retries:
            pause = policy.delay(tries)
            logger.warning(
                "%s: %s failed (%s, attempt %d); retrying in %.2f s",
                site,
                stage,
                kind.value,
                tries,
                pause,
            )
            sleep(pause)
            continue
        message = error.message if isinstance(error, FedflowError) else type(error).__name__
        if isinstance(error, FedflowError) and error.reason and kind is not FailureKind.TIMEOUT:
            message = f"{message} ({error.reason})"
        raise StageFailed(
            message,
            site=site,
            request_id=request_id or getattr(error, "request_id", None),
            reason=kind.value,
            stage=stage,
            attempts=tries,
        ) from error


def stop_on_failure(
    outcomes: dict[str, SiteOutcome],
    order: Sequence[str],
    pending: Sequence[str],
    request_id: str,
    audit: AuditLog,
) -> None:
    """Under ``terminate``: when a site failed, mark ``pending`` sites skipped, audit, and
    raise :class:`SiteFailed` naming every failed site and why (else do nothing)."""
    failed = [o for o in outcomes.values() if o.status is SiteStatus.FAILED]
    if not failed:
        return
    for site in pending:
        outcomes[site] = SiteOutcome(
            site, SiteStatus.SKIPPED, "-", ("not run: a site failed and the strategy is terminate",)
        )
    audit.append(
        "flow.terminated",
        actor="orchestrator",
        request_id=request_id,
        details={"failed": {o.site: "; ".join(o.reasons) for o in failed}},
    )
    raise SiteFailed(
        "the step stops (error strategy terminate): "
        + "; ".join(
            f"{o.site} {o.failure or o.status.value} at {o.stage}: {'; '.join(o.reasons)}"
            for o in failed
        ),
        outcomes=[outcomes[s] for s in order if s in outcomes],
        request_id=request_id,
    )
