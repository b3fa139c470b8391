"""Process-wide settings, read from ``FEDFLOW_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["REPO_ROOT", "Settings", "get_settings"]

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Settings shared by the CLI, the demo and the tests.

    ``FEDFLOW_SHARED_DATA`` is the one setting through which tests find the public test data
    (OMOP CDM, Synthea, FHIR, VCF); it defaults to ``../shared/data`` beside the checkout.
    """

    model_config = SettingsConfigDict(env_prefix="FEDFLOW_", extra="ignore")

    shared_data: Path = Field(default=REPO_ROOT.parent / "shared" / "data")
    home: Path = Field(default=Path(".fedflow"), description="state of the demo federation")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process (read once)."""
    return Settings()
