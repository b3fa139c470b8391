"""``fedflow server start``'s Python entry point: a Prefect server with the flow library served.

One server for the session (the ``served_demo`` fixture, ``tests/served.py``, shared with
``test_prefect_ui.py``).
"""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

from tests.served import ANALYSIS, FLOWS, ServedDemo, served_client


def test_every_federated_flow_is_deployed_with_the_profile_as_default(
    served_demo: ServedDemo,
) -> None:
    assert served_demo.served.deployments == tuple(f"{f}/fedflow-demo" for f in FLOWS)
    with served_client(served_demo) as client:
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

    with served_client(served_demo) as client:
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
    with served_client(served_demo) as client:
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

    events = _events(served_demo, run.id, expected=3)
    names = {(e["event"], e["resource"]) for e in events}
    assert ("fedflow.gate.denied", "fedflow.site.uk-registry") in names
    for site in ("eu-hospital", "us-clinic"):  # one event each: the airlock's, after an allow
        (event,) = [e for e in events if e["resource"] == f"fedflow.site.{site}"]
        assert event["event"] in _AIRLOCK and event["payload"]["verdict"] == "allow"
    denied = next(e for e in events if e["event"] == "fedflow.gate.denied")
    assert any(ANALYSIS in r for r in denied["payload"]["reasons"])
    # Decisions only: no value of the result reaches an event.
    text = json.dumps([e["payload"] for e in events])
    for row in result:
        for value in row.values():
            if isinstance(value, float) and value != int(value):
                assert repr(value) not in text


_AIRLOCK = ("fedflow.airlock.released", "fedflow.airlock.suppressed")


def _table(data: Any) -> list[dict[str, Any]]:
    rows = json.loads(data) if isinstance(data, str) else data
    assert isinstance(rows, list)
    return rows


def _events(
    served: ServedDemo, run_id: UUID, *, expected: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The run's fedflow events, once the server has stored at least ``expected`` of them."""
    query = EventFilter(
        event=EventNameFilter(prefix=["fedflow."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
    )
    deadline = time.monotonic() + timeout
    with served_client(served) as client:
        while True:
            page = client.read_events(query, limit=50)
            if len(page.events) >= expected or time.monotonic() > deadline:
                return [
                    {"event": e.event, "resource": e.resource.id, "payload": e.payload}
                    for e in page.events
                ]
            time.sleep(0.5)
