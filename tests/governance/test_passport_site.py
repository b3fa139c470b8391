"""A site node with a controlled dataset: visa refusals are refused at the gate and audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from executors import SiteConfig, SiteNode
from fedflow.core.messages import Request, Verdict
from fedflow.core.registry import default_registry
from flows.demo import FEDERATION, ISSUER, DemoSite, build_demo
from governance.identity import IssuerKey, issue_token
from governance.passport import CONTROLLED_ACCESS_GRANTS, issue_visa

pytestmark = pytest.mark.integration

DAC = "https://dac.example.org"
GRANT = "https://dac.example.org/datasets/eunomia"
GI_BLEED = {"domain": "condition", "concept_ids": [192671]}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, eunomia) -> Iterator[SiteNode]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("passport-site")
    build_demo(root, [eunomia], sites=[DemoSite("controlled", "EU", 1.0, 10, ("cohort_count",))])
    home = root / "sites" / "controlled"
    dac = IssuerKey.generate(DAC)
    dac.save(home, "dac")
    policy = yaml.safe_load((home / "policy.yaml").read_text())
    policy["datasets"]["omop"].update(controlled_access=[GRANT], consent=["HMB"])
    policy["passport"] = {"visa_issuers": [{"issuer": DAC, "public_key": "dac.pub.pem"}]}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy))
    with SiteNode(SiteConfig.load(home / "site.yaml")) as node:
        node.issuer = IssuerKey.load(root / "issuer" / "demo-issuer.key.pem", ISSUER)  # type: ignore[attr-defined]
        node.dac = dac  # type: ignore[attr-defined]
        yield node


def _request(node: SiteNode, visas: list[str], purpose: str = "HMB") -> Request:
    token = issue_token(
        node.issuer,  # type: ignore[attr-defined]
        researcher="alice",
        project="gibleed-study",
        purpose=purpose,
        audience=FEDERATION,
        visas=visas,
    )
    ref = default_registry().get("cohort_count").ref()
    return Request(analysis=ref, params=GI_BLEED, dataset="omop", token=token)


def _grant(key: IssuerKey) -> str:
    return issue_visa(
        key, researcher="alice", type=CONTROLLED_ACCESS_GRANTS, value=GRANT, source=DAC
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("none", "dataset omop needs a valid ControlledAccessGrants visa for it"),
        ("forged", "visa 1 (ControlledAccessGrants) rejected: bad_signature"),
        ("purpose", "the purpose is not within the consent of dataset omop"),
    ],
)
def test_a_refused_visa_or_purpose_is_refused_and_audited(
    site: SiteNode, case: str, reason: str
) -> None:
    visas = {
        "none": [],
        "forged": [_grant(IssuerKey.generate(DAC))],
        "purpose": [_grant(site.dac)],  # type: ignore[attr-defined]
    }[case]
    req = _request(site, visas, purpose="POA" if case == "purpose" else "HMB")
    decision = site.check(req)
    assert decision.verdict is Verdict.DENY
    assert any(r.startswith(reason) for r in decision.reasons)
    denied = site.audit.entries(request_id=req.request_id, event="gate.denied")
    assert len(denied) == 1 and denied[0].details["reasons"] == list(decision.reasons)
    assert denied[0].details["rules"] == list(decision.rules)
    assert GRANT not in json.dumps(denied[0].details)  # the visa's value is never audited


def test_a_valid_visa_opens_the_dataset(site: SiteNode) -> None:
    req = _request(site, [_grant(site.dac)])  # type: ignore[attr-defined]
    decision = site.check(req)
    assert decision.verdict is Verdict.ALLOW, decision.reasons
    assert "passport.visa_issuers" in decision.rules
    allowed = site.audit.entries(request_id=req.request_id, event="gate.allowed")
    assert allowed[0].details["rules"] == list(decision.rules)
    assert site.audit.verify().ok


def test_policy_files_resolve_beside_the_policy(site: SiteNode) -> None:
    assert Path(site.config.policy).parent.joinpath("dac.pub.pem").exists()
    assert site.policy.passport.visa_issuers[0].issuer == DAC
