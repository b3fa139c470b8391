"""The flow library served by ``fedflow server start``'s entry point, with one finished run.

Shared by ``tests/flows/test_deploy.py`` and ``tests/flows/test_prefect_ui.py`` through the
session fixture ``served_demo`` (``tests/conftest.py``): the demo federation over Eunomia,
every federated flow deployed, and one flow run of ``numeric_summary`` started from its
deployment through the Prefect API, as the UI's *Run* button does. ``uk-registry``'s policy
does not allow that analysis, so the run shows both a pre-gate denial and airlock releases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.demo import DEMO_ANALYSES, DEMO_SITES, build_demo, split_by_person
from flows.deploy import ServedLibrary, served_library

__all__ = ["ANALYSIS", "FLOWS", "PARAMS", "ServedDemo", "served_client", "served_demo"]

ANALYSIS = "numeric_summary"
PARAMS = next(p for name, _, p in DEMO_ANALYSES if name == ANALYSIS)
FLOWS = ("federated-analysis", "glm", "cox", "kaplan-meier", "gwas", "beacon")
RUN_TIMEOUT = 240.0


@dataclass(frozen=True)
class ServedDemo:
    """The served library, its federation profile and the finished flow run."""

    served: ServedLibrary
    profile: Path
    run: FlowRun


@contextmanager
def served_demo(root: Path, eunomia: dict[str, pa.Table]) -> Iterator[ServedDemo]:
    """The flow library served for the demo federation, with one finished federated run."""
    parts = split_by_person(eunomia, [s.share for s in DEMO_SITES], seed=7)
    profile = build_demo(root / "federation", parts)
    with served_library(root / "prefect", federation=profile, timeout=RUN_TIMEOUT) as served:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("federated-analysis/fedflow-demo")
            created = client.create_flow_run_from_deployment(
                deployment.id, parameters={"analysis": ANALYSIS, "params": PARAMS}
            )
            run = _finished(client, created.id)
        yield ServedDemo(served, profile, run)


@contextmanager
def served_client(served: ServedDemo) -> Iterator[SyncPrefectClient]:
    """A Prefect client of the served server itself.

    Not the one the ambient settings name: other tests' fixtures change those during the
    session, and their flows may run on either server.
    """
    with (
        temporary_settings(updates={PREFECT_API_URL: served.served.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _finished(client: Any, run_id: UUID) -> FlowRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        run: FlowRun = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(0.5)
    pytest.fail(f"flow run {run_id} did not finish within {RUN_TIMEOUT:g} s")
