"""The survival partial: events and censorings per group and interval of a time grid.

One row per ``group`` (string) and ``interval`` (int32, k = 0, 1, ...): ``events`` and
``censored`` (int64), the persons whose time falls on grid point k (times are rounded up to
the grid, so no exact event time leaves a site). Persons still followed at the end of the grid
are censored at its last point. Counts add up across partitions and sites, and the number at
risk at grid point k is the group's total minus everyone who left before k, so the merged
partial gives exactly the Kaplan-Meier curve and log-rank test of the pooled gridded data.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from fedflow.core.errors import InvalidRequest

__all__ = ["SCHEMA", "from_counts", "merge", "validate"]

SCHEMA = pa.schema(
    [
        ("group", pa.string()),
        ("interval", pa.int32()),
        ("events", pa.int64()),
        ("censored", pa.int64()),
    ]
)


def from_counts(rows: Sequence[tuple[str, int, int, int]]) -> pa.Table:
    """A survival partial from ``(group, interval, events, censored)`` rows."""
    columns: list[list[object]] = [[r[i] for r in rows] for i in range(len(SCHEMA.names))]
    table = pa.table(dict(zip(SCHEMA.names, columns, strict=True)), schema=SCHEMA)
    return table.sort_by([("group", "ascending"), ("interval", "ascending")])


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Sum events and censorings per group and interval."""
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    for partial in partials:
        validate(partial)
    stacked = pa.concat_tables(partials)
    summed = stacked.group_by(["group", "interval"]).aggregate(
        [("events", "sum"), ("censored", "sum")]
    )
    table = pa.table(
        {
            "group": summed["group"],
            "interval": summed["interval"],
            "events": summed["events_sum"],
            "censored": summed["censored_sum"],
        },
        schema=SCHEMA,
    )
    return table.sort_by([("group", "ascending"), ("interval", "ascending")])


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a survival partial; raise :class:`InvalidRequest` if not."""
    if not table.schema.equals(SCHEMA):
        raise InvalidRequest("a survival partial has columns group, interval, events, censored")
    for column in SCHEMA.names:
        if table[column].null_count:
            raise InvalidRequest("a survival partial must not hold nulls")
    keys = list(zip(table["group"].to_pylist(), table["interval"].to_pylist(), strict=True))
    if len(set(keys)) != len(keys):
        raise InvalidRequest("a survival partial must not repeat a group and interval")
    values = table["events"].to_pylist() + table["censored"].to_pylist()
    if any(v < 0 for v in values) or any(k < 0 for _, k in keys):
        raise InvalidRequest("a survival partial's counts and intervals must not be negative")
