"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from fedflow.core.settings import Settings

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


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


# -- the federated core on real data -----------------------------------------------------------

# Tables the core analyses read; building test sites with only these keeps set-up fast.
CORE_TABLES = (
    "person",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "observation_period",
    "concept",
    "concept_ancestor",
)


@pytest.fixture(scope="session")
def eunomia(shared_data: Path) -> dict[str, pa.Table]:
    """The Eunomia GiBleed CDM from the shared CSV copy, limited to the core tables."""
    from flows.demo import eunomia_tables

    tables = eunomia_tables(shared_data / "eunomia_gibleed")
    return {name: tables[name] for name in CORE_TABLES}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real local Prefect API for the session; ``PREFECT_API_URL`` points at it."""
    from flows.server import prefect_api

    previous = os.environ.pop("PREFECT_API_URL", None)
    with prefect_api(tmp_path_factory.mktemp("prefect")) as api:
        os.environ["PREFECT_API_URL"] = api.wait()
        try:
            yield api.url
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            if previous is not None:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture
def make_federation(tmp_path: Path, eunomia: dict[str, pa.Table]):  # type: ignore[no-untyped-def]
    """Build a federation from Eunomia split across ``sites``: returns (profile, parts by site)."""
    from flows.demo import build_demo, split_by_person

    def make(sites, *, seed: int = 7, tables=None):  # type: ignore[no-untyped-def]
        parts = split_by_person(tables or eunomia, [s.share for s in sites], seed=seed)
        profile = build_demo(tmp_path / "federation", parts, sites=sites)
        return profile, dict(zip((s.name for s in sites), parts, strict=True))

    return make
