"""Site policy v1: validated files, digests, and decisions with reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fedflow.core.messages import Request, Verdict
from flows.analyses.cohort_count import CohortCount
from governance.errors import PolicyInvalid
from governance.identity import Identity
from governance.policy import SitePolicy

POLICY = """
version: "2026-11"
min_cell_count: 11
analyses:
  - name: cohort_count
    versions: ["1.0"]
datasets:
  omop:
    tables:
      person: [person_id, gender_concept_id, year_of_birth]
      condition_occurrence: "*"
access:
  projects: [gibleed-study]
  purposes: ["*"]
"""

ALICE = Identity(
    researcher="alice",
    project="gibleed-study",
    purpose="disease-specific research",
    issuer="https://issuer.example",
    audience="fedflow",
    expires_at=datetime.now(UTC) + timedelta(hours=1),
    token_id="t1",
)
PARAMS = {"domain": "condition", "concept_ids": [192671]}


def decide(policy: SitePolicy, identity: Identity = ALICE, dataset: str = "omop"):  # type: ignore[no-untyped-def]
    analysis = CohortCount()
    params = analysis.parse_params(PARAMS)
    request = Request(analysis=analysis.ref(), params=PARAMS, dataset=dataset, token="t")
    return policy.evaluate(
        site="s",
        request=request,
        identity=identity,
        analysis=analysis,
        tables=analysis.tables(params),
    )


def test_load_validates_and_identifies_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    policy = SitePolicy.load(path)
    assert policy.min_cell_count == 11 and policy.digest.startswith("sha256:")
    path.write_text(POLICY + "\n# a comment changes nothing\n")
    assert SitePolicy.load(path).digest == policy.digest
    path.write_text(POLICY.replace("min_cell_count: 11", "min_cell_count: 5"))
    assert SitePolicy.load(path).digest != policy.digest


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("min_cell_count: 0", "min_cell_count"),
        ("analyses: [{name: x, colour: red}]", "colour"),
        ("- just\n- a list", "mapping"),
        ("analyses: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_policies_name_what_is_wrong(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyInvalid, match=match):
        SitePolicy.load(path)


def test_allow_lists_every_rule_that_allowed() -> None:
    decision = decide(SitePolicy.parse(__import__("yaml").safe_load(POLICY)))
    assert decision.verdict is Verdict.ALLOW
    assert decision.rules == (
        "analyses[0]",
        "datasets.omop",
        "access.researchers",
        "access.projects",
        "access.purposes",
    )


def test_deny_lists_only_what_failed() -> None:
    import yaml

    raw = yaml.safe_load(POLICY)
    raw["datasets"]["omop"]["tables"]["person"] = ["person_id"]
    raw["access"]["projects"] = ["another-project"]
    decision = decide(SitePolicy.parse(raw))
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == (
        "not allowed to read person.gender_concept_id, person.year_of_birth",
        "project 'gibleed-study' is not allowed",
    )
    assert decide(SitePolicy.parse(yaml.safe_load(POLICY)), dataset="other").reasons == (
        "dataset 'other' is not open to federated analysis",
    )
