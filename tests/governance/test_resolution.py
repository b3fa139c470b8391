"""The policy's survival and beacon sections: validated, and decided at the pre-gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fedflow.core import Analysis
from fedflow.core.messages import Decision, Request, Verdict
from flows.analyses.beacon import BeaconVariant
from flows.analyses.cohort_count import CohortCount
from flows.analyses.cox_round import CoxRound
from flows.analyses.km import KaplanMeier
from governance.errors import PolicyInvalid
from governance.identity import Identity
from governance.policy import SitePolicy

ALICE = Identity(
    researcher="alice",
    project="p",
    purpose="research",
    issuer="https://issuer.example",
    audience="fedflow",
    expires_at=datetime.now(UTC) + timedelta(hours=1),
    token_id="t1",
)


def _drug(*ids: int) -> dict[str, Any]:
    return {"domain": "drug", "concept_ids": list(ids)}


GRID = {
    "entry": _drug(1118084),
    "event": {"domain": "condition", "concept_ids": [192671]},
    "groups": {"celecoxib": _drug(1118084)},
    "interval_days": 7,
    "max_days": 365,
}
REQUESTS: dict[str, tuple[Analysis[Any], dict[str, Any]]] = {
    "kaplan_meier": (KaplanMeier(), GRID),
    "cox_round": (CoxRound(), {**GRID, "formula": "group"}),
    "cohort_count": (CohortCount(), {"domain": "condition", "concept_ids": [192671]}),
    "beacon_variant": (
        BeaconVariant(),
        {"referenceName": "20", "start": 10019092, "alternateBases": "G"},
    ),
}


def _policy(**sections: Any) -> SitePolicy:
    return SitePolicy.parse(
        {
            "analyses": [{"name": name} for name in REQUESTS],
            "datasets": {"omop": {"tables": {t: "*" for t in _all_tables()}}},
            **sections,
        }
    )


def _all_tables() -> set[str]:
    tables: set[str] = set()
    for analysis, raw in REQUESTS.values():
        tables |= set(analysis.tables(analysis.parse_params(raw)))
    return tables


def _decide(policy: SitePolicy, name: str, **changes: Any) -> Decision:
    analysis, raw = REQUESTS[name]
    raw = {**raw, **changes}
    params = analysis.parse_params(raw)
    request = Request(analysis=analysis.ref(), params=raw, dataset="omop", token="t")
    return policy.evaluate(
        site="s",
        request=request,
        identity=ALICE,
        analysis=analysis,
        tables=analysis.tables(params),
        params=params,
    )


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"survival": {"min_interval_days": 0}}, "survival.min_interval_days"),
        ({"survival": {"min_interval_days": "monthly"}}, "survival.min_interval_days"),
        ({"survival": {"min_days": 30}}, "survival.min_days"),
        ({"beacon": {"granularity": "record"}}, "beacon.granularity"),
        ({"beacon": "boolean"}, "beacon"),
    ],
)
def test_invalid_sections_name_the_field(section: dict[str, Any], match: str) -> None:
    with pytest.raises(PolicyInvalid, match=match):
        SitePolicy.parse(section)


def test_defaults_change_nothing() -> None:
    policy = _policy()
    assert policy.survival.min_interval_days is None and policy.beacon.granularity == "count"
    for name in REQUESTS:
        decision = _decide(policy, name)
        assert decision.verdict is Verdict.ALLOW
        assert not any(r.startswith(("survival", "beacon")) for r in decision.rules)


@pytest.mark.parametrize("name", ["kaplan_meier", "cox_round"])
def test_a_grid_finer_than_the_minimum_is_refused(name: str) -> None:
    policy = _policy(survival={"min_interval_days": 30})
    refused = _decide(policy, name, interval_days=7)
    assert refused.verdict is Verdict.DENY
    assert refused.reasons == (
        "time grid of 7 days is finer than this site's minimum of 30 days "
        "(survival.min_interval_days)",
    )
    allowed = _decide(policy, name, interval_days=30)
    assert allowed.verdict is Verdict.ALLOW
    assert "survival.min_interval_days" in allowed.rules
    assert "time grid of 30 days meets this site's minimum of 30 days" in allowed.reasons
    # an analysis without a time grid is not touched by the rule
    assert "survival.min_interval_days" not in _decide(policy, "cohort_count").rules


def test_a_boolean_site_answers_a_count_query_as_boolean() -> None:
    policy = _policy(beacon={"granularity": "boolean"})
    decision = _decide(policy, "beacon_variant", requestedGranularity="count")
    assert decision.verdict is Verdict.ALLOW and "beacon.granularity" in decision.rules
    assert any("answered at boolean granularity" in r for r in decision.reasons)
    analysis, raw = REQUESTS["beacon_variant"]
    params = analysis.parse_params({**raw, "requestedGranularity": "count"})
    assert policy.answered_params(params).requestedGranularity == "boolean"
    # a boolean query, a count site and other analyses run as asked
    asked = analysis.parse_params({**raw, "requestedGranularity": "boolean"})
    assert policy.answered_params(asked) is asked
    assert _policy().answered_params(params) is params
    as_asked = _decide(policy, "beacon_variant", requestedGranularity="boolean")
    assert as_asked.verdict is Verdict.ALLOW and "beacon.granularity" not in as_asked.rules
    km, grid = REQUESTS["kaplan_meier"]
    gridded = km.parse_params(grid)
    assert policy.answered_params(gridded) is gridded
