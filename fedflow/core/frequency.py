"""The frequency-table partial: person counts per cell, with every margin.

A frequency partial has one string column per dimension and an ``count`` column (int64). A
dimension holding ``"*"`` (:data:`MARGIN`) is summed over, so the table carries its margins and
grand total; the airlock needs them to decide secondary suppression, and a researcher gets
them without a second query. A null ``count`` is a suppressed cell. A table with no dimension
is a single count.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import pyarrow as pa
import pyarrow.compute as pc

from fedflow.core.errors import InvalidRequest

__all__ = ["COUNT", "MARGIN", "cube", "dimensions", "merge", "validate"]

MARGIN = "*"
COUNT = "count"


def dimensions(table: pa.Table) -> list[str]:
    """The dimension columns of a frequency table (every column but ``count``)."""
    return [c for c in table.column_names if c != COUNT]


def cube(units: pa.Table, dims: Sequence[str]) -> pa.Table:
    """Count the rows of ``units`` (one row per person) per cell of ``dims``, with all margins."""
    dims = list(dims)
    units = units.select(dims)
    cast = pa.table({d: pc.cast(units[d], pa.string()) for d in dims}) if dims else units
    pieces = []
    for k in range(len(dims), -1, -1):
        for kept in combinations(dims, k):
            if kept:
                grouped = cast.group_by(list(kept)).aggregate([([], "count_all")])
                counts = grouped["count_all"]
            else:
                grouped = pa.table({})
                counts = pa.chunked_array([[cast.num_rows]], pa.int64())
            n = len(counts)
            cols = {
                d: grouped[d] if d in kept else pa.chunked_array([[MARGIN] * n], pa.string())
                for d in dims
            }
            cols[COUNT] = pc.cast(counts, pa.int64())
            pieces.append(pa.table(cols))
    if not dims:
        return pieces[0]
    return _sorted(pa.concat_tables(pieces), dims)


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Sum counts cell by cell; a cell suppressed in any partial stays suppressed (null)."""
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    dims = dimensions(partials[0])
    stacked = pa.concat_tables([p.select([*dims, COUNT]) for p in partials])
    if not dims:
        nulls = stacked[COUNT].null_count
        total = pc.sum(stacked[COUNT]).as_py() or 0
        return pa.table({COUNT: pa.array([None if nulls else total], pa.int64())})
    agg = stacked.group_by(dims).aggregate(
        [(COUNT, "sum"), (COUNT, "count", pc.CountOptions(mode="only_null"))]
    )
    summed = pc.if_else(pc.greater(agg[f"{COUNT}_count"], 0), None, agg[f"{COUNT}_sum"])
    merged = pa.table({**{d: agg[d] for d in dims}, COUNT: pc.cast(summed, pa.int64())})
    return _sorted(merged, dims)


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a frequency partial; raise :class:`InvalidRequest` if not."""
    if COUNT not in table.column_names or not pa.types.is_integer(table.schema.field(COUNT).type):
        raise InvalidRequest("a frequency table needs an integer 'count' column")
    bad = [d for d in dimensions(table) if not pa.types.is_string(table.schema.field(d).type)]
    if bad:
        raise InvalidRequest(f"frequency dimensions must be strings: {', '.join(bad)}")


def _sorted(table: pa.Table, dims: Sequence[str]) -> pa.Table:
    return table.sort_by([(d, "ascending") for d in dims])
