"""The magnitude-table partial: per cell, the persons contributing and the sum of a variable.

A magnitude partial has one string column per dimension (``"*"``, :data:`MARGIN`, sums over
it, as in :mod:`fedflow.core.frequency`), ``persons`` (int64) and ``sum`` (float64). A null
``persons`` and ``sum`` is a suppressed cell. The contribution of a person to a cell is the
sum of their values in it, so dominance is judged per person, not per record.

Inside a site the partial also carries :data:`SITE_ONLY` columns for the airlock's dominance
rules: ``top`` (the largest :data:`TOP` contributions, descending), ``negatives`` (persons whose
contribution is negative) and ``lowest`` (the smallest contribution). They are merged across a
site's partitions (persons are disjoint, so the top of the union is the top of the tops) and
:func:`public` drops them: the airlock never releases them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import polars as pl
import pyarrow as pa

from fedflow.core.errors import InvalidRequest
from fedflow.core.frequency import MARGIN

__all__ = [
    "MARGIN",
    "PERSONS",
    "SITE_ONLY",
    "SUM",
    "TOP",
    "cube",
    "dimensions",
    "has_contributions",
    "merge",
    "public",
    "validate",
]

PERSONS = "persons"
SUM = "sum"
TOP = 10
"""How many of the largest contributions per cell a site keeps for the dominance rules."""
SITE_ONLY = ("top", "negatives", "lowest")
"""Columns that exist only inside a site and never leave it."""

_TYPES = {
    PERSONS: pa.int64(),
    SUM: pa.float64(),
    "top": pa.list_(pa.float64()),
    "negatives": pa.int64(),
    "lowest": pa.float64(),
}
_VALUE = "__value"


def dimensions(table: pa.Table) -> list[str]:
    """The dimension columns of a magnitude table."""
    return [c for c in table.column_names if c not in (PERSONS, SUM, *SITE_ONLY)]


def has_contributions(table: pa.Table) -> bool:
    """Whether ``table`` carries the site-only contribution columns."""
    return all(c in table.column_names for c in SITE_ONLY)


def public(table: pa.Table) -> pa.Table:
    """``table`` without its site-only columns (what may leave a site)."""
    return table.select([c for c in table.column_names if c not in SITE_ONLY])


def cube(
    records: pa.Table, dims: Sequence[str], value: str, *, person: str = "person_id"
) -> pa.Table:
    """Persons and sums of ``value`` per cell of ``dims`` with all margins, from records.

    ``records`` holds one row per record (several per person allowed); rows whose value is
    null or NaN do not contribute. Each person's contribution to a cell is the sum of their
    values in it; the site-only columns describe those contributions.
    """
    dims = list(dims)
    frame = pl.from_arrow(records.select([person, *dims, value]))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.select(
        pl.col(person).alias("__person"),
        *(pl.col(d).cast(pl.String) for d in dims),
        pl.col(value).cast(pl.Float64).alias(_VALUE),
    ).filter(pl.col(_VALUE).is_not_null() & pl.col(_VALUE).is_not_nan())
    pieces = []
    for k in range(len(dims), -1, -1):
        for kept in combinations(dims, k):
            per_person = frame.group_by([*kept, "__person"]).agg(pl.col(_VALUE).sum())
            top = pl.col(_VALUE).sort(descending=True).head(TOP)
            aggregates = [
                pl.len().cast(pl.Int64).alias(PERSONS),
                pl.col(_VALUE).sum().alias(SUM),
                (top if kept else top.implode()).alias("top"),
                (pl.col(_VALUE) < 0).sum().cast(pl.Int64).alias("negatives"),
                pl.col(_VALUE).min().alias("lowest"),
            ]
            cells = (
                per_person.group_by(list(kept)).agg(aggregates)
                if kept
                else per_person.select(aggregates)
            )
            pieces.append(
                cells.select(
                    *(pl.col(d) if d in kept else pl.lit(MARGIN).alias(d) for d in dims),
                    PERSONS,
                    SUM,
                    "top",
                    "negatives",
                    "lowest",
                )
            )
    return _arrow(pl.concat(pieces), dims)


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Sum persons and sums cell by cell; a cell suppressed in any partial stays suppressed.

    The site-only columns are merged (top of the tops, count of negatives, lowest) when every
    partial has them, and dropped otherwise.
    """
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    dims = dimensions(partials[0])
    site = all(has_contributions(p) for p in partials)
    columns = [*dims, PERSONS, SUM, *(SITE_ONLY if site else ())]
    frames = []
    for p in partials:
        frame = pl.from_arrow(p.select(columns))
        assert isinstance(frame, pl.DataFrame)
        frames.append(frame)
    stacked = pl.concat(frames)
    suppressed = pl.col(PERSONS).is_null().any() | pl.col(SUM).is_null().any()
    aggregates = [
        pl.when(suppressed).then(None).otherwise(pl.col(PERSONS).sum()).alias(PERSONS),
        pl.when(suppressed).then(None).otherwise(pl.col(SUM).sum()).alias(SUM),
    ]
    if site:
        top = (
            pl.col("top")
            .list.explode(keep_nulls=False, empty_as_null=False)
            .sort(descending=True)
            .head(TOP)
        )
        aggregates += [
            (top if dims else top.implode()).alias("top"),
            pl.col("negatives").sum().alias("negatives"),
            pl.col("lowest").min().alias("lowest"),
        ]
    merged = stacked.group_by(dims).agg(aggregates) if dims else stacked.select(aggregates)
    return _arrow(merged.select(columns), dims)


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a magnitude partial; raise :class:`InvalidRequest` if not."""
    for column in (PERSONS, SUM):
        if column not in table.column_names:
            raise InvalidRequest(f"a magnitude table needs a {column!r} column")
    for column, wanted in _TYPES.items():
        if column in table.column_names and table.schema.field(column).type != wanted:
            raise InvalidRequest(f"magnitude column {column!r} must be {wanted}")
    present = [c for c in SITE_ONLY if c in table.column_names]
    if present and len(present) != len(SITE_ONLY):
        raise InvalidRequest("a magnitude table carries all of its site-only columns or none")
    bad = [d for d in dimensions(table) if not pa.types.is_string(table.schema.field(d).type)]
    if bad:
        raise InvalidRequest(f"magnitude dimensions must be strings: {', '.join(bad)}")


def _arrow(frame: pl.DataFrame, dims: Sequence[str]) -> pa.Table:
    if dims:
        frame = frame.sort(list(dims))
    table = frame.to_arrow()
    fields = [
        pa.field(c, _TYPES.get(c, pa.string())) for c in table.column_names
    ]  # polars exports large types and u32 lengths: normalise to the format's types
    return table.cast(pa.schema(fields))
