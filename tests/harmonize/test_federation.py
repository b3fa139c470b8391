"""Harmonized sites in a federation: the analyses run on folders built from Synthea and FHIR.

One site holds the CDM harmonized from the Synthea CSV export, the other the CDM harmonized from
the FHIR bundles (person ids offset so that the pooled check can stack them). A cohort with
descendants (through the concept_ancestor table each folder carries) and a characterization are
run over the federation and compared with the same analyses on the pooled tables.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from harmonize import HarmonizeReport, read_cdm

pytestmark = pytest.mark.integration

Cdm = tuple[Path, HarmonizeReport]
TABLES = (
    "person",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "concept",
    "concept_ancestor",
)
DISEASE = 4274025  # SNOMED "Disease": an ancestor of most conditions in both samples


def _site(folder: Path, offset: int) -> dict[str, pa.Table]:
    tables = read_cdm(folder, TABLES)
    for name, table in tables.items():
        if "person_id" in table.column_names:
            shifted = pc.add(table["person_id"], pa.scalar(offset, pa.int32()))
            index = table.schema.get_field_index("person_id")
            tables[name] = table.set_column(index, "person_id", shifted)
    return tables


def test_analyses_run_on_harmonized_sites(
    synthea_cdm: Cdm, fhir_cdm: Cdm, tmp_path: Path, prefect_server: str
) -> None:
    from flows import SiteStatus, connect, run_analysis
    from flows.demo import ALL, DemoSite, build_demo, compare_with_pooled, pool, pooled_answer

    parts = [_site(synthea_cdm[0], 0), _site(fhir_cdm[0], 100_000)]
    sites = [
        DemoSite("synthea-site", "EU", 0.5, 1, ALL, release_extremes=True),
        DemoSite("fhir-site", "EU", 0.5, 1, ALL, release_extremes=True),
    ]
    profile = build_demo(tmp_path / "federation", parts, sites=sites)
    pooled = pool(parts)
    cases = [
        (
            "cohort_count",
            {"domain": "condition", "concept_ids": [DISEASE], "include_descendants": True},
        ),
        (
            "characterization",
            {
                "domain": "condition",
                "concept_ids": [DISEASE],
                "include_descendants": True,
                "age_band_width": 20,
            },
        ),
    ]
    with connect(profile) as federation:
        for name, params in cases:
            result = run_analysis(name, params, federation=federation)
            assert {o.status for o in result.outcomes} == {SiteStatus.RELEASED}
            verdict = compare_with_pooled(result.result, pooled_answer(name, params, pooled))
            assert verdict["different"] == [] and verdict["withheld"] == []
            assert verdict["equal"]
    persons = pl.from_arrow(pooled_answer(*cases[0], pooled))
    assert isinstance(persons, pl.DataFrame)
    assert persons.row(0)[0] > 10  # the cohort is not trivially empty
