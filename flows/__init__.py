"""Orchestration: the authoring API for federated analyses and the Prefect flows that run them.

Write an analysis::

    from flows import Analysis, OutputKind, Params, frequency, register

Run one::

    from flows import connect, run_analysis
    with connect(Path("federation.yaml")) as federation:
        result = run_analysis("cohort_count", {...}, federation=federation)
        result.result       # a polars DataFrame
        result.outcomes     # what each site did

Names are imported on first use, so a site that loads an analysis from ``flows.analyses``
never imports Prefect or any other orchestration code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedflow.core import Analysis, OutputKind, Params, TableColumns, frequency, summary
    from fedflow.core.registry import default_registry, register
    from flows.beacon import beacon_response, query_beacon
    from flows.cox import CoxFit, run_cox
    from flows.errors import (
        FlowError,
        LineageNotFound,
        ProfileInvalid,
        QuorumNotMet,
        ReviewPending,
        SiteFailed,
        StageFailed,
        StageTimedOut,
    )
    from flows.federated import federated_analysis, run_analysis
    from flows.federation import Federation, FederationSession, connect
    from flows.glm import GlmFit, fit_glm
    from flows.km import KmResult, run_km
    from flows.lineage import Lineage, read_lineage
    from flows.outcomes import FederatedResult, SiteOutcome, SiteStatus
    from flows.secure import MaskGroupIncomplete, SecureAggregationUnavailable
    from flows.server import prefect_api
    from flows.strategy import ErrorStrategy, StepPolicy

_EXPORTS = {
    "Analysis": "fedflow.core",
    "OutputKind": "fedflow.core",
    "Params": "fedflow.core",
    "TableColumns": "fedflow.core",
    "frequency": "fedflow.core",
    "summary": "fedflow.core",
    "default_registry": "fedflow.core.registry",
    "register": "fedflow.core.registry",
    "beacon_response": "flows.beacon",
    "query_beacon": "flows.beacon",
    "CoxFit": "flows.cox",
    "run_cox": "flows.cox",
    "FlowError": "flows.errors",
    "LineageNotFound": "flows.errors",
    "ProfileInvalid": "flows.errors",
    "QuorumNotMet": "flows.errors",
    "ReviewPending": "flows.errors",
    "SiteFailed": "flows.errors",
    "StageFailed": "flows.errors",
    "StageTimedOut": "flows.errors",
    "federated_analysis": "flows.federated",
    "run_analysis": "flows.federated",
    "Federation": "flows.federation",
    "FederationSession": "flows.federation",
    "connect": "flows.federation",
    "GlmFit": "flows.glm",
    "fit_glm": "flows.glm",
    "KmResult": "flows.km",
    "run_km": "flows.km",
    "Lineage": "flows.lineage",
    "read_lineage": "flows.lineage",
    "FederatedResult": "flows.outcomes",
    "SiteOutcome": "flows.outcomes",
    "SiteStatus": "flows.outcomes",
    "MaskGroupIncomplete": "flows.secure",
    "SecureAggregationUnavailable": "flows.secure",
    "prefect_api": "flows.server",
    "ErrorStrategy": "flows.strategy",
    "StepPolicy": "flows.strategy",
}

__all__ = [
    "Analysis",
    "CoxFit",
    "ErrorStrategy",
    "FederatedResult",
    "Federation",
    "FederationSession",
    "FlowError",
    "GlmFit",
    "KmResult",
    "Lineage",
    "LineageNotFound",
    "MaskGroupIncomplete",
    "OutputKind",
    "Params",
    "ProfileInvalid",
    "QuorumNotMet",
    "ReviewPending",
    "SecureAggregationUnavailable",
    "SiteFailed",
    "SiteOutcome",
    "SiteStatus",
    "StageFailed",
    "StageTimedOut",
    "StepPolicy",
    "TableColumns",
    "beacon_response",
    "connect",
    "default_registry",
    "federated_analysis",
    "fit_glm",
    "frequency",
    "prefect_api",
    "query_beacon",
    "read_lineage",
    "register",
    "run_analysis",
    "run_cox",
    "run_km",
    "summary",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flows' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    # Cache it, so the next lookup is an ordinary attribute.
    globals()[name] = value
    return value
