"""The flow library as Prefect deployments, served beside a Prefect server for the UI.

``fedflow server start --federation federation.yaml`` (:func:`served_library`) starts a Prefect
server (SQLite under its home folder, or PostgreSQL given a ``postgresql+asyncpg://`` URL) and
serves one deployment of every federated flow, so that an operator starts any federated
analysis from the Prefect UI's *Run* form, with the profile as the default ``federation``:

======================  ==================================================================
deployment              what it runs
======================  ==================================================================
federated-analysis/…    one federated step of any registered analysis (``analysis`` is a
                        drop-down of the registry; ``params`` its parameters, as JSON)
glm/…                   an exact federated GLM (:mod:`flows.glm`)
cox/…                   an exact federated Cox model (:mod:`flows.cox`)
kaplan-meier/…          Kaplan-Meier curves and the log-rank test (:mod:`flows.km`)
gwas/…                  a federated GWAS (:mod:`flows.gwas`)
beacon/…                a Beacon v2 variant query (:mod:`flows.beacon`)
======================  ==================================================================

The deployments are named after the federation (``federated-analysis/fedflow-demo``), so one
server can serve several federations. A run executes in its own process, started by the
runner here (Prefect's ``Runner``, as ``prefect.serve`` uses); it opens the profile's sites
for its duration. Results, per-site outcomes, airlock decisions and a summary are the run's
artifacts; governance decisions are its events (:mod:`flows.events`).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from prefect import Flow, flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from fedflow.core.registry import default_registry
from fedflow.core.regression import Family
from flows.beacon import query_beacon
from flows.cox import cox_flow
from flows.errors import FlowError
from flows.federated import federated_analysis
from flows.federation import Federation
from flows.glm import glm_flow
from flows.gwas import GwasOptions, gwas_flow
from flows.km import KmResult, run_km
from flows.server import prefect_api

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "LibraryNotServed",
    "ServedLibrary",
    "beacon_flow",
    "km_flow",
    "library_deployments",
    "library_flows",
    "served_library",
]

DEFAULT_DEPLOYMENT = "fedflow"
"""The deployments' name when no federation profile is given."""
POLL_SECONDS = 2.0
"""How often the runner asks the server for runs to start."""


class LibraryNotServed(FlowError):
    """The runner serving the flow library did not start or stopped unexpectedly."""


@flow(name="kaplan-meier", flow_run_name="kaplan-meier")
def km_flow(
    params: dict[str, Any],
    federation: str,
    dataset: str | None = None,
    min_sites: int = 1,
) -> KmResult:
    """Kaplan-Meier curves by group over ``federation`` and the log-rank test between them.

    ``params``: the ``kaplan_meier`` analysis's parameters (entry, event, groups, grid).
    """
    km = run_km(params, federation=federation, dataset=dataset, min_sites=min_sites)
    if km.logrank is not None:
        create_table_artifact(
            key="kaplan-meier-logrank",
            table=[km.logrank],
            description=f"log-rank test over {km.curve['group'].n_unique()} group(s)",
        )
    return km


@flow(name="beacon", flow_run_name="beacon")
def beacon_flow(request: dict[str, Any], federation: str) -> dict[str, Any]:
    """Answer a Beacon v2 variant request (``query.requestParameters``) over ``federation``."""
    response = query_beacon(request, federation=federation)
    summary = response["responseSummary"]
    create_markdown_artifact(
        key="beacon-response",
        markdown=(
            f"# Beacon {response['meta']['returnedGranularity']} response\n\n"
            f"exists: **{summary['exists']}**"
            + (f", {summary['numTotalResults']} result(s)" if "numTotalResults" in summary else "")
        ),
        description="the Beacon v2 response summary",
    )
    return response


def library_flows() -> list[Flow[Any, Any]]:
    """Every federated flow an operator can start from the UI."""
    return [federated_analysis, glm_flow, cox_flow, km_flow, gwas_flow, beacon_flow]


def library_deployments(
    federation: Path | None = None, *, name: str | None = None
) -> list[RunnerDeployment]:
    """A deployment of every flow of :func:`library_flows`, named ``name`` (default: the
    federation's name), with ``federation`` (a profile) as the default ``federation``
    parameter and drop-downs for the parameters with a fixed set of values."""
    profile = None if federation is None else Federation.load(federation)
    name = name or (profile.name if profile is not None else DEFAULT_DEPLOYMENT)
    defaults = {} if profile is None else {"federation": str(profile.path)}
    choices: dict[str, dict[str, list[str]]] = {
        "federated-analysis": {"analysis": sorted({a.name for a in default_registry()})},
        "glm": {"family": list(get_args(Family))},
        "gwas": {
            "family": list(get_args(GwasOptions.model_fields["family"].annotation)),
            "test": list(get_args(GwasOptions.model_fields["test"].annotation)),
        },
    }
    deployments = []
    for library_flow in library_flows():
        deployment = library_flow.to_deployment(
            name,
            parameters=dict(defaults),
            tags=["fedflow", name],
            description=library_flow.description,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        assert isinstance(deployment, RunnerDeployment)  # to_deployment is sync here
        properties = deployment._parameter_openapi_schema.properties
        for parameter, values in choices.get(library_flow.name, {}).items():
            properties[parameter]["enum"] = values
        deployments.append(deployment)
    return deployments


@dataclass(frozen=True)
class ServedLibrary:
    """A running Prefect server with the flow library served: where to find it."""

    api_url: str
    deployments: tuple[str, ...]
    """``flow-name/deployment-name`` of every served deployment."""

    @property
    def ui_url(self) -> str:
        """The Prefect UI (the server's root)."""
        return self.api_url.removesuffix("/api")


@contextmanager
def served_library(
    home: Path,
    *,
    federation: Path | None = None,
    database_url: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    limit: int | None = None,
    timeout: float = 120.0,
) -> Iterator[ServedLibrary]:
    """Start a Prefect server (under ``home``) and serve the flow library until the block ends.

    The runner runs in a thread of this process and starts each flow run in a process of its
    own (at most ``limit`` at once); at the end it stops (cancelling runs still going) and the
    server stops. ``PREFECT_API_URL`` points at the server meanwhile, so flows run here and
    the runs' processes report to it.
    """
    from prefect.runner import Runner

    with prefect_api(
        home, timeout=timeout, host=host, port=port, database_url=database_url, reuse=False
    ) as api:
        deployments = library_deployments(federation)  # while the server starts
        url = api.wait()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            runner = Runner(
                name=f"fedflow-{deployments[0].name}",
                query_seconds=POLL_SECONDS,
                limit=limit,
                pause_on_shutdown=False,
            )
            for deployment in deployments:
                runner.add_deployment(deployment)
            with _running(runner, timeout):
                yield ServedLibrary(url, tuple(f"{d.flow_name}/{d.name}" for d in deployments))
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@contextmanager
def _running(runner: Any, timeout: float) -> Iterator[None]:
    """Run ``runner`` in a thread (with this context's Prefect settings) for the block."""
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(runner.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(main,), name="fedflow-runner", daemon=True)
    thread.start()
    _wait_started(runner, thread, failure, timeout)
    try:
        yield
    finally:
        if thread.is_alive() and runner._loop is not None:
            runner.execute_in_background(runner.astop).result(timeout=timeout)
        thread.join(timeout)


def _wait_started(
    runner: Any, thread: threading.Thread, failure: Sequence[BaseException], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not (runner.started and runner._loop is not None):
        if not thread.is_alive():
            cause = failure[0] if failure else None
            raise LibraryNotServed(f"the runner stopped while starting: {cause!r}") from cause
        if time.monotonic() > deadline:
            raise LibraryNotServed(f"the runner did not start within {timeout:g} s")
        time.sleep(0.05)
