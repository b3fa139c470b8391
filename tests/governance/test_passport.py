"""GA4GH Passport visas: accepted, forged, expired, untrusted, and purposes matched to consent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from fedflow.core.messages import Decision, Request, Verdict
from flows.analyses.cohort_count import CohortCount
from governance import duo
from governance.errors import PolicyInvalid, TokenRejected
from governance.identity import Identity, IssuerKey, TrustedIssuer, issue_token, verify_token
from governance.passport import (
    CONTROLLED_ACCESS_GRANTS,
    RESEARCHER_STATUS,
    TERMS_AND_POLICIES,
    PassportPolicy,
    VisaIssuer,
    issue_visa,
    verify_passport,
)
from governance.policy import SitePolicy

DAC = "https://dac.example.org"
DATASET = "https://dac.example.org/datasets/eunomia"
TERMS = "https://dac.example.org/dua/v1"
NOW = datetime.now(UTC).replace(microsecond=0)
COHORT = {"domain": "condition", "concept_ids": [192671]}


@pytest.fixture(scope="module")
def dac() -> IssuerKey:
    return IssuerKey.generate(DAC)


@pytest.fixture(scope="module")
def policy(dac: IssuerKey, tmp_path_factory: pytest.TempPathFactory) -> SitePolicy:
    folder = tmp_path_factory.mktemp("policy")
    dac.save(folder, "dac")
    raw = {
        "analyses": [{"name": "cohort_count"}],
        "datasets": {
            "omop": {
                "tables": {"person": "*", "condition_occurrence": "*"},
                "consent": ["HMB"],
                "controlled_access": [DATASET],
                "terms": [TERMS],
            }
        },
        "passport": {
            "visa_issuers": [{"issuer": DAC, "public_key": "dac.pub.pem"}],
            "max_assertion_age_days": 365,
        },
    }
    (folder / "policy.yaml").write_text(yaml.safe_dump(raw))
    return SitePolicy.load(folder / "policy.yaml")


def _visa(key: IssuerKey, kind: str = CONTROLLED_ACCESS_GRANTS, **kw: Any) -> str:
    args: dict[str, Any] = {
        "researcher": "alice",
        "type": kind,
        "value": {CONTROLLED_ACCESS_GRANTS: DATASET, TERMS_AND_POLICIES: TERMS}.get(kind, "bona"),
        "source": DAC,
        "by": "dac",
        "now": NOW - timedelta(days=1),
    }
    args.update(kw)
    return issue_visa(key, **args)


def _good(key: IssuerKey) -> list[str]:
    return [_visa(key), _visa(key, TERMS_AND_POLICIES, by="self")]


def _identity(visas: list[str], purpose: str = "DUO:0000007") -> Identity:
    return Identity(
        researcher="alice",
        project="p",
        purpose=purpose,
        issuer="https://aai.example.org",
        audience="fedflow",
        expires_at=NOW + timedelta(hours=1),
        token_id="t",
        passport=tuple(visas),
    )


def decide(policy: SitePolicy, identity: Identity) -> Decision:
    analysis = CohortCount()
    params = analysis.parse_params(COHORT)
    request = Request(analysis=analysis.ref(), params=COHORT, dataset="omop", token="t")
    return policy.evaluate(
        site="s",
        request=request,
        identity=identity,
        analysis=analysis,
        tables=analysis.tables(params),
        params=params,
        now=NOW,
    )


def test_a_token_carries_visas_to_the_site(dac: IssuerKey) -> None:
    aai = IssuerKey.generate("https://aai.example.org")
    visas = _good(dac)
    token = issue_token(
        aai, researcher="alice", project="p", purpose="HMB", audience="fedflow", visas=visas
    )
    identity = verify_token(
        token, trusted=[TrustedIssuer(aai.issuer, aai.public_pem)], audience="fedflow"
    )
    assert identity.passport == tuple(visas)
    bad = jwt.encode(
        {**jwt.decode(token, options={"verify_signature": False}), "ga4gh_passport_v1": "x"},
        aai._signing_key(),
        algorithm="EdDSA",
    )
    with pytest.raises(TokenRejected, match="list of visas"):
        verify_token(bad, trusted=[TrustedIssuer(aai.issuer, aai.public_pem)], audience="fedflow")


def test_valid_visas_open_a_controlled_dataset(policy: SitePolicy, dac: IssuerKey) -> None:
    decision = decide(policy, _identity(_good(dac)))
    assert decision.verdict is Verdict.ALLOW, decision.reasons
    assert "2 visa(s) verified (AcceptedTermsAndPolicies, ControlledAccessGrants)" in (
        decision.reasons
    )
    assert "passport.visa_issuers" in decision.rules and "datasets.omop" in decision.rules


@pytest.mark.parametrize(
    ("visas", "reason", "rule"),
    [
        (lambda k: [], "needs a valid ControlledAccessGrants visa", "controlled_access"),
        (lambda k: [_visa(k)], "needs AcceptedTermsAndPolicies visas", "terms"),
        # a grant asserted by the researcher's peer is verified but not honoured
        (lambda k: [_visa(k, by="peer"), _good(k)[1]], "ControlledAccessGrants", "controlled"),
        # a visa with conditions this site does not evaluate is not used (v1.2)
        (lambda k: [_visa(k, conditions=[[{"type": "x"}]]), _good(k)[1]], "Controlled", "con"),
        (lambda k: [_visa(k, value="https://other/ds"), _good(k)[1]], "ControlledAccess", "con"),
    ],
)
def test_missing_or_unusable_visas_leave_the_dataset_closed(
    policy: SitePolicy, dac: IssuerKey, visas: Any, reason: str, rule: str
) -> None:
    decision = decide(policy, _identity(visas(dac)))
    assert decision.verdict is Verdict.DENY
    assert any(reason in r for r in decision.reasons)
    assert any(r.startswith(f"datasets.omop.{rule}") for r in decision.rules)


@pytest.mark.parametrize(
    ("make", "failure"),
    [
        # signed by a key that is not the DAC's, under the DAC's name
        (lambda k: _visa(IssuerKey.generate(DAC)), "bad_signature"),
        (lambda k: _visa(IssuerKey.generate("https://rogue.example")), "untrusted_issuer"),
        (lambda k: _visa(k, now=NOW - timedelta(days=400), ttl=timedelta(days=30)), "expired"),
        (lambda k: _visa(k, asserted=NOW - timedelta(days=500), now=NOW), "assertion_too_old"),
        (lambda k: _visa(k, asserted=NOW + timedelta(days=2), now=NOW), "not_yet_valid"),
        (lambda k: _visa(k, researcher="mallory"), "wrong_subject"),
        (
            lambda k: jwt.encode(
                jwt.decode(_visa(k), options={"verify_signature": False}),
                "a-shared-secret-of-at-least-32-bytes",
                algorithm="HS256",
            ),
            "unsupported_algorithm",
        ),
        (lambda k: "not.a.visa", "malformed"),
    ],
)
def test_a_forged_or_stale_visa_refuses_the_request(
    policy: SitePolicy, dac: IssuerKey, make: Any, failure: str
) -> None:
    visas = [_good(dac)[1], make(dac)]
    decision = decide(policy, _identity(visas))
    assert decision.verdict is Verdict.DENY
    kind = "unknown" if failure == "malformed" else CONTROLLED_ACCESS_GRANTS
    assert decision.reasons[0] == f"visa 2 ({kind}) rejected: {failure}"
    assert decision.rules[0] == "passport"
    # the reason names the visa by position and type, never its contents
    assert not any(DATASET in r or "mallory" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("purpose", "allowed"),
    [
        ("DUO:0000006", True),  # HMB within HMB consent
        ("DUO:0000007", True),  # DS is a kind of HMB
        ("DS", True),
        ("DUO:0000042", False),  # GRU is wider than HMB
        ("DUO:0000011", False),  # POA is not HMB
        ("disease-specific research", False),  # not a DUO purpose: cannot be matched
    ],
)
def test_the_purpose_must_be_within_the_datasets_consent(
    policy: SitePolicy, dac: IssuerKey, purpose: str, allowed: bool
) -> None:
    decision = decide(policy, _identity(_good(dac), purpose=purpose))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reasons == (
            "the purpose is not within the consent of dataset omop (HMB; DUO hierarchy) "
            "(datasets.omop.consent)",
        )


def test_duo_hierarchy_and_researcher_status(dac: IssuerKey) -> None:
    assert duo.permits(["GRU"], "DUO:0000007") and duo.permits(["NRES"], "anything")
    assert not duo.permits(["DS"], "HMB") and duo.ancestors("DUO:0000007") == (
        "DUO:0000006",
        "DUO:0000042",
    )
    rules = PassportPolicy(
        visa_issuers=[VisaIssuer(issuer=DAC, public_key_pem=dac.public_pem.decode())]
    )
    passport = verify_passport(
        [_visa(dac, RESEARCHER_STATUS, by="so")], policy=rules, subject="alice"
    )
    assert passport.bona_fide and not passport.grants and not passport.problems


def test_policy_rejects_bad_passport_sections(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match="consent"):
        SitePolicy.parse({"datasets": {"d": {"tables": {"t": "*"}, "consent": ["DUO:9999999"]}}})
    with pytest.raises(PolicyInvalid, match="grant_by"):
        SitePolicy.parse({"passport": {"grant_by": ["anyone"]}})
    (tmp_path / "rsa.pem").write_text("not a key")
    with pytest.raises(PolicyInvalid, match="public_key_pem"):
        SitePolicy.parse(
            {"passport": {"visa_issuers": [{"issuer": DAC, "public_key": "rsa.pem"}]}},
            base=tmp_path,
        )


def test_untrusted_visas_can_be_ignored_but_forged_ones_never(
    policy: SitePolicy, dac: IssuerKey
) -> None:
    lenient = policy.model_copy(
        update={"passport": policy.passport.model_copy(update={"untrusted_visas": "ignore"})}
    )
    rogue = _visa(IssuerKey.generate("https://other-dac.example"))
    allowed = decide(lenient, _identity([rogue, *_good(dac)]))
    assert allowed.verdict is Verdict.ALLOW, allowed.reasons
    assert "visa 1 (ControlledAccessGrants) ignored: untrusted_issuer" in allowed.reasons
    forged = decide(lenient, _identity([_visa(IssuerKey.generate(DAC)), *_good(dac)]))
    assert forged.reasons[0] == "visa 1 (ControlledAccessGrants) rejected: bad_signature"


def test_a_site_without_visa_issuers_does_not_examine_visas(dac: IssuerKey) -> None:
    plain = SitePolicy.parse(
        {
            "analyses": [{"name": "cohort_count"}],
            "datasets": {"omop": {"tables": {"person": "*", "condition_occurrence": "*"}}},
        }
    )
    decision = decide(plain, _identity(["not.a.visa", *_good(dac)]))
    assert decision.verdict is Verdict.ALLOW
    assert "3 visa(s) not examined: this site trusts no visa issuer" in decision.reasons
