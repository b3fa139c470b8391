"""The site node: the site protocol, with the site's gates around every step.

``check`` is the pre-gate: token, analysis, parameters, dataset and columns against the
site's policy. ``submit`` checks again (so an orchestrator cannot skip the gate) and runs the
analysis on the site's Dask cluster into quarantine; for an analysis that counts a cohort, the
job also keeps the cohort's person ids there. ``release`` hands the quarantined job to the
site's :class:`~executors.release.ReleaseDesk`: the airlock, the differencing defence and
human review, then a signed receipt over the release's lineage. Every step, allowed or not,
lands in the site's audit log; errors and audit entries name what was wrong, never row-level
values.

A request is refused if it is stale or its nonce was already used for the same step (see
:mod:`executors.replay`). ``submit`` re-checks every request; for the very request (same
digest: token, nonce, parameters and all, the mask group the orchestrator adds after ``check``
aside: :meth:`~fedflow.core.messages.Request.gate_digest`) that ``check`` allowed moments
before, it reuses that decision when the policy is the same object, the token has not expired
and at most :data:`REUSE_WITHIN` has passed (audited as ``gate.allowed`` with ``decided_at:
check``); the replay guard and the column check still run.

Jobs survive a restart: open jobs are read back from the quarantine folder, finished ones when
asked for (:mod:`executors.quarantine`); a job that was still running when the process died is
marked failed ("interrupted"), never silently lost.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from executors.catalogue import Catalogue, Dataset
from executors.cluster import SiteCluster
from executors.config import SiteConfig
from executors.errors import (
    AnalysisFailed,
    FitNotOpen,
    JobNotFound,
    RequestRefused,
    SiteError,
    SiteUnavailable,
)
from executors.fits import OpenFit, OpenFits
from executors.quarantine import FOLDER as QUARANTINE_FOLDER
from executors.quarantine import Job, Quarantine
from executors.release import ReleaseDesk
from executors.replay import DEFAULT_MAX_AGE, ReplayGuard
from fedflow.core import (
    Analysis,
    CountsCohort,
    FedflowError,
    TableColumns,
    digest_json,
)
from fedflow.core.messages import (
    Decision,
    JobState,
    JobStatus,
    Release,
    Request,
    SiteInfo,
    Verdict,
)
from fedflow.core.outputs import validate as validate_output
from fedflow.core.registry import AnalysisRegistry, default_registry
from governance.audit import AuditLog
from governance.checkpoints import Checkpoint, sign_checkpoint
from governance.differencing import Cohort
from governance.errors import TokenRejected
from governance.identity import TrustedIssuer, verify_token
from governance.policy import SitePolicy
from governance.receipts import ReceiptKey

__all__ = ["REUSE_WITHIN", "SiteNode"]

log = logging.getLogger(__name__)

REUSE_WITHIN = 60.0
"""Seconds during which ``submit`` reuses the decision ``check`` made on the same request."""
_REUSE_KEPT = 4096


@dataclass(frozen=True)
class _Plan:
    """A decision and, when it allows the request, what will run."""

    decision: Decision
    analysis: Analysis[Any] | None = None
    params: Any = None
    dataset: Dataset | None = None
    tables: TableColumns | None = None
    expires_at: datetime | None = None
    """When the token the decision was made for expires."""


@dataclass(frozen=True)
class _Checked:
    """An allowing decision of ``check``, kept for the ``submit`` of the same request."""

    plan: _Plan
    policy: SitePolicy
    at: float


class SiteNode:
    """A data custodian's node. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        config: SiteConfig,
        *,
        registry: AnalysisRegistry | None = None,
        max_request_age: timedelta = DEFAULT_MAX_AGE,
    ) -> None:
        self.config = config
        self.name = config.site
        self.policy = SitePolicy.load(config.policy)
        self.trusted = [
            TrustedIssuer.from_file(t.issuer, t.public_key) for t in config.trusted_issuers
        ]
        self.registry = registry or default_registry()
        self.catalogue = Catalogue(config.datasets)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(config.state_dir / "audit.db", site=self.name)
        self.quarantine = Quarantine(config.state_dir / QUARANTINE_FOLDER)
        self.receipt_key = ReceiptKey.load_or_create(config.state_dir / "receipt.key.pem")
        self.replay = ReplayGuard(config.state_dir / "nonces.db", max_age=max_request_age)
        self.desk = ReleaseDesk(
            site=self.name,
            policy=self.policy,
            quarantine=self.quarantine,
            receipt_key=self.receipt_key,
            state_dir=config.state_dir,
            audit=self._audit,
        )
        restored, interrupted = self.quarantine.restore()
        self.cluster = SiteCluster(config.dask, name=self.name)
        self._runner = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{self.name}-job")
        self._done: dict[str, threading.Event] = {}
        self._checked: OrderedDict[str, _Checked] = OrderedDict()
        self._checked_lock = threading.Lock()
        self.fits = OpenFits()
        self._steps = 0
        self._steps_lock = threading.Lock()
        self._stopping = False
        for job in interrupted:
            self._audit(job.request, "job.failed", job_id=job.job_id, error="interrupted")
        self.audit.append(
            "site.started",
            actor=self.name,
            details={
                "policy_digest": self.policy.digest,
                "policy_version": self.policy.version,
                "datasets": self.catalogue.snapshots(),
                "scheduler": self.cluster.address,
                "receipt_key": self.receipt_key.key_id,
                "jobs_restored": restored,
                "jobs_interrupted": len(interrupted),
            },
        )

    # -- the site protocol -------------------------------------------------------------------

    def info(self) -> SiteInfo:
        """What the site says about itself: datasets, policy digest, scheduler, audit head."""
        return SiteInfo(
            site=self.name,
            jurisdiction=self.config.jurisdiction,
            datasets=self.catalogue.snapshots(),
            policy_digest=self.policy.digest,
            scheduler=self.cluster.address,
            audit_head=self.audit.head(),
            receipt_key=self.receipt_key.public_pem.decode(),
            agreement_key=self.desk.agreement_key.public_text,
        )

    def checkpoint(self, nonce: str | None = None) -> Checkpoint:
        """The site's audit head, signed with its receipt key (``nonce``: the asker's)."""
        return sign_checkpoint(
            self.receipt_key, site=self.name, head=self.audit.head(), nonce=nonce
        )

    def running_jobs(self) -> int:
        """How many jobs are running now (steps a site service admitted included)."""
        running = sum(1 for event in list(self._done.values()) if not event.is_set())
        with self._steps_lock:
            return running + self._steps

    @contextmanager
    def step_running(self) -> Iterator[None]:
        """Count a step as a running job for the block (a site service admits steps under the
        same limit as jobs; :meth:`step` itself does not count)."""
        with self._steps_lock:
            self._steps += 1
        try:
            yield
        finally:
            with self._steps_lock:
                self._steps -= 1

    def check(self, request: Request) -> Decision:
        """The pre-gate: decide on ``request`` and audit the decision."""
        return self._plan(request, step="check").decision

    def submit(self, request: Request) -> str:
        """Re-check ``request`` and start it on the site's cluster; return the job id."""
        if self._stopping:
            raise SiteUnavailable(
                "the site is shutting down", site=self.name, request_id=request.request_id
            )
        plan = self._plan(request, step="submit")
        if plan.analysis is None or plan.dataset is None:
            raise RequestRefused(
                "the site's gate refused the request",
                reasons=plan.decision.reasons,
                site=self.name,
                request_id=request.request_id,
            )
        job = Job(
            job_id=uuid.uuid4().hex,
            request=request,
            decision=plan.decision,
            analysis=plan.analysis.ref(),
            output=plan.analysis.output,
            dataset_digest=plan.dataset.snapshot_digest,
        )
        self.quarantine.put(job)
        self._done[job.job_id] = threading.Event()
        self._audit(request, "job.started", job_id=job.job_id, dataset_digest=job.dataset_digest)
        self._open_fit(request, job.job_id, plan)
        self._runner.submit(self._execute, job, plan)
        return job.job_id

    def step(self, request: Request) -> Release:
        """Run ``request`` as the next round of a fit this site's gate allowed, and release it.

        The request must differ from the round the gate allowed only in its id, nonce, time,
        mask group and the analysis's iterated parameters (:mod:`executors.fits`), under the
        same policy and an unexpired token. Then no gate runs again: the nonce is checked, the
        parameters are validated, the analysis runs on the site's cluster and its partial
        goes through the airlock (masks and signed receipt included), as any job's. Audited
        as ``step.started`` and the airlock's decision; the release carries the site's signed
        audit head after them (:attr:`Release.checkpoint`). :class:`FitNotOpen` (audited as
        ``step.not_open``) when there is no such fit: the caller sends the request through the
        full protocol instead.
        """
        if self._stopping:
            raise SiteUnavailable(
                "the site is shutting down", site=self.name, request_id=request.request_id
            )
        try:
            analysis = self.registry.resolve(request.analysis)
        except FedflowError:
            analysis = None
        fit = None if analysis is None else self.fits.find(request, analysis, self.policy)
        if analysis is None or fit is None:
            self._audit(request, "step.not_open", analysis=str(request.analysis))
            raise FitNotOpen(
                "no open fit for this request at this site: send it through the gate",
                site=self.name,
                request_id=request.request_id,
            )
        stale = self.replay.refusal(request, "step")
        if stale is not None:
            self._audit(request, "request.replayed", step="step", reason=stale)
            raise RequestRefused(
                stale, reasons=(stale,), site=self.name, request_id=request.request_id
            )
        fit.rounds += 1
        try:
            params = self.policy.answered_params(analysis.parse_params(request.params))
        except FedflowError as exc:
            self._invalid(request, "step", exc)
            raise
        job = Job(
            job_id=uuid.uuid4().hex,
            request=request,
            decision=fit.decision,
            analysis=analysis.ref(),
            output=analysis.output,
            dataset_digest=fit.dataset.snapshot_digest,
        )
        self._audit(
            request,
            "step.started",
            actor=fit.decision.researcher,
            job_id=job.job_id,
            fit_job_id=fit.job_id,
            round=fit.rounds,
            request_digest=request.digest(),
            policy_digest=fit.decision.policy_digest,
        )
        try:
            partial = self.cluster.run(analysis, params, fit.dataset, fit.tables)
            validate_output(job.output, partial)
        except Exception as exc:  # the analysis is foreign code: any failure is the step's
            message = exc.message if isinstance(exc, FedflowError) else type(exc).__name__
            self._audit(request, "job.failed", job_id=job.job_id, error=message)
            raise AnalysisFailed(
                f"analysis failed: {message}", site=self.name, request_id=request.request_id
            ) from None
        release = self.desk.release_step(
            dataclasses.replace(job, state=JobState.QUARANTINED, partial=partial)
        )
        return release.model_copy(update={"checkpoint": self.checkpoint(request.request_id)})

    def status(self, job_id: str) -> JobStatus:
        job = self.quarantine.get(job_id)
        return JobStatus(
            site=self.name,
            job_id=job_id,
            request_id=job.request.request_id,
            state=job.state,
            error=job.error,
        )

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job left the running state (or ``timeout`` seconds passed)."""
        self.quarantine.get(job_id)
        event = self._done.get(job_id)
        if event is not None:
            event.wait(timeout)
        return self.status(job_id)

    def release(self, job_id: str, *, token: str | None = None) -> Release:
        """The post-gate: pass a quarantined partial through the airlock.

        With ``token`` (the service always passes the caller's), only the researcher and
        project the job was run for may release it; anyone else is told there is no such job.
        """
        job = self.quarantine.get(job_id)
        if token is not None:
            self._check_caller(job, token)
        if job.release is not None:
            return job.release
        if job.state is not JobState.QUARANTINED or job.partial is None:
            raise SiteError(
                f"job {job_id} is {job.state.value}, not quarantined",
                site=self.name,
                request_id=job.request.request_id,
            )
        return self.desk.release(job)

    def _check_caller(self, job: Job, token: str) -> None:
        try:
            identity = verify_token(token, trusted=self.trusted, audience=self.config.audience)
            same = (identity.researcher, identity.project) == (
                job.decision.researcher,
                job.decision.project,
            )
        except TokenRejected as exc:
            same, why = False, f"token rejected: {exc.reason}"
        else:
            why = "another researcher or project"
        if not same:
            self._audit(job.request, "release.refused", job_id=job.job_id, reason=why)
            raise JobNotFound(f"no job {job.job_id!r} for this caller", site=self.name)

    def close(self) -> None:
        """Stop taking jobs, let running jobs finish into quarantine, then stop (audited)."""
        self._stopping = True
        running = self.running_jobs()
        self._runner.shutdown(wait=True)
        self.cluster.close()
        self.replay.close()
        self.desk.close()
        still_open, _ = self.quarantine.in_memory()
        self.audit.append(
            "site.stopped",
            actor=self.name,
            details={"jobs_finished": running, "jobs_open": still_open},
        )
        self.audit.close()

    def __enter__(self) -> SiteNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _plan(self, request: Request, *, step: str) -> _Plan:
        digest = request.digest()
        self._audit(
            request,
            "request.received",
            step=step,
            analysis=str(request.analysis),
            code_digest=request.analysis.code_digest,
            dataset=request.dataset,
            request_digest=digest,
        )
        stale = self.replay.refusal(request, step)
        if stale is not None:
            self._audit(request, "request.replayed", step=step, reason=stale)
            decision = Decision(
                site=self.name,
                request_id=request.request_id,
                verdict=Verdict.DENY,
                reasons=(stale,),
                policy_digest=self.policy.digest,
            )
            self._audit(
                request,
                "gate.denied",
                step=step,
                verdict=decision.verdict.value,
                reasons=list(decision.reasons),
                policy_digest=decision.policy_digest,
            )
            return _Plan(decision)
        try:
            plan = self._reused(request.gate_digest()) if step == "submit" else None
            reused = plan is not None
            if plan is None:
                plan = self._decide(request)
            elif plan.dataset is not None and plan.tables is not None:
                plan.dataset.check_columns(plan.tables)
        except FedflowError as exc:
            self._invalid(request, step, exc)
            raise
        decision = plan.decision
        self._audit(
            request,
            "gate.allowed" if decision.allowed else "gate.denied",
            step=step,
            actor=decision.researcher,
            verdict=decision.verdict.value,
            reasons=list(decision.reasons),
            rules=list(decision.rules),
            policy_digest=decision.policy_digest,
            project=decision.project,
            purpose=decision.purpose,
            **({"decided_at": "check"} if reused else {}),
        )
        if step == "check" and decision.allowed:
            self._keep(request.gate_digest(), plan)
        return plan

    def _invalid(self, request: Request, step: str, exc: FedflowError) -> None:
        """Audit ``exc`` as ``request`` found invalid at ``step``, and name this site and the
        request on it, for the caller to raise."""
        self._audit(
            request, "request.invalid", step=step, error=type(exc).__name__, message=exc.message
        )
        exc.site, exc.request_id = self.name, request.request_id

    def _open_fit(self, request: Request, job_id: str, plan: _Plan) -> None:
        """Open a fit for the later rounds of an allowed request whose analysis iterates,
        unless its releases need a custodian's review or the differencing defence."""
        analysis = plan.analysis
        if analysis is None or not analysis.iterated or plan.expires_at is None:
            return
        if self.policy.review.applies(analysis.name, analysis.output) or isinstance(
            analysis, CountsCohort
        ):
            return
        assert plan.dataset is not None and plan.tables is not None
        fit = OpenFit(
            job_id=job_id,
            decision=plan.decision,
            analysis=analysis,
            dataset=plan.dataset,
            tables=plan.tables,
            policy=self.policy,
            expires_at=plan.expires_at,
            used=time.monotonic(),
        )
        self.fits.open(request, fit)

    def _keep(self, digest: str, plan: _Plan) -> None:
        """Keep ``check``'s allowing plan for the ``submit`` of the same request."""
        with self._checked_lock:
            self._checked[digest] = _Checked(plan, self.policy, time.monotonic())
            while len(self._checked) > _REUSE_KEPT:
                self._checked.popitem(last=False)

    def _reused(self, digest: str) -> _Plan | None:
        """The plan ``check`` made for this request, if it may still stand (used once)."""
        with self._checked_lock:
            kept = self._checked.pop(digest, None)
        if kept is None or kept.policy is not self.policy:
            return None
        if time.monotonic() - kept.at > REUSE_WITHIN:
            return None
        expires = kept.plan.expires_at
        if expires is None or datetime.now(UTC) >= expires:
            return None
        return kept.plan

    def _decide(self, request: Request) -> _Plan:
        # Authenticate first: an unauthenticated caller learns nothing about analyses or data.
        try:
            identity = verify_token(
                request.token, trusted=self.trusted, audience=self.config.audience
            )
        except TokenRejected as exc:
            decision = Decision(
                site=self.name,
                request_id=request.request_id,
                verdict=Verdict.DENY,
                reasons=(f"token rejected: {exc.reason}",),
                policy_digest=self.policy.digest,
            )
            return _Plan(decision)
        analysis = self.registry.resolve(request.analysis)
        params = analysis.parse_params(request.params)
        tables = analysis.tables(params)
        decision = self.policy.evaluate(
            site=self.name,
            request=request,
            identity=identity,
            analysis=analysis,
            tables=tables,
            params=params,
        )
        if not decision.allowed:
            return _Plan(decision)
        dataset = self.catalogue.get(request.dataset)
        dataset.check_columns(tables)
        # Run at the resolution the policy allows (e.g. a Beacon count as a boolean).
        answered = self.policy.answered_params(params)
        return _Plan(decision, analysis, answered, dataset, tables, identity.expires_at)

    def _execute(self, job: Job, plan: _Plan) -> None:
        assert plan.analysis is not None and plan.dataset is not None and plan.tables is not None
        cohort: Cohort | None = None
        try:
            if self.policy.differencing.enabled and isinstance(plan.analysis, CountsCohort):
                partial, members = self.cluster.run_with_members(
                    plan.analysis, plan.params, plan.dataset, plan.tables
                )
                cohort = Cohort(members, population=plan.dataset.person_count())
            else:
                partial = self.cluster.run(plan.analysis, plan.params, plan.dataset, plan.tables)
            validate_output(job.output, partial)
        except Exception as exc:  # the analysis is foreign code: any failure is the job's
            message = exc.message if isinstance(exc, FedflowError) else type(exc).__name__
            log.warning("job %s of %s failed: %s", job.job_id, job.analysis, message)
            self.quarantine.update(
                job.job_id, state=JobState.FAILED, error=f"analysis failed: {message}"
            )
            self._audit(job.request, "job.failed", job_id=job.job_id, error=message)
        else:
            self.quarantine.update(
                job.job_id, state=JobState.QUARANTINED, partial=partial, cohort=cohort
            )
            self._audit(
                job.request,
                "job.quarantined",
                job_id=job.job_id,
                rows=partial.num_rows,
                partial_digest=digest_json(partial.schema.names),
            )
        finally:
            # Wake the waiters, then forget the event: a finished job's state is in quarantine.
            self._done.pop(job.job_id).set()

    def _audit(
        self, request: Request, event: str, *, actor: str | None = None, **details: Any
    ) -> None:
        self.audit.append(
            event, actor=actor or "orchestrator", request_id=request.request_id, details=details
        )
