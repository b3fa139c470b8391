"""The airlock: statistical disclosure control on a partial before it leaves a site.

:func:`check` dispatches by the analysis's output kind; a kind without rules here is refused.
One module per kind holds its rules:
:mod:`~governance.airlock.frequency`, :mod:`~governance.airlock.summary`,
:mod:`~governance.airlock.models` (GLM and Cox rounds), :mod:`~governance.airlock.survival`
and :mod:`~governance.airlock.magnitude` (dominance).
"""

from __future__ import annotations

import pyarrow as pa

from fedflow.core.analysis import OutputKind
from fedflow.core.controls import Control
from governance.airlock.frequency import check_frequency
from governance.airlock.gwas import check_gwas
from governance.airlock.magnitude import check_magnitude
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
    "check_gwas",
    "check_magnitude",
    "check_regression",
    "check_summary",
    "check_survival",
]

__controls__ = (
    Control(
        "GDPR Art. 25",
        "Statistical disclosure control on every partial before it leaves a site: small-cell "
        "and secondary suppression, refusal of small or saturated models, withheld extremes.",
        tests=(
            "tests/governance/test_airlock.py::test_random_tables_leave_no_suppressed_cell_recoverable",
            "tests/governance/test_airlock_regression.py::test_a_saturated_model_is_refused",
        ),
    ),
    Control(
        "GDPR Art. 5(1)(c)",
        "Only aggregates that passed the site's airlock leave it; person ids never do.",
        tests=(
            "tests/executors/test_node.py::test_released_payloads_hold_no_person_ids_or_birth_dates",
        ),
    ),
    Control(
        "ISO 27001 A.8.11",
        "Cells below the threshold are suppressed, and further cells until none is recoverable.",
        tests=(
            "tests/governance/test_airlock.py::test_two_by_two_with_one_small_cell_suppresses_the_whole_interior",
        ),
    ),
    Control(
        "NIST AC-4",
        "What may leave a site is decided by output kind; a kind without rules is refused.",
        tests=(
            "tests/governance/test_airlock.py::test_invalid_tables_and_unknown_kinds_are_refused",
        ),
    ),
    Control(
        "ISO 27001 A.5.34",
        "Outputs are checked for disclosure of individuals before release.",
        tests=(
            "tests/executors/test_service.py::test_what_leaves_a_site_holds_no_person_ids_or_birth_dates",
        ),
    ),
)


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
    if kind is OutputKind.GWAS:
        return check_gwas(table, threshold=threshold)
    if kind is OutputKind.MAGNITUDE:
        return check_magnitude(table, threshold=threshold)
    return refused(f"the airlock has no disclosure rules for output kind {kind.value!r}")
