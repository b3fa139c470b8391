"""Fixtures shared by the whole suite."""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from fedflow.core.settings import Settings

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

# No single test may run longer than this. A watchdog thread in C (faulthandler) enforces it:
# it needs no GIL, so it also ends an interpreter-level deadlock, printing every thread's stack
# and exiting, instead of letting the suite hang until CI gives up.
TEST_LIMIT_SECONDS = float(os.environ.get("FEDFLOW_TEST_LIMIT_SECONDS", "600"))
_watchdog_stream = None


def pytest_configure(config: pytest.Config) -> None:
    global _watchdog_stream
    # A copy of the real stderr: pytest captures fd 2 while a test runs.
    _watchdog_stream = os.fdopen(os.dup(sys.stderr.fileno()), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    assert _watchdog_stream is not None
    faulthandler.dump_traceback_later(TEST_LIMIT_SECONDS, exit=True, file=_watchdog_stream)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """A headless Chromium (Playwright ``Browser``) for one test module: see tests/browser.py."""
    from tests.browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture(scope="session")
def served_demo(tmp_path_factory: pytest.TempPathFactory, eunomia: dict[str, pa.Table]):  # type: ignore[no-untyped-def]
    """``fedflow server start``'s flow library on the demo federation, with one finished run."""
    from tests.served import served_demo

    with served_demo(tmp_path_factory.mktemp("served"), eunomia) as served:
        yield served


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
