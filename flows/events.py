"""Governance decisions of a federated step as Prefect events.

Each site of a step gets one event (resource ``fedflow.site.<name>``), named after where it
ended: its pre-gate's denial, its airlock's decision, or its failure. An event after the
pre-gate carries the pre-gate's decision too (verdict, rules, policy and decision digests), so
a site that was allowed and released is one event, not two: a step over 100 sites emits 100
events, and each costs the orchestrator and the Prefect server a few milliseconds of CPU.
Events are related to the request (``fedflow.request.<id>``) and the analysis
(``fedflow.analysis.<name>``); Prefect's events worker adds the flow run, flow, deployment
and task run the step runs in, so the Prefect UI's event feed of a flow run shows them and an
automation can trigger on them. Events carry decisions only: verdicts, outcomes, reasons,
rule names, counts of suppressed cells and digests, never a row or a cell value.

==========================  ==========================================================
event                       when
==========================  ==========================================================
``fedflow.gate.denied``     the site's pre-gate refused the request
``fedflow.airlock.<x>``     the site's airlock decided: ``released``, ``suppressed``
                            (released with suppressed cells), ``refused``, ``review``
                            (held for the custodian, undecided when the wait ended)
``fedflow.site.failed``     the site failed (unreachable, crashed, timed out)
``fedflow.site.skipped``    the site was not asked (the step stopped first, or a fit
                            dropped it earlier)
``fedflow.quorum.failed``   fewer sites contributed than the step needs (resource
                            ``fedflow.request.<id>``)
==========================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect.events import emit_event

from flows.outcomes import SiteOutcome, SiteStatus

__all__ = [
    "AIRLOCK_EVENTS",
    "EVENT_PREFIX",
    "emit_governance",
    "governance_events",
    "site_resource",
]

EVENT_PREFIX = "fedflow."
AIRLOCK_EVENTS = {
    SiteStatus.RELEASED: "fedflow.airlock.released",
    SiteStatus.SUPPRESSED: "fedflow.airlock.suppressed",
    SiteStatus.REFUSED: "fedflow.airlock.refused",
    SiteStatus.REVIEW_PENDING: "fedflow.airlock.review",
}
"""The event of each airlock outcome (a refusal at the pre-gate is ``fedflow.gate.denied``)."""


def site_resource(site: str) -> dict[str, str]:
    """The Prefect resource of a site."""
    return {"prefect.resource.id": f"fedflow.site.{site}", "prefect.resource.name": site}


def governance_events(
    analysis: str,
    request_id: str,
    outcomes: Sequence[SiteOutcome],
    gate: Mapping[str, Mapping[str, Any]],
    min_sites: int,
) -> list[dict[str, Any]]:
    """The events of one step's decisions, as keyword arguments of ``emit_event``.

    ``gate``: the pre-gate's decision per site that answered (verdict, reasons, rules,
    policy and decision digests); ``outcomes``: every site's outcome, in profile order. One
    event per outcome, in that order, and ``fedflow.quorum.failed`` last when it applies.
    """
    related = [
        {
            "prefect.resource.id": f"fedflow.request.{request_id}",
            "prefect.resource.role": "request",
        },
        {
            "prefect.resource.id": f"fedflow.analysis.{analysis}",
            "prefect.resource.role": "analysis",
        },
    ]
    base = {"analysis": analysis, "request_id": request_id}
    events: list[dict[str, Any]] = []
    for outcome in outcomes:
        decision = gate.get(outcome.site, {})
        verdict = (
            {
                "verdict": decision.get("verdict"),
                "rules": list(decision.get("rules", ())),
                "policy_digest": decision.get("policy_digest"),
                "decision_digest": decision.get("decision_digest"),
            }
            if decision
            else {}
        )
        if decision and decision.get("verdict") != "allow":
            name = "fedflow.gate.denied"
            payload = {"reasons": list(decision.get("reasons", ())), **verdict}
        else:
            name = AIRLOCK_EVENTS.get(outcome.status) or f"fedflow.site.{outcome.status.value}"
            payload = {
                "outcome": outcome.status.value,
                "stage": outcome.stage,
                "reasons": list(outcome.reasons),
                "suppressed_cells": outcome.suppressed_cells,
                "job_id": outcome.job_id,
                "result_digest": outcome.digests.get("result"),
                "review_digest": outcome.digests.get("review"),
                **verdict,
            }
        events.append(
            {
                "event": name,
                "resource": site_resource(outcome.site),
                "related": related,
                "payload": base | payload,
            }
        )
    contributed = [o.site for o in outcomes if o.contributed]
    if len(contributed) < min_sites:
        events.append(
            {
                "event": "fedflow.quorum.failed",
                "resource": {
                    "prefect.resource.id": f"fedflow.request.{request_id}",
                    "prefect.resource.name": request_id,
                },
                "related": [related[1]],  # the sites go in the payload: a step may have 100s
                "payload": base
                | {
                    "min_sites": min_sites,
                    "contributed": contributed,
                    "missing": {o.site: o.status.value for o in outcomes if not o.contributed},
                },
            }
        )
    return events


def emit_governance(
    analysis: str,
    request_id: str,
    outcomes: Sequence[SiteOutcome],
    gate: Mapping[str, Mapping[str, Any]],
    min_sites: int,
) -> int:
    """Emit the step's governance events (see :func:`governance_events`); how many were sent."""
    sent = 0
    for event in governance_events(analysis, request_id, outcomes, gate, min_sites):
        if emit_event(**event) is not None:
            sent += 1
    return sent
