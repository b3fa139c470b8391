"""Conformance checks on a CDM folder, generated from the OHDSI field-level specification.

In the spirit of the OHDSI Data Quality Dashboard, every check counts violating rows and passes
when there are none. Checks (DQD names in brackets):

* ``is_required``      a required field is null                          [isRequired]
* ``cdm_datatype``     a field's stored type is not the spec's type      [cdmDatatype]
* ``is_primary_key``   a primary key is null or repeated                 [isPrimaryKey]
* ``is_foreign_key``   a foreign key points at no row of its table       [isForeignKey]
* ``fk_domain``        a concept is outside the field's domain           [fkDomain]
* ``plausible_dates``  a date is in the future, before the person's birth, after death + 60
  days, or an end date precedes its start date
  [plausibleDuringLife, plausibleAfterBirth, plausibleBeforeDeath, plausibleStartBeforeEnd]

Vocabulary tables are checked for shape only (types, required fields), as the DQD does. Only the
tables present in the folder are checked; foreign keys to absent tables pass when the
column is empty. Results name tables and fields, never values.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

from harmonize.errors import SourceNotFound
from harmonize.spec import CdmSpec, arrow_type
from harmonize.vocabulary import VOCAB_TABLES

__all__ = ["CheckResult", "DqReport", "check_folder", "check_tables"]


class CheckResult(BaseModel):
    """One check on one field: violating rows out of the rows checked."""

    check: str
    table: str
    field: str
    rows: int
    violations: int

    @property
    def passed(self) -> bool:
        """No violating row."""
        return self.violations == 0


class DqReport(BaseModel):
    """All check results of a folder with pass / fail counts per check."""

    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(r.passed for r in self.results)

    def summary(self) -> dict[str, dict[str, int]]:
        """Pass and fail counts per check name."""
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            entry = out.setdefault(r.check, {"passed": 0, "failed": 0})
            entry["passed" if r.passed else "failed"] += 1
        return out

    def failures(self) -> list[CheckResult]:
        """The checks that failed."""
        return [r for r in self.results if not r.passed]


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def _dates(tables: dict[str, pa.Table], spec: CdmSpec, today: dt.date) -> list[CheckResult]:
    results: list[CheckResult] = []
    person = tables.get("person")
    death = tables.get("death")
    births = deaths = None
    if person is not None:
        births = (person["person_id"], pc.cast(person["birth_datetime"], pa.date32()))
    if death is not None:
        deaths = (death["person_id"], death["death_date"])
    for name, table in tables.items():
        date_fields = [f.name for f in spec[name] if f.datatype == "date"]
        for field in date_fields:
            col = pc.cast(table[field], pa.date32())
            bad = pc.greater(col, pa.scalar(today, pa.date32()))
            if births is not None and "person_id" in table.column_names and name != "person":
                idx = pc.index_in(table["person_id"], value_set=births[0])
                born = pc.take(births[1], idx)
                bad = pc.or_kleene(bad, pc.less(col, born))
            if deaths is not None and "person_id" in table.column_names and name != "death":
                idx = pc.index_in(table["person_id"], value_set=deaths[0])
                died = pc.take(deaths[1], idx)
                limit = pc.add(
                    pc.cast(died, pa.timestamp("s")), pa.scalar(60 * 86400, pa.duration("s"))
                )
                bad = pc.or_kleene(bad, pc.greater(pc.cast(col, pa.timestamp("s")), limit))
            if field.endswith("end_date"):
                start = field.replace("end_date", "start_date")
                if start not in table.column_names:
                    start = field.replace("_end_date", "_date")
                if start in table.column_names and start != field:
                    bad = pc.or_kleene(bad, pc.less(col, pc.cast(table[start], pa.date32())))
            results.append(
                CheckResult(
                    check="plausible_dates",
                    table=name,
                    field=field,
                    rows=table.num_rows,
                    violations=_count(bad),
                )
            )
    return results


def check_tables(
    tables: dict[str, pa.Table], spec: CdmSpec, *, today: dt.date | None = None
) -> DqReport:
    """Run every check on ``tables`` (CDM name -> Arrow table)."""
    today = today or dt.date.today()
    results: list[CheckResult] = []
    concept = tables.get("concept")
    domains = None
    if concept is not None:
        domains = (concept["concept_id"], concept["domain_id"])
    for name, table in tables.items():
        if name not in spec:
            continue
        vocabulary = name in VOCAB_TABLES
        n = table.num_rows
        for f in spec[name]:
            present = f.name in table.column_names

            def add(
                check: str, violations: int, field: str = f.name, table: str = name, rows: int = n
            ) -> None:
                results.append(
                    CheckResult(
                        check=check, table=table, field=field, rows=rows, violations=violations
                    )
                )

            if not present:
                add("cdm_datatype", n if n else 1)
                continue
            col = table[f.name]
            add("cdm_datatype", 0 if col.type == arrow_type(f.datatype) else n)
            if f.required:
                add("is_required", col.null_count)
            if vocabulary:
                continue  # the DQD checks vocabulary tables for shape only
            if f.primary_key:
                add("is_primary_key", col.null_count + n - pc.count_distinct(col).as_py())
            if f.fk_table is not None:
                target = tables.get(f.fk_table)
                valid = pc.is_valid(col)
                if target is None:
                    add("is_foreign_key", _count(valid))
                else:
                    key = spec.primary_key(f.fk_table) or f"{f.fk_table}_id"
                    missing = pc.invert(pc.is_in(col, value_set=target[key].combine_chunks()))
                    add("is_foreign_key", _count(pc.and_(valid, missing)))
            if f.fk_domain is not None and domains is not None:
                idx = pc.index_in(col, value_set=domains[0].combine_chunks())
                domain = pc.take(domains[1], idx)
                wrong = pc.and_(pc.not_equal(col, 0), pc.not_equal(domain, f.fk_domain))
                add("fk_domain", _count(wrong))
    clinical = {k: v for k, v in tables.items() if k in spec and k not in VOCAB_TABLES}
    results += _dates(clinical, spec, today)
    return DqReport(results=results)


def check_folder(folder: Path, spec: CdmSpec, *, today: dt.date | None = None) -> DqReport:
    """Run every check on the ``<table>.parquet`` files of ``folder``."""
    if not folder.is_dir():
        raise SourceNotFound(f"CDM folder not found: {folder}")
    tables = {
        p.stem.lower(): pq.read_table(p)
        for p in sorted(folder.glob("*.parquet"))
        if p.stem.lower() in spec
    }
    return check_tables(tables, spec, today=today)
