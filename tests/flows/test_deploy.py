"""``fedflow server start``'s Python entry point: a Prefect server with the flow library served.

One server for the session (``served_demo``, shared with ``test_prefect_ui.py``): the demo
federation over Eunomia, every federated flow deployed, and one flow run of
``numeric_summary`` started from its deployment through the Prefect API, as the UI's *Run*
button does. ``uk-registry``'s policy does not allow that analysis, so the run shows both a
pre-gate denial and airlock releases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

from flows.demo import DEMO_ANALYSES, DEMO_SITES, build_demo, split_by_person
from flows.deploy import ServedLibrary, served_library

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


_live: list[ServedDemo] = []  # so test_prefect_ui.py, importing the fixture, shares one server


@pytest.fixture(scope="session")
def served_demo(
    tmp_path_factory: pytest.TempPathFactory, eunomia: dict[str, pa.Table]
) -> Iterator[ServedDemo]:
    """The flow library served for the demo federation, with one finished federated run."""
    if _live:
        yield _live[0]
        return
    root = tmp_path_factory.mktemp("served")
    parts = split_by_person(eunomia, [s.share for s in DEMO_SITES], seed=7)
    profile = build_demo(root / "federation", parts)
    with served_library(root / "prefect", federation=profile, timeout=RUN_TIMEOUT) as served:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("federated-analysis/fedflow-demo")
            created = client.create_flow_run_from_deployment(
                deployment.id, parameters={"analysis": ANALYSIS, "params": PARAMS}
            )
            run = _finished(client, created.id)
        _live.append(ServedDemo(served, profile, run))
        try:
            yield _live[0]
        finally:
            _live.clear()


def test_every_federated_flow_is_deployed_with_the_profile_as_default(
    served_demo: ServedDemo,
) -> None:
    assert served_demo.served.deployments == tuple(f"{f}/fedflow-demo" for f in FLOWS)
    with get_client(sync_client=True) as client:
        for name in served_demo.served.deployments:
            deployment = client.read_deployment_by_name(name)
            assert deployment.parameters["federation"] == str(served_demo.profile.resolve())
            assert "federation" in deployment.parameter_openapi_schema["properties"]
        schema = client.read_deployment_by_name(
            "federated-analysis/fedflow-demo"
        ).parameter_openapi_schema
        assert {"cohort_count", ANALYSIS, "kaplan_meier"} <= set(
            schema["properties"]["analysis"]["enum"]
        )
        assert {"analysis", "params"} <= set(schema["required"])
        glm = client.read_deployment_by_name("glm/fedflow-demo").parameter_openapi_schema
        assert glm["properties"]["family"]["enum"] == ["gaussian", "binomial", "poisson"]


def test_the_server_refuses_parameters_outside_the_schema(served_demo: ServedDemo) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("federated-analysis/fedflow-demo")
        with pytest.raises(PrefectHTTPStatusError, match=r"409|422"):
            client.create_flow_run_from_deployment(
                deployment.id, parameters={"analysis": "no_such_analysis", "params": {}}
            )


def test_a_run_from_the_deployment_publishes_its_result_and_decisions(
    served_demo: ServedDemo,
) -> None:
    run = served_demo.run
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.name == ANALYSIS
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    by_key = {a.key: a for a in artifacts}
    slug = ANALYSIS.replace("_", "-")
    assert {f"{slug}-{k}" for k in ("result", "sites", "airlock", "summary")} <= set(by_key)
    result = _table(by_key[f"{slug}-result"].data)
    assert result and {"n", "mean"} <= set(result[0])
    airlock = {row["site"]: row for row in _table(by_key[f"{slug}-airlock"].data)}
    assert airlock["uk-registry"]["pre_gate"] == "deny"
    assert airlock["uk-registry"]["airlock"] == ""  # it never ran
    for site in ("eu-hospital", "us-clinic"):
        assert airlock[site]["pre_gate"] == "allow"
        assert airlock[site]["airlock"] in ("released", "released_with_suppression")
        assert airlock[site]["result_digest"].startswith("sha256:")
    summary = by_key[f"{slug}-summary"].data
    assert isinstance(summary, str) and "| uk-registry | refused | gate_before |" in summary

    events = _events(run.id, expected=5)
    names = {(e["event"], e["resource"]) for e in events}
    assert ("fedflow.gate.denied", "fedflow.site.uk-registry") in names
    for site in ("eu-hospital", "us-clinic"):
        assert ("fedflow.gate.allowed", f"fedflow.site.{site}") in names
        assert any(e == (n, f"fedflow.site.{site}") for n in _AIRLOCK for e in names)
    denied = next(e for e in events if e["event"] == "fedflow.gate.denied")
    assert any(ANALYSIS in r for r in denied["payload"]["reasons"])
    # Decisions only: no value of the result reaches an event.
    text = json.dumps([e["payload"] for e in events])
    for row in result:
        for value in row.values():
            if isinstance(value, float) and value != int(value):
                assert repr(value) not in text


_AIRLOCK = ("fedflow.airlock.released", "fedflow.airlock.suppressed")


def _finished(client: Any, run_id: UUID) -> FlowRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        run: FlowRun = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(0.5)
    pytest.fail(f"flow run {run_id} did not finish within {RUN_TIMEOUT:g} s")


def _table(data: Any) -> list[dict[str, Any]]:
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows


def _events(run_id: UUID, *, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The run's fedflow events, once the server has stored at least ``expected`` of them."""
    query = EventFilter(
        event=EventNameFilter(prefix=["fedflow."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(query, limit=50)
            if len(page.events) >= expected or time.monotonic() > deadline:
                return [
                    {"event": e.event, "resource": e.resource.id, "payload": e.payload}
                    for e in page.events
                ]
            time.sleep(0.5)
