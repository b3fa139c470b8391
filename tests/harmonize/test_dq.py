"""Conformance checks pass on harmonized folders and catch each kind of violation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harmonize import HarmonizeReport, check_folder, check_tables
from harmonize.spec import CdmSpec

Cdm = tuple[Path, HarmonizeReport]


def test_both_inputs_pass(synthea_cdm: Cdm, fhir_cdm: Cdm, spec: CdmSpec) -> None:
    for folder, _ in (synthea_cdm, fhir_cdm):
        report = check_folder(folder, spec)
        assert report.passed, report.failures()
        summary = report.summary()
        assert set(summary) == {
            "cdm_datatype",
            "is_required",
            "is_primary_key",
            "is_foreign_key",
            "fk_domain",
            "plausible_dates",
        }
        assert summary["is_foreign_key"]["passed"] > 50


def _load(folder: Path, spec: CdmSpec) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in folder.glob("*.parquet") if p.stem in spec}


def _set(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def test_each_violation_is_counted(synthea_cdm: Cdm, spec: CdmSpec) -> None:
    folder, _ = synthea_cdm
    tables = _load(folder, spec)
    cond = tables["condition_occurrence"]
    cond = _set(cond, "condition_type_concept_id", 0, None)  # required
    cond = _set(cond, "condition_occurrence_id", 1, cond["condition_occurrence_id"][2].as_py())
    cond = _set(cond, "person_id", 3, 999_999)  # no such person
    cond = _set(cond, "condition_concept_id", 4, 8507)  # a Gender concept
    cond = _set(cond, "condition_start_date", 5, dt.date(1800, 1, 1))  # before birth
    cond = _set(cond, "condition_end_date", 6, dt.date(1801, 1, 1))  # before its start
    tables["condition_occurrence"] = cond
    report = check_tables(tables, spec)
    failed = {(r.check, r.field): r.violations for r in report.failures()}
    assert failed == {
        ("is_required", "condition_type_concept_id"): 1,
        ("is_primary_key", "condition_occurrence_id"): 1,
        ("is_foreign_key", "person_id"): 1,
        ("fk_domain", "condition_concept_id"): 1,
        ("plausible_dates", "condition_start_date"): 1,
        ("plausible_dates", "condition_end_date"): 1,
    }


def test_wrong_type_and_future_date(synthea_cdm: Cdm, spec: CdmSpec) -> None:
    folder, _ = synthea_cdm
    tables = _load(folder, spec)
    person = tables["person"]
    person = person.set_column(0, "person_id", person["person_id"].cast(pa.int64()))
    tables["person"] = person
    visit = _set(tables["visit_occurrence"], "visit_start_date", 0, dt.date(2990, 1, 1))
    tables["visit_occurrence"] = visit
    failed = {(r.check, r.table, r.field) for r in check_tables(tables, spec).failures()}
    assert ("cdm_datatype", "person", "person_id") in failed
    assert ("plausible_dates", "visit_occurrence", "visit_start_date") in failed
