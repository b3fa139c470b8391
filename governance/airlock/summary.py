"""**Summaries** (:mod:`fedflow.core.summary`). Fewer than ``threshold`` persons: refused. The
minimum and maximum are single persons' values and are withheld unless the policy releases
extremes. The quantile sketch is coarsened in value order into runs of at least ``threshold``
counts, each kept as one bucket at the key of its largest bucket (a short final run joins the
one before), so no bucket counts fewer than ``threshold`` values. (The sketch counts values,
not persons: when a person contributes several values a bucket may stand for fewer persons.)
"""

from __future__ import annotations

import pyarrow as pa

from fedflow.core import summary
from fedflow.core.errors import InvalidRequest
from governance.airlock.result import AirlockResult, Outcome, check_threshold, refused

__all__ = ["check_summary"]


def check_summary(
    table: pa.Table, *, threshold: int, release_extremes: bool = False
) -> AirlockResult:
    """Refuse small summaries, withhold extremes, coarsen the sketch (see the module docstring)."""
    check_threshold(threshold)
    try:
        summary.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid summary partial: {exc.message}")
    n, persons = int(table["n"][0].as_py()), int(table["persons"][0].as_py())
    if persons < threshold:
        return refused(f"{persons} persons is below the threshold of {threshold}")
    buckets = summary.ordered_buckets(table)
    if sum(b[2] for b in buckets) != n or any(b[2] <= 0 for b in buckets):
        return refused("the quantile sketch does not account for the summary's values")
    suppressed, reasons = 0, []
    if not release_extremes:
        empty = pa.array([None], pa.float64())
        table = table.set_column(table.column_names.index("min"), "min", empty)
        table = table.set_column(table.column_names.index("max"), "max", empty)
        suppressed += 2
        reasons.append("minimum and maximum withheld by policy")
    coarse = _coarsen(buckets, threshold)
    merged = len(buckets) - len(coarse)
    if merged:
        table = summary.with_buckets(table, coarse)
        suppressed += merged
        reasons.append(
            f"{merged} sketch buckets merged into neighbours so each holds at least {threshold}"
        )
    outcome = Outcome.SUPPRESSED if suppressed else Outcome.RELEASED
    return AirlockResult(outcome, table, suppressed, tuple(reasons))


def _coarsen(buckets: list[summary.Bucket], threshold: int) -> list[summary.Bucket]:
    runs: list[list[summary.Bucket]] = []
    current: list[summary.Bucket] = []
    for bucket in buckets:
        current.append(bucket)
        if sum(b[2] for b in current) >= threshold:
            runs.append(current)
            current = []
    if current:
        if runs:
            runs[-1].extend(current)
        else:
            runs.append(current)
    coarse = []
    for run in runs:
        sign, key, _ = max(run, key=lambda b: b[2])  # first largest bucket on ties
        coarse.append((sign, key, sum(b[2] for b in run)))
    return coarse
