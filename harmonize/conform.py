"""Shape built columns into a CDM table: spec column order and types, sort, primary keys.

Every CDM table the builder emits goes through :func:`conform`: columns missing from the build
become nulls, strings are cut to their declared ``varchar(n)`` length, person-level tables are
sorted by ``person_id`` (then by their start date) and the primary key is numbered 1..n in that
order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harmonize.spec import CdmSpec

__all__ = ["as_date", "conform", "date_column"]

ArrayLike: TypeAlias = pa.Array | pa.ChunkedArray

#: The column that orders rows of a person within each table (after person_id).
_ORDER_BY: dict[str, str] = {
    "visit_occurrence": "visit_start_datetime",
    "condition_occurrence": "condition_start_date",
    "drug_exposure": "drug_exposure_start_date",
    "procedure_occurrence": "procedure_date",
    "measurement": "measurement_date",
    "observation": "observation_date",
    "device_exposure": "device_exposure_start_date",
    "observation_period": "observation_period_start_date",
}


def as_date(values: ArrayLike) -> ArrayLike:
    """A timestamp column as date32."""
    return pc.cast(values, pa.date32())


def date_column(table: str) -> str | None:
    """The start-date column of a person-level table (None if it has none)."""
    return _ORDER_BY.get(table)


def _fit(values: ArrayLike, field: pa.Field, max_length: int | None) -> ArrayLike:
    if values.type != field.type:
        if pa.types.is_date32(field.type) and pa.types.is_timestamp(values.type):
            values = as_date(values)
        else:
            values = pc.cast(values, field.type, safe=False)
    if max_length is not None and pa.types.is_string(field.type):
        values = pc.utf8_slice_codeunits(values, 0, max_length)
    return values


def conform(
    table: str,
    columns: Mapping[str, ArrayLike],
    spec: CdmSpec,
    *,
    num_rows: int,
    presorted: bool = False,
) -> pa.Table:
    """Build CDM ``table`` from ``columns`` (missing ones null), sorted and numbered.

    ``presorted`` says the rows already come by person and start date.
    """
    schema = spec.schema(table)
    lengths = {f.name: f.max_length for f in spec[table]}
    pk = spec.primary_key(table)
    arrays: list[ArrayLike] = []
    for field in schema:
        if field.name in columns:
            arrays.append(_fit(columns[field.name], field, lengths[field.name]))
        elif field.name == pk:
            arrays.append(pa.nulls(num_rows, pa.int32()))  # numbered below
        else:
            arrays.append(pa.nulls(num_rows, field.type))
    names = schema.names
    built = pa.Table.from_arrays(arrays, names=names)
    if "person_id" in names and num_rows and not presorted:
        keys = [("person_id", "ascending")]
        if (order := date_column(table)) is not None:
            keys.append((order, "ascending"))
        built = built.take(pc.sort_indices(built, sort_keys=keys))
    if pk is not None and pk not in columns:
        index = names.index(pk)
        built = built.set_column(
            index, pk, pa.array(np.arange(1, num_rows + 1, dtype=np.int32), pa.int32())
        )
    return built.cast(schema)
