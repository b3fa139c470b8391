"""**Regression rounds** (:mod:`fedflow.core.regression`) are released whole or refused, never
altered (a changed sum would make the federated fit wrong). Refused when the site has fewer
than ``threshold`` observations; when the model is saturated (no residual degrees of
freedom: as many parameters as observations, so the fit reproduces the data); when the
residual degrees of freedom are below ``threshold``; when there are more than
:data:`MAX_PARAMETERS_PER_OBSERVATION` parameters per observation (DataSHIELD's
``nfilter.glm``); for a binary outcome, when cases or non-cases number fewer than
``threshold``; for a count outcome, when the events number fewer than ``threshold``; and when
an indicator (0/1) design column is 1, or 0, for fewer than ``threshold`` observations (so no
small cell of the design, such as exposed women, can be read from XᵀWX).

**Cox rounds** (:mod:`fedflow.core.cox`) are released whole or refused, for the reasons of
GLM rounds and survival grids: refused when the site has fewer than ``threshold`` persons or
events; when there are more than :data:`MAX_PARAMETERS_PER_OBSERVATION` parameters per event;
when any grid point holds between 1 and ``threshold - 1`` events or censorings (the events and
the risk-set sizes per grid point are the same counts a Kaplan-Meier grid shows); and when an
indicator (0/1) design column is 1, or 0, for fewer than ``threshold`` persons.
"""

from __future__ import annotations

import pyarrow as pa

from fedflow.core import cox, regression
from fedflow.core.errors import InvalidRequest
from governance.airlock.result import (
    MAX_PARAMETERS_PER_OBSERVATION,
    AirlockResult,
    Outcome,
    check_threshold,
    refused,
)

__all__ = ["check_cox", "check_regression"]


def check_regression(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a GLM round's statistics whole, or refuse them (see the module docstring)."""
    check_threshold(threshold)
    try:
        regression.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid regression partial: {exc.message}")
    row = table.to_pylist()[0]
    n, p, columns = row["n"], len(row["columns"]), row["columns"]
    reasons = []
    if n < threshold:
        reasons.append(f"{n} observations is below the threshold of {threshold}")
    if n <= p:
        reasons.append(f"saturated model: {p} parameters for {n} observations")
    elif n - p < threshold:
        reasons.append(f"{n - p} residual degrees of freedom is below the threshold of {threshold}")
    if n and p / n > MAX_PARAMETERS_PER_OBSERVATION:
        reasons.append(
            f"{p / n:.2f} parameters per observation exceeds {MAX_PARAMETERS_PER_OBSERVATION:g}"
        )
    if row["family"] == "binomial":
        for label, count in (("cases", row["y_one"]), ("non-cases", row["y_zero"])):
            if count < threshold:
                reasons.append(f"{count} {label} is below the threshold of {threshold}")
    if row["family"] == "poisson" and row["y_sum"] < threshold:
        reasons.append(f"{row['y_sum']:g} events is below the threshold of {threshold}")
    for column, ones in zip(columns, row["indicator_ones"], strict=True):
        if ones is not None and (0 < ones < threshold or 0 < n - ones < threshold):
            reasons.append(
                f"indicator column {column!r} has a cell below the threshold of {threshold}"
            )
    if reasons:
        return AirlockResult(Outcome.REFUSED, None, 0, tuple(reasons))
    return AirlockResult(Outcome.RELEASED, table, 0, ())


def check_cox(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a Cox round's risk-set sums whole, or refuse them (see the module docstring)."""
    check_threshold(threshold)
    try:
        cox.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid Cox partial: {exc.message}")
    row = table.to_pylist()[0]
    events, at_risk = row["events"], row["at_risk"]
    n, total, p = at_risk[0], sum(events), len(row["columns"])
    reasons = []
    if n < threshold:
        reasons.append(f"{n} persons is below the threshold of {threshold}")
    if total < threshold:
        reasons.append(f"{total} events is below the threshold of {threshold}")
    if total == 0 or p / total > MAX_PARAMETERS_PER_OBSERVATION:
        reasons.append(
            f"{p} parameters for {total} events exceeds "
            f"{MAX_PARAMETERS_PER_OBSERVATION:g} parameters per event"
        )
    later = [*at_risk[1:], 0]
    censored = [r - r_next - e for r, r_next, e in zip(at_risk, later, events, strict=True)]
    if any(c < 0 for c in censored):
        return refused("the Cox partial's numbers at risk do not account for its events")
    cells = sum(0 < c < threshold for c in (*events, *censored))
    if cells:
        reasons.append(
            f"{cells} grid cells below the threshold of {threshold} (ask for a coarser grid)"
        )
    for column, ones in zip(row["columns"], row["indicator_ones"], strict=True):
        if ones is not None and (0 < ones < threshold or 0 < n - ones < threshold):
            reasons.append(
                f"indicator column {column!r} has a cell below the threshold of {threshold}"
            )
    if reasons:
        return AirlockResult(Outcome.REFUSED, None, 0, tuple(reasons))
    return AirlockResult(Outcome.RELEASED, table, 0, ())
