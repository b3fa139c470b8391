"""What happened at each site in one federated step, and the step's result.

Every site asked has an outcome in a step's report: released (perhaps with suppression),
refused (by its pre-gate or airlock), held for review, or failed (at which stage, how:
unavailable, timed out, corrupt payload; why; after how many attempts), or skipped when the
flow stopped first. A release taken from a resumed run's checkpoint says so (``reused``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import polars as pl

from fedflow.core.analysis import AnalysisRef

__all__ = ["FederatedResult", "SiteOutcome", "SiteStatus"]


class SiteStatus(StrEnum):
    """A site's part in one step."""

    RELEASED = "released"
    SUPPRESSED = "released_with_suppression"
    REFUSED = "refused"
    REVIEW_PENDING = "review_pending"
    """The site held the result for its custodian's review, undecided when the wait ended."""
    FAILED = "failed"
    """The site failed; ``SiteOutcome.failure`` says how (unavailable, timeout, corrupt
    payload, ...)."""
    SKIPPED = "skipped"
    """Not asked: the flow stopped (``terminate``) before reaching it. A fit's report also
    names the sites it no longer asked by the outcome that dropped them."""


@dataclass(frozen=True)
class SiteOutcome:
    """One site's outcome: its status, why, and the digests of what it released."""

    site: str
    status: SiteStatus
    stage: str
    """Where it was decided: ``gate_before``, ``run``, ``gate_after`` or ``review`` (by the
    site's custodian, for a result held for review), or ``-`` (skipped)."""
    reasons: tuple[str, ...] = ()
    suppressed_cells: int = 0
    job_id: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    """How a failed site failed (:class:`flows.strategy.FailureKind`): ``unavailable``,
    ``timeout``, ``corrupt_payload`` (its release did not verify against its signed receipt),
    ``invalid_request`` or ``error``."""
    attempts: int = 1
    """Tries of the stage that decided (more than one when a transient failure was retried)."""
    round: int | None = None
    """The round of a fit in which this was decided (None for a single step)."""
    reused: bool = False
    """Taken, verified, from the checkpoint of an earlier run (``resume``)."""

    @property
    def contributed(self) -> bool:
        return self.status in (SiteStatus.RELEASED, SiteStatus.SUPPRESSED)

    def row(self) -> dict[str, Any]:
        """A flat row for tables and artifacts."""
        return {
            "site": self.site,
            "outcome": self.status.value,
            "stage": self.stage,
            "suppressed_cells": self.suppressed_cells,
            "failure": self.failure,
            "attempts": self.attempts,
            "round": self.round,
            "reused": self.reused,
            "reasons": "; ".join(self.reasons),
        }


@dataclass(frozen=True)
class FederatedResult:
    """The merged, finalized result of one federated step, with its per-site outcomes."""

    analysis: AnalysisRef
    request_id: str
    params: dict[str, Any]
    dataset: str
    result: pl.DataFrame
    outcomes: list[SiteOutcome]
    result_digest: str

    @property
    def sites_contributing(self) -> list[str]:
        return [o.site for o in self.outcomes if o.contributed]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document: the result rows, the per-site outcomes and the lineage."""
        return {
            "analysis": str(self.analysis),
            "code_digest": self.analysis.code_digest,
            "request_id": self.request_id,
            "dataset": self.dataset,
            "params": self.params,
            "result": self.result.to_dicts(),
            "sites": [
                {**asdict(o), "status": o.status.value, "reasons": list(o.reasons)}
                for o in self.outcomes
            ],
            "result_digest": self.result_digest,
        }
