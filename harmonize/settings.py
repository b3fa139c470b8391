"""Where harmonization finds the CDM specification and the vocabulary (``FEDFLOW_HARMONIZE_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedflow.core.settings import Settings

__all__ = ["HarmonizeSettings"]


def _shared() -> Path:
    return Settings().shared_data


class HarmonizeSettings(BaseSettings):
    """Paths a site's harmonization run uses; every one can be overridden by environment.

    ``vocab_sources`` are folders of OMOP vocabulary CSVs (Athena export layout, upper or lower
    case names, ``.csv`` or ``.csv.gz``, optional ``_seed`` suffix) merged into the local store.
    Defaults follow ``FEDFLOW_SHARED_DATA`` as it is when the settings are created.
    """

    model_config = SettingsConfigDict(env_prefix="FEDFLOW_HARMONIZE_", extra="ignore")

    cdm_spec: Path = Field(
        default_factory=lambda: _shared() / "omop_cdm_spec" / "OMOP_CDMv5.4_Field_Level.csv"
    )
    vocab_sources: list[Path] = Field(
        default_factory=lambda: [
            _shared() / "eunomia_synthea27nj_cdm54",
            _shared() / "omop_vocab_subset_synthea",
            _shared() / "eunomia_gibleed",
        ]
    )
    vocab_store: Path = Field(default=Path(".fedflow") / "vocabulary")
    merge_visits: bool = Field(
        default=True,
        description="group encounters into visits as ETL-Synthea does (False: one per encounter)",
    )
