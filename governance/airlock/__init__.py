"""The airlock: statistical disclosure control on a partial before it leaves a site.

:func:`check` dispatches by the analysis's output kind; a kind without rules here is refused.
One module per kind holds its rules:
:mod:`~governance.airlock.frequency`, :mod:`~governance.airlock.summary`,
:mod:`~governance.airlock.models` (GLM and Cox rounds) and :mod:`~governance.airlock.survival`.
"""

from __future__ import annotations

import pyarrow as pa

from fedflow.core.analysis import OutputKind
from governance.airlock.frequency import check_frequency
from governance.airlock.models import check_cox, check_regression
from governance.airlock.result import (
    MAX_PARAMETERS_PER_OBSERVATION,
    AirlockResult,
    Outcome,
    check_threshold,
    refused,
)
from governance.airlock.summary import check_summary
from governance.airlock.survival import check_survival

__all__ = [
    "MAX_PARAMETERS_PER_OBSERVATION",
    "AirlockResult",
    "Outcome",
    "check",
    "check_cox",
    "check_frequency",
    "check_regression",
    "check_summary",
    "check_survival",
]


def check(
    kind: OutputKind | str, table: pa.Table, *, threshold: int, release_extremes: bool = False
) -> AirlockResult:
    """Apply the disclosure rules of ``kind`` to ``table`` at the site's ``threshold``."""
    check_threshold(threshold)
    try:
        kind = OutputKind(kind)
    except ValueError:
        return refused(f"the airlock has no disclosure rules for output kind {kind!r}")
    if kind is OutputKind.FREQUENCY:
        return check_frequency(table, threshold=threshold)
    if kind is OutputKind.SUMMARY:
        return check_summary(table, threshold=threshold, release_extremes=release_extremes)
    if kind is OutputKind.REGRESSION:
        return check_regression(table, threshold=threshold)
    if kind is OutputKind.SURVIVAL:
        return check_survival(table, threshold=threshold)
    if kind is OutputKind.COX:
        return check_cox(table, threshold=threshold)
    return refused(f"the airlock has no disclosure rules for output kind {kind.value!r}")
