"""Federated Kaplan-Meier with the log-rank test: one federated step, then the test centrally.

The ``kaplan_meier`` analysis (:mod:`flows.analyses.km`) returns the merged events and
censorings per group on the time grid; the curve is its finalized result, and the log-rank
test is computed here from the same merged counts, so both equal the pooled gridded answer::

    km = run_km({"entry": ..., "event": ..., "groups": {...}, "interval_days": 30},
                federation=federation)
    km.curve        # group, interval, days, at_risk, events, censored, survival, SE, CI
    km.logrank      # {"chi2": ..., "df": ..., "p_value": ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fedflow.core import survival
from flows.analyses.km import logrank
from flows.federated import run_analysis
from flows.federation import FederationSession
from flows.outcomes import FederatedResult

__all__ = ["KmResult", "run_km"]


@dataclass(frozen=True)
class KmResult:
    """The Kaplan-Meier curves, the log-rank test and the step they came from."""

    curve: pl.DataFrame
    logrank: dict[str, float] | None
    """None when fewer than two groups released counts."""
    step: FederatedResult

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document: the step's document plus the log-rank test."""
        return {**self.step.to_dict(), "logrank": self.logrank}


def run_km(
    params: Mapping[str, Any],
    *,
    federation: FederationSession | Path | str,
    dataset: str | None = None,
    min_sites: int = 1,
    token: str | None = None,
) -> KmResult:
    """Run ``kaplan_meier`` over a federation and test the groups with the log-rank test."""
    step = run_analysis(
        "kaplan_meier",
        params,
        federation=federation,
        dataset=dataset,
        min_sites=min_sites,
        token=token,
    )
    counts = step.result.select("group", "interval", "events", "censored").to_arrow()
    counts = counts.cast(survival.SCHEMA)
    test = logrank(counts) if step.result["group"].n_unique() > 1 else None
    return KmResult(curve=step.result, logrank=test, step=step)
