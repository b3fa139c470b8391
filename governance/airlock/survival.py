"""**Survival grids** (:mod:`fedflow.core.survival`) are released whole or refused: refused when
a group has fewer than ``threshold`` persons, or when any grid point holds between 1 and
``threshold - 1`` events or censorings (a coarser grid, which the researcher asks for, cures
it). Suppressing a cell instead would change the numbers at risk after it.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from fedflow.core import survival
from fedflow.core.errors import InvalidRequest
from governance.airlock.result import AirlockResult, Outcome, check_threshold, refused

__all__ = ["check_survival"]


def check_survival(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a gridded survival partial whole, or refuse it (see the module docstring)."""
    check_threshold(threshold)
    try:
        survival.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid survival partial: {exc.message}")
    reasons = []
    totals: dict[str, int] = defaultdict(int)
    small: dict[str, int] = defaultdict(int)
    for row in table.to_pylist():
        totals[row["group"]] += row["events"] + row["censored"]
        for count in (row["events"], row["censored"]):
            if 0 < count < threshold:
                small[row["group"]] += 1
    for group, total in sorted(totals.items()):
        if total < threshold:
            reasons.append(
                f"group {group!r}: {total} persons is below the threshold of {threshold}"
            )
    for group, cells in sorted(small.items()):
        reasons.append(
            f"group {group!r}: {cells} grid cells below the threshold of {threshold} "
            "(ask for a coarser grid)"
        )
    if reasons:
        return AirlockResult(Outcome.REFUSED, None, 0, tuple(reasons))
    return AirlockResult(Outcome.RELEASED, table, 0, ())
