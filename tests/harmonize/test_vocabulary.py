"""The vocabulary store: merge of the shared subsets, Maps to resolution, concept 0."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from harmonize import SourceNotFound, VocabularyMissing, VocabularyStore, build_store
from harmonize.spec import CdmSpec
from harmonize.vocabulary import CONVENTION_CONCEPTS


def test_store_merges_the_subsets_without_duplicate_keys(store: VocabularyStore) -> None:
    concept = store.table("concept")
    assert concept.num_rows == pc.count_distinct(concept["concept_id"]).as_py()
    # Synthea27Nj has 2,294 concepts, GiBleed 442, overlapping: the union is larger than either.
    assert concept.num_rows > 2294
    rel = store.table("concept_relationship")
    assert rel.num_rows >= 266588
    assert store.table("concept_ancestor").num_rows >= 115241
    ids = set(concept["concept_id"].to_pylist())
    assert {cid for cid, *_ in CONVENTION_CONCEPTS} <= ids


def test_standard_code_maps_to_itself(store: VocabularyStore) -> None:
    # LOINC 8302-2 "Body height" is a standard Measurement concept.
    mapping = store.lookup("LOINC", "8302-2")
    assert mapping.mapped
    assert mapping.targets == ((mapping.source_concept_id, "Measurement"),)


def test_snomed_finding_is_routed_to_its_standard_domain(store: VocabularyStore) -> None:
    # Full-time employment (finding) is an Observation-domain concept in OMOP.
    mapping = store.lookup("SNOMED", "160903007")
    assert mapping.mapped
    assert mapping.targets[0][1] == "Observation"


def test_unknown_code_gets_concept_zero(store: VocabularyStore) -> None:
    mapping = store.lookup("LOINC", "QALY")
    assert not mapping.mapped
    assert mapping.source_concept_id == 0
    assert mapping.targets == ((0, None),)


def test_non_standard_code_whose_target_is_absent_stays_unmapped(store: VocabularyStore) -> None:
    # SNOMED 15777000 (Prediabetes) is a known but upgraded concept; its 'Maps to' target is not
    # in the subset, so there is no domain to route by and the row keeps concept 0.
    mapping = store.lookup("SNOMED", "15777000")
    assert mapping.source_concept_id != 0
    assert not mapping.mapped


def test_source_to_concept_map_seed_maps_synthea_units(store: VocabularyStore) -> None:
    mapping = store.lookup("Synthea units", "U/L")
    assert mapping.targets[0][0] == 8645


def test_missing_store_and_sources_raise(tmp_path: Path, spec: CdmSpec) -> None:
    with pytest.raises(VocabularyMissing):
        VocabularyStore(tmp_path)
    with pytest.raises(SourceNotFound):
        build_store([tmp_path / "absent"], tmp_path / "store", spec)
