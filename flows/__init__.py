"""Orchestration: the authoring API for federated analyses and the Prefect flows that run them.

Write an analysis::

    from flows import Analysis, OutputKind, Params, frequency, register

Run one::

    from flows import connect, run_analysis
    with connect(Path("federation.yaml")) as federation:
        result = run_analysis("cohort_count", {...}, federation=federation)
        result.result       # a polars DataFrame
        result.outcomes     # what each site did
"""

from fedflow.core import Analysis, OutputKind, Params, TableColumns, frequency, summary
from fedflow.core.registry import default_registry, register
from flows.errors import FlowError, ProfileInvalid, QuorumNotMet
from flows.federated import federated_analysis, run_analysis
from flows.federation import Federation, FederationSession, connect
from flows.outcomes import FederatedResult, SiteOutcome, SiteStatus
from flows.server import prefect_api

__all__ = [
    "Analysis",
    "FederatedResult",
    "Federation",
    "FederationSession",
    "FlowError",
    "OutputKind",
    "Params",
    "ProfileInvalid",
    "QuorumNotMet",
    "SiteOutcome",
    "SiteStatus",
    "TableColumns",
    "connect",
    "default_registry",
    "federated_analysis",
    "frequency",
    "prefect_api",
    "register",
    "run_analysis",
    "summary",
]
