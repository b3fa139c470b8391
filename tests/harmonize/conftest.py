"""Fixtures of the harmonization tests: a vocabulary store and two harmonized CDM folders.

Built once per session from the public shared data (Synthea CSV, FHIR bundles, vocabulary
subsets, CDM specification); each costs a few seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harmonize import (
    HarmonizeReport,
    HarmonizeSettings,
    VocabularyStore,
    build_store,
    harmonize_fhir,
    harmonize_synthea,
    load_spec,
)
from harmonize.spec import CdmSpec


@pytest.fixture(scope="session")
def settings(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> HarmonizeSettings:
    """Settings pointing at the shared data and a session-private vocabulary store."""
    return HarmonizeSettings(
        cdm_spec=shared_data / "omop_cdm_spec" / "OMOP_CDMv5.4_Field_Level.csv",
        vocab_sources=[
            shared_data / "eunomia_synthea27nj_cdm54",
            shared_data / "omop_vocab_subset_synthea",
            shared_data / "eunomia_gibleed",
        ],
        vocab_store=tmp_path_factory.mktemp("vocab"),
    )


@pytest.fixture(scope="session")
def spec(settings: HarmonizeSettings) -> CdmSpec:
    """The CDM v5.4 field-level specification."""
    return load_spec(settings.cdm_spec)


@pytest.fixture(scope="session")
def store(settings: HarmonizeSettings, spec: CdmSpec) -> VocabularyStore:
    """The vocabulary store built from the three shared vocabulary folders."""
    build_store(settings.vocab_sources, settings.vocab_store, spec)
    return VocabularyStore(settings.vocab_store)


@pytest.fixture
def private_settings(
    settings: HarmonizeSettings, store: VocabularyStore, tmp_path: Path
) -> HarmonizeSettings:
    """Settings with a copy of the store, for tests that change it."""
    copy = tmp_path / "vocab"
    shutil.copytree(store.path, copy)
    return settings.model_copy(update={"vocab_store": copy})


@pytest.fixture(scope="session")
def synthea_cdm(
    shared_data: Path,
    settings: HarmonizeSettings,
    store: VocabularyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, HarmonizeReport]:
    """The 27 Synthea patients harmonized into a CDM folder."""
    out = tmp_path_factory.mktemp("synthea_cdm")
    report = harmonize_synthea(shared_data / "synthea_csv_v3_27pat", out, settings=settings)
    return out, report


@pytest.fixture(scope="session")
def fhir_cdm(
    shared_data: Path,
    settings: HarmonizeSettings,
    store: VocabularyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, HarmonizeReport]:
    """The 7 FHIR bundles harmonized into a CDM folder."""
    out = tmp_path_factory.mktemp("fhir_cdm")
    report = harmonize_fhir(shared_data / "synthea_fhir_r4", out, settings=settings)
    return out, report
