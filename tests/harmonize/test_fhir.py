"""FHIR R4 bundles -> OMOP: collection and transaction bundles, malformed resources skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from harmonize import HarmonizeReport, InvalidSource, SourceNotFound, read_fhir

Cdm = tuple[Path, HarmonizeReport]
YANG = "Yang129_Eichmann909_6b01025b-43b4-a9e4-525b-872995031987.json"
DINO = "Dino214_Parisian75_40d82b80-b682-cd8b-da6d-396809878641.json"


def test_counts_follow_the_bundles(fhir_cdm: Cdm) -> None:
    folder, report = fhir_cdm
    accounts = {a.source_table: a for a in report.accounts}
    assert accounts["Patient"].read == 7 and accounts["Patient"].written == 7
    assert accounts["Encounter"].read == 189
    assert accounts["Condition"].read == 115
    assert accounts["Observation"].read == 1066
    assert accounts["Immunization"].read == 118
    assert accounts["Claim"].rejected == {"out_of_scope": 230}
    assert report.balanced()
    assert report.cdm_rows["person"] == 7
    assert accounts["Encounter"].written == 189  # every encounter lands in a visit
    assert 0 < report.cdm_rows["visit_occurrence"] <= 189  # ETL-Synthea grouping
    death = pq.read_table(folder / "death.parquet")
    assert death["death_date"].to_pylist()[0].isoformat() == "2014-01-03"  # local date kept
    assert report.mapping_coverage >= 0.97


def test_transaction_bundle_is_read(shared_data: Path) -> None:
    staged = read_fhir(shared_data / "synthea_fhir_r4" / DINO)
    assert staged.persons.num_rows == 1
    assert staged.visits.num_rows == 16
    # conditional references (Practitioner?identifier=...) stay unresolved, not invented
    assert all("?" in (k or "?") for k in staged.visits["provider_key"].to_pylist())


def test_blood_pressure_components_become_measurements(fhir_cdm: Cdm) -> None:
    folder, _ = fhir_cdm
    measurement = pq.read_table(folder / "measurement.parquet")
    codes = set(measurement["measurement_source_value"].to_pylist())
    assert {"8480-6", "8462-4"} <= codes  # systolic and diastolic from Observation.component
    systolic = measurement.filter(pc.equal(measurement["measurement_source_value"], "8480-6"))
    assert pc.min(systolic["value_as_number"]).as_py() > 50


def test_malformed_resource_is_reported_and_skipped(shared_data: Path, tmp_path: Path) -> None:
    bundle = json.loads((shared_data / "synthea_fhir_r4" / YANG).read_text())
    broken = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    broken["status"] = {"not": "a code"}
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    staged = read_fhir(tmp_path / "bundle.json")
    assert staged.rejected["Observation"] == {"malformed_resource": 1}
    assert staged.issues[0]["resource"] == f"Observation/{broken['id']}"
    assert "not a code" not in json.dumps(staged.issues)  # no values in the report
    observations = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    parents = pc.sum(pc.equal(staged.events["source_table"], "Observation")).as_py()
    assert parents == observations - 1


def test_not_a_bundle_raises(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"resourceType": "Patient"}))
    with pytest.raises(InvalidSource):
        read_fhir(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(InvalidSource):
        read_fhir(tmp_path / "y.json")
    with pytest.raises(SourceNotFound):
        read_fhir(tmp_path / "absent")


def test_coded_values_fill_value_as_concept_id(fhir_cdm: Cdm, shared_data: Path) -> None:
    folder, _ = fhir_cdm
    coded = 0
    for bundle in (shared_data / "synthea_fhir_r4").glob("*.json"):
        for entry in json.loads(bundle.read_text())["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Observation":
                parts = [resource, *resource.get("component", [])]
                coded += sum(1 for p in parts if "valueCodeableConcept" in p)
    filled = sum(
        pq.read_table(folder / f"{t}.parquet")["value_as_concept_id"].drop_null().length()
        for t in ("measurement", "observation")
    )
    assert coded > 100
    assert filled == coded
