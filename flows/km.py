"""Federated Kaplan-Meier with the log-rank test: one federated step, then the test centrally.

The ``kaplan_meier`` analysis (:mod:`flows.analyses.km`) returns the merged events and
censorings per group on the time grid; the curve is its finalized result, and the log-rank
test is computed here from the same merged counts, so both equal the pooled gridded answer::

    km = run_km({"entry": ..., "event": ..., "groups": {...}, "interval_days": 30},
                federation=federation)
    km.curve        # group, interval, days, at_risk, events, censored, survival, SE, CI
    km.logrank      # {"chi2": ..., "df": ..., "p_value": ...}
    km.plot(Path("km.png"))   # the curves with their confidence bands, as a PNG

The plot is drawn from the merged curve only (what the orchestrator already holds), with
matplotlib's Agg renderer: no display, no global pyplot state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fedflow.core import survival
from flows.analyses.km import logrank
from flows.federated import run_analysis
from flows.federation import FederationSession
from flows.outcomes import FederatedResult
from flows.strategy import StepPolicy

__all__ = ["KmResult", "plot_km", "run_km"]


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

    def plot(self, path: Path, *, title: str | None = None) -> Path:
        """Write the curves with confidence bands as a PNG (see :func:`plot_km`)."""
        return plot_km(self.curve, path, title=title, logrank=self.logrank)


def run_km(
    params: Mapping[str, Any],
    *,
    federation: FederationSession | Path | str,
    dataset: str | None = None,
    min_sites: int = 1,
    token: str | None = None,
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> KmResult:
    """Run ``kaplan_meier`` over a federation and test the groups with the log-rank test.

    ``policy`` and ``resume`` as for any step (:func:`flows.federated.run_analysis`).
    """
    step = run_analysis(
        "kaplan_meier",
        params,
        federation=federation,
        dataset=dataset,
        min_sites=min_sites,
        token=token,
        policy=policy,
        resume=resume,
    )
    counts = step.result.select("group", "interval", "events", "censored").to_arrow()
    counts = counts.cast(survival.SCHEMA)
    test = logrank(counts) if step.result["group"].n_unique() > 1 else None
    return KmResult(curve=step.result, logrank=test, step=step)


def plot_km(
    curve: pl.DataFrame,
    path: Path,
    *,
    title: str | None = None,
    logrank: Mapping[str, float] | None = None,
) -> Path:
    """Draw Kaplan-Meier step curves by group with their confidence bands; write a PNG.

    ``curve`` is :attr:`KmResult.curve` (group, days, survival, ci_low, ci_high). Each curve
    starts at 1 on day 0; where the survival is still 1 the interval is undefined and the band
    has no width.
    """
    from matplotlib.figure import Figure  # imported here: only plotting needs matplotlib

    figure = Figure(figsize=(7, 4.5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for (group,), rows in curve.sort("group", "days").group_by("group", maintain_order=True):
        days = np.concatenate([[0.0], rows["days"].to_numpy().astype(float)])
        survival = np.concatenate([[1.0], rows["survival"].to_numpy()])
        bounds = []
        for column in ("ci_low", "ci_high"):
            values = np.concatenate([[1.0], rows[column].to_numpy().astype(float)])
            bounds.append(np.where(np.isfinite(values), values, survival))
        (line,) = axes.step(days, survival, where="post", label=str(group))
        low, high = bounds
        axes.fill_between(days, low, high, step="post", alpha=0.2, color=line.get_color())
    axes.set_xlabel("days since entry (rounded up to the grid)")
    axes.set_ylabel("survival")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(title="group")
    if logrank is not None:
        title = (title or "Kaplan-Meier") + (
            f" (log-rank chi² {logrank['chi2']:.2f}, df {logrank['df']:g}, "
            f"p {logrank['p_value']:.3g})"
        )
    axes.set_title(title or "Kaplan-Meier", fontsize=10)
    path = Path(path)
    figure.savefig(path, format="png")
    return path
