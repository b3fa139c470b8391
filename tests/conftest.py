"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from fedflow.core.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public test data folder (``FEDFLOW_SHARED_DATA``, default ``../shared/data``).

    Tests that need it skip, saying how to get it, when it is absent.
    """
    path = Settings().shared_data
    if not path.is_dir():
        pytest.skip(
            f"shared test data not found at {path}: set FEDFLOW_SHARED_DATA to a copy of the "
            "project's shared/data folder (OMOP CDM, Synthea, FHIR, VCF; each subfolder has a "
            "PROVENANCE.md saying where it comes from)"
        )
    return path
