"""The orchestrator's side of secure aggregation (see ``docs/secure-aggregation.md``).

A step whose output is additive (:data:`fedflow.core.secagg.MASKABLE`) runs with secure
aggregation by default when two or more sites take part: :func:`mask_spec` names the sites
that passed the pre-gate and their published X25519 keys (the mask group) and, for a frequency
table, the key set agreed before anything is masked (:func:`agreed_cells`). Each site masks its
partial at release; :func:`combine` sums the masked partials (the masks cancel only over the
whole group) and, for a frequency table, applies the airlock's primary and secondary
suppression to the merged totals at the federation's threshold, the largest ``min_cell_count``
among the group's sites.

A frequency table with dimensions is masked only when its key set is known before it runs:
given by the caller (``cells``), or declared by the analysis (:class:`~fedflow.core.secagg.
FixedCells`); otherwise the step runs in the clear, each site suppressing its own small cells.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from executors import SiteTransport
from fedflow.core import Analysis, OutputKind, frequency, secagg
from fedflow.core.messages import MaskMember, MaskSpec
from flows.errors import FlowError, QuorumNotMet
from flows.outcomes import SiteOutcome
from governance.airlock import Outcome, check_frequency

__all__ = [
    "MaskGroupIncomplete",
    "SecureAggregationUnavailable",
    "agreed_cells",
    "combine",
    "forget_keys",
    "mask_spec",
]

Cells = dict[str, tuple[str, ...]]

_KEYS: weakref.WeakKeyDictionary[SiteTransport, str] = weakref.WeakKeyDictionary()


class MaskGroupIncomplete(QuorumNotMet):
    """Sites of the mask group did not deliver their masked partials and too few remain.

    ``dropped`` names them; the masked sum without them would be wrong, so it is never formed.
    """

    def __init__(
        self, message: str, *, dropped: list[str], outcomes: list[SiteOutcome], request_id: str
    ) -> None:
        super().__init__(message, outcomes=outcomes, request_id=request_id)
        self.reason = "mask_group_incomplete"
        self.dropped = dropped


class SecureAggregationUnavailable(FlowError):
    """Secure aggregation was required for a step it cannot apply to."""


def agreed_cells(
    analysis: Analysis[Any], params: Any, cells: Mapping[str, Sequence[str]] | None
) -> Cells | None:
    """The key set of ``analysis``'s frequency table for ``params``, or None if unknown."""
    if cells is not None:
        return {d: tuple(levels) for d, levels in cells.items()}
    if not isinstance(analysis, secagg.FixedCells):
        return None
    return {d: tuple(levels) for d, levels in analysis.cell_levels(params).items()}


def maskable(
    analysis: Analysis[Any], params: Any, cells: Mapping[str, Sequence[str]] | None
) -> tuple[bool, Cells | None]:
    """Whether the step's output can be summed securely, and its key set (frequency tables)."""
    if analysis.output not in secagg.MASKABLE:
        return False, None
    if analysis.output is OutputKind.FREQUENCY:
        found = agreed_cells(analysis, params, cells)
        return found is not None, found
    return True, None


def mask_spec(
    transports: Mapping[str, SiteTransport], sites: Iterable[str], cells: Cells | None
) -> MaskSpec:
    """The mask group of ``sites`` with their published key-agreement keys."""
    members = []
    for site in sorted(sites):
        transport = transports[site]
        key = _KEYS.get(transport)
        if key is None:
            key = transport.info().agreement_key
            if key is None:
                raise SecureAggregationUnavailable(
                    "the site publishes no key-agreement key", site=site
                )
            _KEYS[transport] = key
        members.append(MaskMember(site=site, public_key=key))
    return MaskSpec(group=tuple(members), cells=cells)


def forget_keys(transports: Iterable[SiteTransport]) -> None:
    """Drop cached keys (of sites that dropped out: they may have a new key next time)."""
    for transport in transports:
        _KEYS.pop(transport, None)


def combine(tables: Sequence[pa.Table]) -> tuple[pa.Table, int, tuple[str, ...]]:
    """The group's sum, suppressed at the federation's threshold when it is a frequency table.

    Returns the merged partial, the number of suppressed cells and the reasons.
    """
    summed = secagg.sum_masked(tables)
    if summed.kind is not OutputKind.FREQUENCY:
        return summed.table, 0, ()
    table = _present(summed.table)
    result = check_frequency(table, threshold=summed.threshold)
    if result.outcome is Outcome.REFUSED or result.table is None:
        raise FlowError("the merged frequency table was refused: " + "; ".join(result.reasons))
    return result.table, result.suppressed_cells, result.reasons


def _present(table: pa.Table) -> pa.Table:
    """The cells somebody is in, and the grand total: what a cube of the pooled data holds."""
    dims = frequency.dimensions(table)
    if not dims:
        return table
    total = pc.equal(table[dims[0]], frequency.MARGIN)
    for dim in dims[1:]:
        total = pc.and_(total, pc.equal(table[dim], frequency.MARGIN))
    keep = pc.or_(pc.greater(table[frequency.COUNT], 0), total)
    return frequency.merge([table.filter(keep)])
