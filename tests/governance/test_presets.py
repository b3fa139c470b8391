"""Jurisdiction presets: each one's concrete rules, its threshold default, and overrides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fedflow.core.messages import Decision, Request, Verdict
from flows.analyses.characterization import Characterization
from flows.analyses.cohort_count import CohortCount
from flows.analyses.numeric_summary import NumericSummary
from governance.errors import PolicyInvalid
from governance.identity import Identity, IssuerKey
from governance.passport import RESEARCHER_STATUS, issue_visa
from governance.policy import SitePolicy

ALICE = Identity(
    researcher="alice",
    project="gibleed-study",
    purpose="DUO:0000007",
    issuer="https://aai.example.org",
    audience="fedflow-eu",
    expires_at=datetime.now(UTC) + timedelta(hours=1),
    token_id="t",
)
COHORT = {"domain": "condition", "concept_ids": [192671]}


def _policy(jurisdiction: str, **sections: Any) -> SitePolicy:
    raw: dict[str, Any] = {
        "jurisdiction": jurisdiction,
        "analyses": [
            {"name": "cohort_count"},
            {"name": "numeric_summary"},
            {"name": "characterization"},
        ],
        "datasets": {
            "omop": {
                "tables": {"person": "*", "condition_occurrence": "*", "location": "*"},
                "purposes": ["DUO:0000006"],
            }
        },
        "access": {
            "researchers": ["alice"],
            "projects": ["gibleed-study"],
            "destinations": ["fedflow-eu"],
        },
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return SitePolicy.parse(raw)


def decide(
    policy: SitePolicy, identity: Identity = ALICE, analysis: Any = None, **params: Any
) -> Decision:
    analysis = analysis or CohortCount()
    raw = params or COHORT
    parsed = analysis.parse_params(raw)
    request = Request(analysis=analysis.ref(), params=raw, dataset="omop", token="t")
    return policy.evaluate(
        site="s",
        request=request,
        identity=identity,
        analysis=analysis,
        tables=analysis.tables(parsed),
        params=parsed,
    )


@pytest.mark.parametrize(
    ("jurisdiction", "threshold"), [("gdpr", 10), ("hipaa", 11), ("uk-five-safes", 10)]
)
def test_threshold_defaults_per_jurisdiction_and_overrides(
    jurisdiction: str, threshold: int
) -> None:
    assert _policy(jurisdiction).min_cell_count == threshold
    assert _policy(jurisdiction).differencing.k_for(threshold) == threshold
    assert _policy(jurisdiction, min_cell_count=25).min_cell_count == 25
    assert decide(_policy(jurisdiction)).allowed


def test_unknown_jurisdiction_is_refused() -> None:
    with pytest.raises(PolicyInvalid, match="jurisdiction"):
        _policy("mars")


def test_gdpr_purpose_limitation() -> None:
    policy = _policy("gdpr")
    assert decide(policy).allowed  # DS is within the declared HMB purpose
    refused = decide(policy, replace(ALICE, purpose="DUO:0000011"))  # ancestry research
    assert refused.verdict is Verdict.DENY
    assert refused.rules == ("gdpr.purpose_limitation",)
    assert refused.reasons[0].startswith("GDPR Art. 5(1)(b) purpose limitation")
    undeclared = _policy("gdpr", datasets={"omop": {"tables": {"person": "*"}}})
    assert "gdpr.purpose_limitation" in decide(undeclared).rules


def test_gdpr_releases_only_to_allowed_destinations() -> None:
    refused = decide(_policy("gdpr"), replace(ALICE, audience="fedflow-us"))
    assert refused.verdict is Verdict.DENY and refused.rules == ("access.destinations",)
    # the preset lists no destination: a GDPR site must name its own
    silent = _policy("gdpr", access={"destinations": []})
    assert not decide(silent).allowed


@pytest.mark.parametrize(
    ("column", "rule"),
    [
        ("birth_datetime", "hipaa.safe_harbor.dates"),
        ("month_of_birth", "hipaa.safe_harbor.dates"),
        ("year_of_birth", None),
    ],
)
def test_hipaa_safe_harbor_dates_in_columns(column: str, rule: str | None) -> None:
    summary = decide(_policy("hipaa"), analysis=NumericSummary(), table="person", column=column)
    if rule is None:
        assert summary.allowed
    else:
        assert summary.verdict is Verdict.DENY and summary.rules == (rule,)
        assert summary.reasons == (
            "HIPAA Safe Harbor: no date element finer than a year (birth day or month, "
            f"timestamps) may be used: person.{column} ({rule})",
        )


def test_hipaa_zip3_rule() -> None:
    # numeric_summary refuses identifiers, so the ZIP column is asked as a quantity
    zip_summary = decide(
        _policy("hipaa"), analysis=NumericSummary(), table="location", column="zip"
    )
    assert zip_summary.rules == ("hipaa.safe_harbor.zip3",)
    assert "location.zip" in zip_summary.reasons[0]
    assert decide(
        _policy("gdpr"), analysis=NumericSummary(), table="location", column="zip"
    ).allowed


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        ({"start_date": "2010-01-01", "end_date": "2012-12-31"}, True),
        ({"start_date": "2010-03-15"}, False),
        ({"min_age": 90}, True),  # the collapsed "90 or older" category
        ({"min_age": 93}, False),
        ({"max_age": 89}, True),
        ({"min_age": 80, "max_age": 95}, False),
    ],
)
def test_hipaa_date_parameters_and_ages_over_89(params: dict[str, Any], allowed: bool) -> None:
    decision = decide(_policy("hipaa"), **COHORT, **params)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rules[0].startswith("hipaa.safe_harbor.")
        # other jurisdictions do not apply Safe Harbor
        assert decide(_policy("gdpr"), **COHORT, **params).allowed


@pytest.mark.parametrize(
    ("top_age", "allowed"), [(None, False), (95, False), (90, True), (40, True)]
)
def test_hipaa_releases_ages_over_89_as_one_band(
    top_age: int | None, allowed: bool, eunomia: dict[str, Any]
) -> None:
    params = {**COHORT, "top_age": top_age} if top_age else COHORT
    decision = decide(_policy("hipaa"), analysis=Characterization(), **params)
    assert decision.allowed is allowed
    assert decide(_policy("gdpr"), analysis=Characterization(), **params).allowed
    if not allowed:
        assert decision.rules == ("hipaa.safe_harbor.age_bands_over_89",)
        return
    assert top_age is not None
    analysis = Characterization()

    def persons_by_band(raw: dict[str, Any]) -> dict[str, int]:
        parsed = analysis.parse_params(raw)
        rows = analysis.finalize(analysis.local(eunomia, parsed), parsed).to_pylist()
        return {r["age_band"]: r["count"] for r in rows if r["gender"] == "*"}

    collapsed, plain = persons_by_band(params), persons_by_band(COHORT)
    assert collapsed["*"] == plain["*"]
    above = sum(n for band, n in plain.items() if band != "*" and int(band[:2]) >= top_age)
    assert collapsed.get(f"{top_age}+", 0) == above  # Eunomia's GI bleeds: none at 90 or older
    assert all(b in ("*", f"{top_age}+") or int(b.split("-")[1]) < top_age for b in collapsed)


def test_a_site_switches_off_a_preset_rule() -> None:
    policy = _policy("hipaa", disabled_rules=["hipaa.safe_harbor.date_parameters"])
    assert decide(policy, **COHORT, start_date="2010-03-15").allowed
    assert not decide(policy, **COHORT, min_age=95).allowed


def test_uk_five_safes_safe_people_and_projects() -> None:
    anyone = _policy("uk-five-safes", access={"researchers": ["*"]})
    refused = decide(anyone)
    assert refused.rules == ("five_safes.safe_people",)
    assert decide(_policy("uk-five-safes")).allowed  # alice is named
    # a bona fide researcher (ResearcherStatus visa) passes where researchers are "*"
    key = IssuerKey.generate("https://so.example.org")
    passport = {"visa_issuers": [{"issuer": key.issuer, "public_key_pem": key.public_pem.decode()}]}
    visa = issue_visa(key, researcher="alice", type=RESEARCHER_STATUS, value="bf", source="so")
    with_visa = _policy("uk-five-safes", passport=passport, access={"researchers": ["*"]})
    assert decide(with_visa, replace(ALICE, passport=(visa,))).allowed
    wildcard = _policy("uk-five-safes", access={"projects": ["*"]})
    assert decide(wildcard).rules == ("five_safes.safe_projects",)
