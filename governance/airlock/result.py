"""The airlock's verdict (:class:`AirlockResult`), its outcomes, and what all kinds share."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

from governance.errors import PolicyInvalid

__all__ = [
    "MAX_PARAMETERS_PER_OBSERVATION",
    "TOLERANCE",
    "AirlockResult",
    "Outcome",
    "check_threshold",
    "refused",
]


TOLERANCE = 1e-9
MAX_PARAMETERS_PER_OBSERVATION = 0.33
"""DataSHIELD's ``nfilter.glm``: at most this many parameters per observation (or event)."""


class Outcome(StrEnum):
    """What the airlock did with a partial."""

    RELEASED = "released"
    SUPPRESSED = "released_with_suppression"
    REVIEW = "review"
    """Held at the site for a custodian's decision (see :mod:`governance.review`)."""
    REFUSED = "refused"


@dataclass(frozen=True)
class AirlockResult:
    """The airlock's verdict: the table to release (None when refused) and why."""

    outcome: Outcome
    table: pa.Table | None
    suppressed_cells: int
    reasons: tuple[str, ...]


def check_threshold(threshold: int) -> None:
    """Raise :class:`PolicyInvalid` unless ``threshold`` is a non-negative integer."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise PolicyInvalid("the minimum cell count must be a non-negative integer")


def refused(reason: str) -> AirlockResult:
    """A refusal for one ``reason``."""
    return AirlockResult(Outcome.REFUSED, None, 0, (reason,))
