"""The Cedar policy engine: real Cedar decisions naming their policies, validation at start."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from executors import SiteConfig, SiteNode
from fedflow.core.messages import Decision, Request, Verdict
from flows.analyses.cohort_count import CohortCount
from flows.analyses.numeric_summary import NumericSummary
from governance.cedar import SCHEMA
from governance.cedar_request import column_kind, finest_date
from governance.errors import PolicyInvalid
from governance.identity import Identity
from governance.policy import SitePolicy

POLICY = """
analyses:
  - name: cohort_count
    versions: ["1.0"]
datasets:
  omop:
    tables:
      person: [person_id, gender_concept_id, year_of_birth]
      condition_occurrence: "*"
      concept_ancestor: "*"
access:
  projects: [gibleed-study]
cedar: |
  @id("no-mallory")
  @reason("mallory is barred from this site")
  forbid(principal == Fedflow::Researcher::"mallory", action, resource);

  @id("summaries-for-gibleed")
  permit(principal, action == Fedflow::Action::"run",
         resource == Fedflow::Analysis::"numeric_summary")
  when { context.project == Fedflow::Project::"gibleed-study" };
"""
ALICE = Identity(
    researcher="alice",
    project="gibleed-study",
    purpose="DUO:0000007",
    issuer="https://issuer.example",
    audience="fedflow",
    expires_at=datetime.now(UTC) + timedelta(hours=1),
    token_id="t1",
)
COHORT = {"domain": "condition", "concept_ids": [192671]}


def _raw(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(POLICY)
    raw.update(changes)
    return raw


def decide(
    policy: SitePolicy,
    identity: Identity = ALICE,
    analysis: Any = None,
    params: dict[str, Any] | None = None,
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


def test_cedar_allows_and_names_every_policy_that_allowed() -> None:
    decision = decide(SitePolicy.parse(_raw()))
    assert decision.verdict is Verdict.ALLOW
    assert decision.rules == (
        "analyses[0]",
        "datasets.omop",
        "access.researchers",
        "access.projects",
        "access.purposes",
    )


def test_a_custodian_forbid_refuses_with_its_id_and_reason() -> None:
    decision = decide(SitePolicy.parse(_raw()), replace(ALICE, researcher="mallory"))
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == ("mallory is barred from this site (no-mallory)",)
    assert decision.rules == ("no-mallory",)


def test_a_custodian_permit_opens_what_the_yaml_does_not() -> None:
    summary = {"table": "person", "column": "year_of_birth"}
    policy = SitePolicy.parse(_raw())
    allowed = decide(policy, analysis=NumericSummary(), params=summary)
    assert allowed.verdict is Verdict.ALLOW
    assert allowed.rules[0] == "summaries-for-gibleed"
    # the same permit does not hold for another project: Cedar's default deny
    other = decide(policy, replace(ALICE, project="other"), NumericSummary(), summary)
    assert other.verdict is Verdict.DENY
    assert "analysis numeric_summary is not allowed at this site" in other.reasons
    assert "project 'other' is not allowed" in other.reasons


def test_a_column_outside_the_yaml_is_refused_by_default() -> None:
    decision = decide(
        SitePolicy.parse(_raw()),
        analysis=NumericSummary(),
        params={"table": "person", "column": "month_of_birth"},
    )
    assert decision.verdict is Verdict.DENY
    assert "not allowed to read person.month_of_birth" in decision.reasons


@pytest.mark.parametrize(
    ("cedar", "match"),
    [
        (
            '@id("bad-rule")\npermit(principal, action, resource) when { context.nope == 1 };',
            r"policy bad-rule: .*attribute `nope` in context",
        ),
        (
            '@id("wrong-type")\nforbid(principal, action, resource) '
            'when { context.max_age == "x" };',
            r"policy wrong-type: ",
        ),
        (
            '@id("unknown-entity")\nforbid(principal == Fedflow::Doctor::"x", action, resource);',
            r"policy unknown-entity: ",
        ),
        ("permit(principal, action resource);", r"cedar: Cedar policies do not parse"),
        (
            '@id("access.projects")\nforbid(principal, action, resource);',
            r"unique: access.projects",
        ),
    ],
)
def test_a_policy_that_does_not_validate_refuses_to_load(
    tmp_path: Path, cedar: str, match: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(_raw(cedar=cedar)))
    with pytest.raises(PolicyInvalid, match=match):
        SitePolicy.load(path)


def test_a_site_with_an_invalid_policy_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(
        yaml.safe_dump(
            _raw(
                cedar='@id("typo")\nforbid(principal, action, resource) when '
                '{ context.purpose == "x" };'
            )
        )
    )
    config = SiteConfig.parse(
        {
            "site": "s1",
            "datasets": {"omop": {"location": str(tmp_path)}},
            "policy": "policy.yaml",
            "state_dir": "state",
        },
        base=tmp_path,
    )
    with pytest.raises(PolicyInvalid, match="policy typo: "):
        SiteNode(config)
    assert not (tmp_path / "state").exists()  # refused before anything was started


def test_cedar_file_beside_the_policy_and_disabled_rules(tmp_path: Path) -> None:
    (tmp_path / "extra.cedar").write_text(
        '@id("no-bob")\n@reason("bob left")\nforbid(principal == Fedflow::Researcher::"bob", '
        "action, resource);\n"
    )
    raw = _raw(cedar_file="extra.cedar")
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(raw))
    policy = SitePolicy.load(tmp_path / "policy.yaml")
    assert decide(policy, replace(ALICE, researcher="bob")).reasons == ("bob left (no-bob)",)
    assert "no-bob" in policy.cedar and policy.digest != SitePolicy.parse(_raw()).digest
    switched_off = SitePolicy.parse(_raw(disabled_rules=["no-mallory"]))
    assert decide(switched_off, replace(ALICE, researcher="mallory")).allowed
    with pytest.raises(PolicyInvalid, match="disabled_rules names no policy: nope"):
        SitePolicy.parse(_raw(disabled_rules=["nope"]))


def test_an_evaluation_error_denies_instead_of_failing_open() -> None:
    # Cedar skips a policy whose evaluation fails (here an integer overflow), which would let
    # this forbid fail open; the engine denies on any evaluation error instead.
    overflow = (
        '@id("overflow")\nforbid(principal, action == Fedflow::Action::"run", resource) when '
        "{ context has max_age && context.max_age * 4611686018427387904 > 0 };"
    )
    policy = SitePolicy.parse(_raw(cedar=overflow))
    assert decide(policy).allowed  # no max_age: the forbid does not apply
    refused = decide(policy, params={**COHORT, "max_age": 4})
    assert refused.verdict is Verdict.DENY
    assert refused.reasons == ("policy overflow could not be evaluated: refused",)
    assert refused.rules == ("overflow",)


def test_column_kinds_and_date_resolution() -> None:
    assert [column_kind(c) for c in ("birth_datetime", "visit_start_datetime", "zip")] == [
        "birth_date",
        "datetime",
        "zip",
    ]
    assert column_kind("condition_start_date") == "date" and column_kind("year_of_birth") == "other"
    from datetime import date

    assert finest_date([date(2010, 1, 1), [date(2012, 12, 31)], 5]) == "year"
    assert finest_date([date(2010, 3, 15)]) == "day" and finest_date([None]) == "none"
    assert finest_date([{"entry": {"window": [date(2011, 1, 1), date(2011, 6, 30)]}}]) == "day"
    assert "entity Column in [Table]" in SCHEMA


def test_decisions_are_remembered_per_policy_object_and_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import governance.cedar as cedar

    policy = SitePolicy.parse(_raw(version="remembered"))  # its own engine (kept per digest)
    first = decide(policy)
    assert first.verdict is Verdict.ALLOW
    kept = dict(policy.engine._decided)
    assert len(kept) == 1
    again = decide(policy)
    assert (again.verdict, again.reasons, again.rules) == (
        first.verdict,
        first.reasons,
        first.rules,
    )
    assert dict(policy.engine._decided) == kept  # the same facts: answered from memory
    # Other facts (a researcher the custodian's forbid names) are decided, never recalled.
    mallory = decide(policy, identity=replace(ALICE, researcher="mallory"))
    assert mallory.verdict is Verdict.DENY and "no-mallory" in mallory.rules
    assert len(policy.engine._decided) == 2
    # A reloaded policy (a new object, even of the same content) never reuses an answer, and
    # one that now forbids alice refuses her at once.
    reloaded = SitePolicy.parse(_raw(version="remembered"))
    (key,) = kept
    assert policy.engine.recall(key, reloaded) is None
    barred = _raw(
        cedar='@id("no-alice")\n@reason("alice is barred")\n'
        'forbid(principal == Fedflow::Researcher::"alice", action, resource);'
    )
    assert decide(SitePolicy.parse(barred)).verdict is Verdict.DENY
    # An answer older than DECISION_TTL is forgotten.
    monkeypatch.setattr(cedar, "DECISION_TTL", -1.0)
    assert policy.engine.recall(key, policy) is None
