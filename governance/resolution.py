"""How fine a result may be: a survival time grid's minimum step and a Beacon's granularity.

Two sections of the site policy limit the resolution of what leaves the site, decided at the
pre-gate from the request's parameters (so nothing runs that could not leave):

``survival: {min_interval_days: N}``
    A survival or Cox analysis (output kind ``survival`` or ``cox``) whose time grid
    (``interval_days``) is finer than ``N`` days is refused, so no single event time leaves
    the site through a fine grid. Default: no minimum beyond the airlock's cell checks.
``beacon: {granularity: boolean | count}``
    A Beacon v2 query (``requestedGranularity``) asking for ``count`` at a ``boolean`` site is
    answered at boolean granularity (only whether a carrier exists leaves), as Beacon v2 lets a
    beacon return a lower ``returnedGranularity`` than requested. Default: ``count``.

The checks read parameters by their names, not the analyses' classes: governance does not
depend on the flows that define them.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fedflow.core.analysis import OutputKind, Params

__all__ = ["BeaconPolicy", "Check", "SurvivalPolicy"]

Check = tuple[bool, str, str]
"""A gate check: passed, its reason, and the rule that passed (empty when it failed)."""
GRIDDED = frozenset({OutputKind.SURVIVAL, OutputKind.COX})
"""Output kinds computed on a time grid of ``interval_days``."""
P = TypeVar("P", bound=Params)


class SurvivalPolicy(BaseModel):
    """The policy's ``survival`` section: the finest time grid this site releases."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_interval_days: int | None = Field(default=None, ge=1, le=36500)
    """The smallest ``interval_days`` a survival or Cox request may ask for (None: any)."""

    def check(self, label: str, kind: OutputKind, params: Params | None) -> Check | None:
        """The grid check for a request of ``kind`` with ``params`` (None: not applicable)."""
        minimum = self.min_interval_days
        if minimum is None or kind not in GRIDDED:
            return None
        interval = getattr(params, "interval_days", None)
        rule = "survival.min_interval_days"
        floor = f"this site's minimum of {minimum} days"
        if not isinstance(interval, int):
            return False, f"{label} names no time grid (interval_days) to check against {floor}", ""
        if interval < minimum:
            return False, f"time grid of {interval} days is finer than {floor} ({rule})", ""
        return True, f"time grid of {interval} days meets {floor}", rule


class BeaconPolicy(BaseModel):
    """The policy's ``beacon`` section: the finest Beacon v2 granularity this site answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    granularity: Literal["boolean", "count"] = "count"
    """``count``: carriers are counted (the airlock still suppresses small counts);
    ``boolean``: only whether a carrier exists leaves the site."""

    def check(self, params: Params | None) -> Check | None:
        """The reason a Beacon query is answered more coarsely here (None: as requested)."""
        if not self._downgrades(params):
            return None
        why = "count granularity is not released at this site: answered at boolean granularity"
        return True, why, "beacon.granularity"

    def answered(self, params: P) -> P:
        """``params`` as this site runs them: a count query becomes a boolean one if need be."""
        if not self._downgrades(params):
            return params
        return params.model_copy(update={"requestedGranularity": "boolean"})

    def _downgrades(self, params: Params | None) -> bool:
        requested = getattr(params, "requestedGranularity", None)
        return self.granularity == "boolean" and requested == "count"
