"""The OMOP CDM v5.4 field-level specification as Arrow schemas and check metadata.

The OHDSI CommonDataModel repository publishes ``OMOP_CDMv5.4_Field_Level.csv`` (one row per
field: required, datatype, primary key, foreign key table and domain). Everything the writer and
the conformance checks need is read from that file, so the schema is never retyped by hand.

Datatypes map to Arrow as: ``integer`` -> int32 (SQL INTEGER, as in the DDL), ``float`` -> float64,
``date`` -> date32, ``datetime`` -> timestamp[us], ``varchar(n)`` -> string.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from harmonize.errors import SourceNotFound

__all__ = ["CdmSpec", "FieldSpec", "arrow_type", "load_spec"]


@dataclass(frozen=True)
class FieldSpec:
    """One field of one CDM table, as the OHDSI specification states it."""

    table: str
    name: str
    required: bool
    datatype: str
    primary_key: bool
    fk_table: str | None
    fk_domain: str | None

    @property
    def max_length(self) -> int | None:
        """The declared varchar length (None for other types and ``varchar(MAX)``)."""
        if self.datatype.startswith("varchar(") and self.datatype[8:-1].isdigit():
            return int(self.datatype[8:-1])
        return None


def arrow_type(datatype: str) -> pa.DataType:
    """The Arrow type written for a CDM datatype."""
    kind = datatype.lower()
    if kind == "integer":
        return pa.int32()
    if kind == "float":
        return pa.float64()
    if kind == "date":
        return pa.date32()
    if kind == "datetime":
        return pa.timestamp("us")
    if kind.startswith("varchar"):
        return pa.string()
    raise ValueError(f"unknown CDM datatype {datatype!r}")


@dataclass(frozen=True)
class CdmSpec:
    """All tables of the CDM with their fields in specification order."""

    fields: dict[str, tuple[FieldSpec, ...]]

    @property
    def tables(self) -> list[str]:
        """Table names, lower case."""
        return list(self.fields)

    def schema(self, table: str, *, strict: bool = False) -> pa.Schema:
        """The Arrow schema of ``table`` (lower-case names, spec order).

        Fields are nullable unless ``strict``, where nullability follows ``isRequired``: the
        written files keep nulls so that the conformance checks can count them.
        """
        return pa.schema(
            [
                pa.field(f.name, arrow_type(f.datatype), nullable=not (strict and f.required))
                for f in self[table]
            ]
        )

    def primary_key(self, table: str) -> str | None:
        """The primary-key column of ``table`` (None for tables without one, e.g. death)."""
        return next((f.name for f in self[table] if f.primary_key), None)

    def __getitem__(self, table: str) -> tuple[FieldSpec, ...]:
        return self.fields[table.lower()]

    def __contains__(self, table: object) -> bool:
        return isinstance(table, str) and table.lower() in self.fields


def _none(value: str) -> str | None:
    return None if value in ("", "NA") else value


@lru_cache(maxsize=4)
def load_spec(path: Path) -> CdmSpec:
    """Read the field-level CSV at ``path`` (``OMOP_CDMv5.4_Field_Level.csv``)."""
    if not path.is_file():
        raise SourceNotFound(f"CDM field-level specification not found: {path}")
    tables: dict[str, list[FieldSpec]] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            table = row["cdmTableName"].strip().lower()
            fk_table = _none(row["fkTableName"])
            tables.setdefault(table, []).append(
                FieldSpec(
                    table=table,
                    name=row["cdmFieldName"].strip().lower(),
                    required=row["isRequired"].strip().lower() == "yes",
                    datatype=row["cdmDatatype"].strip().lower(),
                    primary_key=row["isPrimaryKey"].strip().lower() == "yes",
                    fk_table=fk_table.lower() if fk_table else None,
                    fk_domain=_none(row["fkDomain"]),
                )
            )
    return CdmSpec({name: tuple(fields) for name, fields in tables.items()})
