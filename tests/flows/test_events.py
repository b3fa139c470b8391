"""flows.events: the governance events a federated step's decisions become (no server needed;
``test_deploy.py`` checks that a served run's events reach the Prefect API)."""

from __future__ import annotations

import json

from flows.events import governance_events
from flows.outcomes import SiteOutcome, SiteStatus

GATE = {
    site: {
        "verdict": verdict,
        "reasons": [reason],
        "rules": ["policy.analyses"],
        "policy_digest": f"sha256:{site}",
        "decision_digest": f"sha256:d-{site}",
    }
    for site, verdict, reason in (
        ("eu", "allow", "analysis cohort_count@1.0 is allowed"),
        ("us", "allow", "analysis cohort_count@1.0 is allowed"),
        ("uk", "deny", "analysis cohort_count is not allowed at this site"),
        ("de", "allow", "analysis cohort_count@1.0 is allowed"),
        ("fr", "allow", "analysis cohort_count@1.0 is allowed"),
    )
}
OUTCOMES = [
    SiteOutcome(
        "eu", SiteStatus.SUPPRESSED, "gate_after", ("2 cell(s) below 10",), 2, "j1", {"result": "r"}
    ),
    SiteOutcome("us", SiteStatus.REVIEW_PENDING, "review", ("held for review",)),
    SiteOutcome("uk", SiteStatus.REFUSED, "gate_before", ("not allowed",)),
    SiteOutcome("de", SiteStatus.FAILED, "run", ("site unreachable (timeout)",)),
    SiteOutcome("fr", SiteStatus.REFUSED, "gate_after", ("differencing risk",), job_id="j5"),
    SiteOutcome("it", SiteStatus.SKIPPED, "-", ("the step stopped at de's failure",)),
]


def test_each_decision_is_an_event_on_its_site() -> None:
    events = governance_events("cohort_count", "req1", OUTCOMES, GATE, min_sites=1)
    seen = [(e["event"], e["resource"]["prefect.resource.id"]) for e in events]
    assert seen == [
        ("fedflow.airlock.suppressed", "fedflow.site.eu"),
        ("fedflow.airlock.review", "fedflow.site.us"),
        ("fedflow.gate.denied", "fedflow.site.uk"),
        ("fedflow.site.failed", "fedflow.site.de"),
        ("fedflow.airlock.refused", "fedflow.site.fr"),
        ("fedflow.site.skipped", "fedflow.site.it"),
    ]  # one event per site: where it ended
    for event in events:
        related = {r["prefect.resource.id"]: r["prefect.resource.role"] for r in event["related"]}
        assert related == {
            "fedflow.request.req1": "request",
            "fedflow.analysis.cohort_count": "analysis",
        }
        assert event["payload"]["request_id"] == "req1"
    suppressed = events[0]["payload"]
    assert suppressed["suppressed_cells"] == 2 and suppressed["result_digest"] == "r"
    # an event after the pre-gate carries its decision; a site never asked has none
    assert suppressed["verdict"] == "allow" and suppressed["decision_digest"] == "sha256:d-eu"
    assert suppressed["rules"] == ["policy.analyses"] and suppressed["policy_digest"] == "sha256:eu"
    assert events[3]["payload"]["verdict"] == "allow"  # de failed after its pre-gate allowed
    assert "verdict" not in events[5]["payload"]
    denied = events[2]["payload"]
    assert denied["reasons"] == ["analysis cohort_count is not allowed at this site"]
    assert denied["verdict"] == "deny" and "outcome" not in denied


def test_a_missed_quorum_names_the_sites_that_did_not_contribute() -> None:
    events = governance_events("cohort_count", "req1", OUTCOMES, GATE, min_sites=2)
    quorum = events[-1]
    assert quorum["event"] == "fedflow.quorum.failed"
    assert quorum["resource"]["prefect.resource.id"] == "fedflow.request.req1"
    assert quorum["payload"]["min_sites"] == 2
    assert quorum["payload"]["contributed"] == ["eu"]
    assert quorum["payload"]["missing"] == {
        "us": "review_pending",
        "uk": "refused",
        "de": "failed",
        "fr": "refused",
        "it": "skipped",
    }
    assert all(e["event"] != "fedflow.quorum.failed" for e in events[:-1])


def test_payloads_carry_decisions_only() -> None:
    events = governance_events("cohort_count", "req1", OUTCOMES, GATE, min_sites=9)
    allowed = {
        "analysis", "request_id", "verdict", "reasons", "rules", "policy_digest",
        "decision_digest", "outcome", "stage", "suppressed_cells", "job_id", "result_digest",
        "review_digest", "min_sites", "contributed", "missing",
    }  # fmt: skip
    for event in events:
        assert set(event["payload"]) <= allowed
        json.dumps(event)  # plain JSON: what the events API stores
