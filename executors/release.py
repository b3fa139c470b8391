"""The site's release decision: the airlock, the differencing defence and human review.

:class:`ReleaseDesk` turns a quarantined job into a signed :class:`Release`. At a site whose
policy opts in to differential privacy (:mod:`governance.privacy`), OpenDP noise comes first
and is charged to the project's budget on the dataset; then the airlock's rules for the job's
output kind. For an analysis that counts a cohort, the
differencing defence (:mod:`governance.differencing`) then refuses a count whose cohort is
within ``k - 1`` persons of one already released to the same project, or of the whole
dataset; a released cohort enters the site's ledger. When the policy's ``review`` section holds
the result for a custodian (:mod:`governance.review`), a release the airlock would allow is
filed in the site's review queue instead, and every release call answers ``review`` (pending,
signed) until the custodian decides: then the table exactly as reviewed, or a refusal with the
reviewer's reason. Each decision is audited; the receipt signs the digests of the request, the
decision, the policy, the dataset snapshot, the code and the result.

When the request names a mask group (secure aggregation, :mod:`fedflow.core.secagg`), the
partial is masked last, after every check and decision, and the result digest (audited and
signed) is the masked payload's. A frequency table then gets only the airlock's structural
checks here: its small cells are not suppressed at the site, because the orchestrator sees
only the group's sum and suppresses the merged totals at the federation's threshold (the
largest ``min_cell_count`` of the group, which each site states in its masked release).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executors.agreement import AgreementKey, secure_refusal
from executors.quarantine import Job, Quarantine
from fedflow.core import to_ipc
from fedflow.core.analysis import OutputKind
from fedflow.core.digest import digest_bytes
from fedflow.core.messages import JobState, Release, ReleaseOutcome
from fedflow.core.secagg import SecureAggregationError
from governance.airlock import AirlockResult, Outcome
from governance.airlock import check as airlock_check
from governance.differencing import DifferencingLedger, total_released
from governance.policy import SitePolicy
from governance.privacy import PrivacyLedger, privatize
from governance.receipts import ReceiptKey
from governance.review import ReviewItem, ReviewQueue, ReviewState

__all__ = ["ReleaseDesk"]

Audit = Callable[..., None]
"""How the desk audits: ``audit(request, event, **details)`` (the node's audit helper)."""


class ReleaseDesk:
    """Decides, signs and records what a site's quarantined jobs release."""

    def __init__(
        self,
        *,
        site: str,
        policy: SitePolicy,
        quarantine: Quarantine,
        receipt_key: ReceiptKey,
        state_dir: Path,
        audit: Audit,
        agreement_key: AgreementKey | None = None,
    ) -> None:
        self.name = site
        self.policy = policy
        self.quarantine = quarantine
        self.receipt_key = receipt_key
        self.agreement_key = agreement_key or AgreementKey.load_or_create(
            state_dir / "agreement.key.pem"
        )
        self.differencing = DifferencingLedger(state_dir / "differencing.db")
        self.reviews = ReviewQueue(state_dir / "review.db")
        self.privacy = PrivacyLedger(state_dir / "privacy.db")
        self._review_lock = threading.Lock()
        self._audit = audit

    def release(self, job: Job) -> Release:
        """Decide on quarantined ``job`` (or return its earlier release) and sign the answer."""
        # Cohort releases one at a time against the ledger: two near-identical cohorts
        # released concurrently must not both pass a check that saw neither.
        # A held result is decided once: concurrent calls must not both release it.
        held = self.policy.review.applies(job.analysis.name, job.output)
        with (
            self.differencing.lock if job.cohort is not None else nullcontext(),
            self._review_lock if held else nullcontext(),
        ):
            return self._release(job.job_id)

    def close(self) -> None:
        self.differencing.close()
        self.reviews.close()
        self.privacy.close()

    def _release(self, job_id: str) -> Release:
        job = self.quarantine.get(job_id)
        if job.release is not None:  # released by a concurrent call
            return job.release
        assert job.partial is not None
        held = self.reviews.get(job_id)
        review: dict[str, Any] = {}
        if held is None:
            result = self._differencing(job) or self._secure_refusal(job) or self._checked(job)
            if result.outcome is not Outcome.REFUSED and self.policy.review.applies(
                job.analysis.name, job.output
            ):
                return self._hold(job, result)
        elif held.state is ReviewState.PENDING:
            return self._pending(job, held)
        else:
            result = self._reviewed(job, held)
            review = {"review": held.decision()}
        return self._decided(job, result, held, review)

    def release_step(self, job: Job) -> Release:
        """Decide on the partial of a fit's step (:meth:`executors.node.SiteNode.step`), which
        is not in quarantine yet: it is stored there once, finished. A step is never held for
        review and never counts a cohort (the node opens no fit for those)."""
        assert job.partial is not None and job.cohort is None
        return self._decided(job, self._secure_refusal(job) or self._checked(job), None, {})

    def _decided(
        self, job: Job, result: AirlockResult, held: ReviewItem | None, review: dict[str, Any]
    ) -> Release:
        """Mask, sign, store and audit the airlock's ``result`` for ``job``."""
        result, secure = self._masked(job, result)
        payload = None if result.table is None else to_ipc(result.table)
        digests = self._digests(job, payload)
        if held is not None and held.state is not ReviewState.PENDING:
            digests["review"] = held.decision_digest()
        release = self._signed(
            job, result.outcome, result.suppressed_cells, result.reasons, payload, digests
        )
        assert release.receipt is not None
        issued = release.receipt.issued_at.isoformat()
        refused = release.outcome is ReleaseOutcome.REFUSED
        job_id = job.job_id
        self.quarantine.put(
            dataclasses.replace(
                job,
                state=JobState.REFUSED if refused else JobState.RELEASED,
                release=release,
                cohort=None,  # the ids are kept only while the release is undecided
            )
        )
        cohort: dict[str, Any] = {}
        if job.cohort is not None and self.policy.differencing.enabled:
            # Only a cohort whose count left the site enters the ledger.
            recorded = not refused and total_released(result.table)
            if recorded:
                self.differencing.record(
                    project=job.decision.project or "",
                    dataset=job.request.dataset,
                    job_id=job_id,
                    cohort=job.cohort,
                )
            cohort = {"differencing": "recorded" if recorded else "not recorded"}
        self._audit(
            job.request,
            "airlock.refused" if refused else "airlock.released",
            job_id=job_id,
            outcome=release.outcome.value,
            suppressed_cells=release.suppressed_cells,
            reasons=list(release.reasons),
            digests=digests,
            receipt={"key_id": release.receipt.key_id, "issued_at": issued},
            **cohort,
            **review,
            **secure,
        )
        return release

    def _site_threshold(self, job: Job) -> int:
        """The airlock's threshold here: 1 (structure only) for a frequency table summed
        securely, whose merged totals the orchestrator suppresses; else the site's own."""
        if job.request.secure is not None and job.output is OutputKind.FREQUENCY:
            return 1
        return self.policy.min_cell_count

    def _secure_refusal(self, job: Job) -> AirlockResult | None:
        reason = secure_refusal(
            job.request,
            job.output,
            site=self.name,
            key=self.agreement_key,
            policy=self.policy.secure_aggregation,
        )
        return None if reason is None else AirlockResult(Outcome.REFUSED, None, 0, (reason,))

    def _masked(self, job: Job, result: AirlockResult) -> tuple[AirlockResult, dict[str, Any]]:
        """``result`` with its table masked for the request's group (and what to audit)."""
        spec = job.request.secure
        if spec is None or result.table is None:
            return result, {}
        try:
            table = self.agreement_key.mask(
                result.table,
                job.output,
                site=self.name,
                request=job.request,
                threshold=self.policy.min_cell_count,
            )
        except SecureAggregationError as exc:
            return AirlockResult(Outcome.REFUSED, None, 0, (exc.message,)), {}
        note = (
            f"masked for secure aggregation with {len(spec.group)} sites "
            f"({', '.join(spec.sites)}); the orchestrator sees only their sum"
        )
        masked = AirlockResult(
            result.outcome, table, result.suppressed_cells, (note, *result.reasons)
        )
        # Only the group is audited: a digest of the plain table would let anyone who reads the
        # audit trail test guesses of a small count.
        return masked, {"secure": {"group": spec.sites}}

    def _digests(self, job: Job, payload: bytes | None) -> dict[str, str]:
        return {
            "request": job.request.digest(),
            "decision": job.decision.digest(),
            "policy": self.policy.digest,
            "dataset": job.dataset_digest,
            "code": job.analysis.code_digest,
            "result": digest_bytes(payload) if payload is not None else "",
        }

    def _signed(
        self,
        job: Job,
        outcome: Outcome,
        suppressed: int,
        reasons: tuple[str, ...],
        payload: bytes | None,
        digests: dict[str, str],
    ) -> Release:
        release = Release(
            site=self.name,
            request_id=job.request.request_id,
            job_id=job.job_id,
            outcome=ReleaseOutcome(outcome.value),
            suppressed_cells=suppressed,
            reasons=reasons,
            partial=payload,
            digests=digests,
        )
        return release.model_copy(update={"receipt": self.receipt_key.sign(release)})

    def _hold(self, job: Job, result: AirlockResult) -> Release:
        """File a result the airlock would release in the review queue; answer pending."""
        assert result.table is not None
        payload = to_ipc(result.table)
        item, created = self.reviews.hold(
            ReviewItem(
                job_id=job.job_id,
                site=self.name,
                request_id=job.request.request_id,
                analysis=str(job.analysis),
                output_kind=job.output.value,
                dataset=job.request.dataset,
                project=job.decision.project or "",
                researcher=job.decision.researcher or "",
                purpose=job.decision.purpose or "",
                outcome=result.outcome.value,
                suppressed_cells=result.suppressed_cells,
                reasons=result.reasons,
                result=payload,
                result_digest=digest_bytes(payload),
                created_at=datetime.now(UTC).isoformat(),
            )
        )
        if created:
            self._audit(
                job.request,
                "airlock.review",
                job_id=job.job_id,
                outcome=item.outcome,
                suppressed_cells=item.suppressed_cells,
                reasons=list(item.reasons),
                result_digest=item.result_digest,
            )
        return self._pending(job, item)

    def _pending(self, job: Job, item: ReviewItem) -> Release:
        """The signed answer for a held result: pending, with no payload."""
        reason = f"held for review by the custodian of site {self.name} since {item.created_at}"
        return self._signed(
            job, Outcome.REVIEW, item.suppressed_cells, (reason,), None, self._digests(job, None)
        )

    def _reviewed(self, job: Job, item: ReviewItem) -> AirlockResult:
        """The airlock's result after the custodian's decision on a held result."""
        if item.state is ReviewState.REJECTED:
            why = f"rejected by the reviewer of site {self.name}: {item.reason}"
            return AirlockResult(Outcome.REFUSED, None, 0, (why,))
        # The ledger may have changed while the result waited: check the cohort again.
        refusal = self._differencing(job)
        if refusal is not None:
            return refusal
        approved = f"approved by the reviewer of site {self.name}"
        reasons = (*item.reasons, approved + (f": {item.reason}" if item.reason else ""))
        return AirlockResult(Outcome(item.outcome), item.table(), item.suppressed_cells, reasons)

    def _checked(self, job: Job) -> AirlockResult:
        """Noise where the site's privacy section applies (charging its budget), then the
        airlock's rules for the output kind."""
        assert job.partial is not None
        noised = privatize(
            job.output,
            job.partial,
            self.policy.privacy,
            self.privacy,
            site=self.name,
            project=job.decision.project or "",
            dataset=job.request.dataset,
            job_id=job.job_id,
        )
        if noised.table is None:
            return noised
        result = airlock_check(
            job.output,
            noised.table,
            threshold=self._site_threshold(job),
            release_extremes=self.policy.release_extremes,
        )
        return dataclasses.replace(result, reasons=(*noised.reasons, *result.reasons))

    def _differencing(self, job: Job) -> AirlockResult | None:
        """The differencing defence's refusal of ``job``'s count, or None if it may go on."""
        rule = self.policy.differencing
        if job.cohort is None or not rule.enabled:
            return None
        reason = self.differencing.refusal(
            project=job.decision.project or "",
            dataset=job.request.dataset,
            cohort=job.cohort,
            k=rule.k_for(self.policy.min_cell_count),
        )
        return None if reason is None else AirlockResult(Outcome.REFUSED, None, 0, (reason,))
