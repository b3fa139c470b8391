"""The format of each output kind's partial, and the check that a partial has it.

A site runs this check before a partial enters quarantine, so the airlock only ever sees
partials of the kind the analysis declared.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from fedflow.core import cox, frequency, gwas, magnitude, regression, summary, survival
from fedflow.core.analysis import OutputKind
from fedflow.core.errors import InvalidRequest

__all__ = ["validate"]

_VALIDATORS: dict[OutputKind, Callable[[pa.Table], None]] = {
    OutputKind.FREQUENCY: frequency.validate,
    OutputKind.SUMMARY: summary.validate,
    OutputKind.REGRESSION: regression.validate,
    OutputKind.SURVIVAL: survival.validate,
    OutputKind.COX: cox.validate,
    OutputKind.GWAS: gwas.validate,
    OutputKind.MAGNITUDE: magnitude.validate,
}


def validate(kind: OutputKind, table: pa.Table) -> None:
    """Raise :class:`InvalidRequest` unless ``table`` is a partial of ``kind``."""
    validator = _VALIDATORS.get(kind)
    if validator is None:
        raise InvalidRequest(f"output kind {kind.value!r} has no partial format")
    validator(table)
