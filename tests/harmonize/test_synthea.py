"""Synthea CSV -> OMOP: counts, accounting, conventions, and agreement with OHDSI's own CDM."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from harmonize import (
    HarmonizeReport,
    HarmonizeSettings,
    InvalidSource,
    SourceNotFound,
    VocabularyStore,
    harmonize_synthea,
    read_cdm,
    read_synthea,
)
from harmonize.spec import CdmSpec

Cdm = tuple[Path, HarmonizeReport]


def _table(folder: Path, name: str) -> pa.Table:
    return pq.read_table(folder / f"{name}.parquet")


def test_people_deaths_and_visits(synthea_cdm: Cdm) -> None:
    folder, report = synthea_cdm
    person = _table(folder, "person")
    assert person.num_rows == 27
    genders = {
        d["values"]: d["counts"] for d in pc.value_counts(person["gender_concept_id"]).to_pylist()
    }
    assert genders == {8507: 14, 8532: 13}
    assert _table(folder, "death").num_rows == 2
    assert _table(folder, "observation_period").num_rows == 27
    visit = _table(folder, "visit_occurrence")
    # ETL-Synthea grouping: multi-day encounters become inpatient stays, so fewer visits
    # than the 604 encounters, and at least the 11 inpatient encounters' stays
    assert 0 < visit.num_rows < 604
    concepts = {d["values"] for d in pc.value_counts(visit["visit_concept_id"]).to_pylist()}
    assert concepts == {9201, 9202, 9203}
    assert report.cdm_rows["visit_occurrence"] == visit.num_rows


def test_one_visit_per_encounter_when_merging_is_off(
    shared_data: Path, settings: HarmonizeSettings, store: VocabularyStore, tmp_path: Path
) -> None:
    plain = settings.model_copy(update={"merge_visits": False})
    report = harmonize_synthea(shared_data / "synthea_csv_v3_27pat", tmp_path, settings=plain)
    visit = _table(tmp_path, "visit_occurrence")
    counts = {
        d["values"]: d["counts"] for d in pc.value_counts(visit["visit_concept_id"]).to_pylist()
    }
    # wellness 348 + ambulatory 174 + outpatient 52 / emergency 17 + urgentcare 2 / inpatient 11
    assert counts == {9202: 574, 9203: 19, 9201: 11}
    assert report.balanced()


def test_every_source_row_is_accounted_for(synthea_cdm: Cdm) -> None:
    _, report = synthea_cdm
    assert report.balanced()
    accounts = {a.source_table: a for a in report.accounts}
    assert accounts["conditions"].read == 438
    assert accounts["observations"].read == 990
    assert accounts["medications"].read == 663
    assert accounts["claims"].rejected == {"out_of_scope": 1267}
    # conditions are spread over condition_occurrence and observation (findings) by domain
    coded = report.cdm_rows["condition_occurrence"] + report.cdm_rows["observation"]
    assert coded >= 438


def test_mapping_coverage_and_remainder_listed(synthea_cdm: Cdm) -> None:
    folder, report = synthea_cdm
    unmapped = {(u.vocabulary_id, u.code) for c in report.coverage for u in c.unmapped}
    assert ("LOINC", "QALY") in unmapped  # a Synthea-only code, listed
    assert report.mapping_coverage > 0.95
    assert report.vocabulary_code_coverage >= 0.97
    with (folder / "_harmonize" / "unmapped.csv").open() as handle:
        listed = sum(int(r["rows"]) for r in csv.DictReader(handle))
    assert listed == sum(c.coded_rows - c.mapped_rows for c in report.coverage)


def test_tables_follow_the_spec_and_are_sorted(synthea_cdm: Cdm, spec: CdmSpec) -> None:
    folder, _ = synthea_cdm
    for name in (
        "person",
        "visit_occurrence",
        "condition_occurrence",
        "measurement",
        "drug_exposure",
    ):
        table = _table(folder, name)
        assert table.schema.names == spec.schema(name).names
        assert [f.type for f in table.schema] == [f.type for f in spec.schema(name)]
        ids = table["person_id"].to_numpy()
        assert (ids[1:] >= ids[:-1]).all()
    for vocab_table in ("concept", "concept_ancestor", "concept_relationship", "vocabulary"):
        assert (folder / f"{vocab_table}.parquet").is_file()


def _reference(shared: Path, name: str, code: str, concept: str) -> dict[str, int]:
    path = shared / "eunomia_synthea27nj_cdm54" / name
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return {r[code]: int(r[concept]) for r in csv.DictReader(handle) if r[concept] != "0"}


@pytest.mark.parametrize(
    ("table", "reference", "code", "concept"),
    [
        (
            "condition_occurrence",
            "CONDITION_OCCURRENCE.csv",
            "condition_source_value",
            "condition_concept_id",
        ),
        ("drug_exposure", "DRUG_EXPOSURE.csv", "drug_source_value", "drug_concept_id"),
        ("measurement", "MEASUREMENT.csv.gz", "measurement_source_value", "measurement_concept_id"),
        (
            "procedure_occurrence",
            "PROCEDURE_OCCURRENCE.csv",
            "procedure_source_value",
            "procedure_concept_id",
        ),
        ("observation", "OBSERVATION.csv", "observation_source_value", "observation_concept_id"),
    ],
)
def test_concepts_agree_with_ohdsi_etl_synthea(
    synthea_cdm: Cdm, shared_data: Path, table: str, reference: str, code: str, concept: str
) -> None:
    """Codes shared with OHDSI's Synthea27Nj CDM (built by ETL-Synthea) get the same concepts."""
    folder, _ = synthea_cdm
    ours_table = _table(folder, table)
    ours = {
        c: int(k)
        for c, k in zip(ours_table[code].to_pylist(), ours_table[concept].to_pylist(), strict=True)
        if k
    }
    theirs = _reference(shared_data, reference, code, concept)
    shared = set(ours) & set(theirs)
    assert len(shared) >= 5
    disagree = {c for c in shared if ours[c] != theirs[c]}
    assert not disagree


def test_bad_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound):
        read_synthea(tmp_path / "absent")
    with pytest.raises(SourceNotFound):
        read_synthea(tmp_path)
    (tmp_path / "patients.csv").write_text("Name,Age\nx,1\n")
    with pytest.raises(InvalidSource):
        read_synthea(tmp_path)


def test_person_rows_without_id_gender_or_birth_date_are_rejected(
    shared_data: Path, tmp_path: Path, settings: HarmonizeSettings, store: VocabularyStore
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    source = shared_data / "synthea_csv_v3_27pat"
    lines = (source / "patients.csv").read_text().splitlines()
    header = lines[0].split(",")
    broken = []
    for i, line in enumerate(lines[1:4]):
        cells = line.split(",")
        column = ("Id", "GENDER", "BIRTHDATE")[i]
        cells[header.index(column)] = ""
        broken.append(",".join(cells))
    (raw / "patients.csv").write_text("\n".join([lines[0], *broken, *lines[4:]]) + "\n")
    (raw / "encounters.csv").write_bytes((source / "encounters.csv").read_bytes())
    (raw / "conditions.csv").write_bytes((source / "conditions.csv").read_bytes())
    report = harmonize_synthea(raw, tmp_path / "omop", settings=settings)
    accounts = {a.source_table: a for a in report.accounts}
    assert accounts["patients"].rejected == {
        "missing_person_id": 1,
        "missing_gender": 1,
        "missing_birth_date": 1,
    }
    assert report.cdm_rows["person"] == 24
    # the rows of the three rejected people are rejected too, and everything still adds up
    assert accounts["encounters"].rejected["unknown_person"] > 0
    assert report.balanced()


def test_cdm_source_and_read_cdm(synthea_cdm: Cdm, tmp_path: Path) -> None:
    folder, report = synthea_cdm
    tables = read_cdm(folder, ["cdm_source", "person"])
    row = tables["cdm_source"].to_pylist()[0]
    assert row["cdm_version"] == "v5.4"
    assert row["cdm_source_abbreviation"] == "synthea"
    assert row["vocabulary_version"].startswith("v5.0")
    assert tables["person"].num_rows == report.cdm_rows["person"]
    with pytest.raises(SourceNotFound):
        read_cdm(folder, ["note"])
    with pytest.raises(SourceNotFound):
        read_cdm(tmp_path)
