"""A real differencing attack on Eunomia, blocked at the site; ordinary queries still pass."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
import yaml

from executors import SiteConfig, SiteNode
from fedflow.core.messages import JobState, Release, ReleaseOutcome, Request
from fedflow.core.registry import default_registry
from flows.analyses.cohort import CohortAnalysis, CohortParams
from flows.demo import FEDERATION, ISSUER, DemoSite, build_demo
from governance.differencing import COMPLEMENT_RULE, DIFFERENCING_RULE
from governance.identity import IssuerKey, issue_token

pytestmark = pytest.mark.integration

K = 10
GI_BLEED: dict[str, Any] = {
    "domain": "condition",
    "concept_ids": [192671],
    "include_descendants": True,
}


def make_site(root: Path, eunomia: dict[str, pa.Table], **policy: Any) -> SiteConfig:
    """One site holding all of Eunomia, open to any project; ``policy`` overrides fields."""
    spec = DemoSite("diff-site", "EU", 1.0, K, ("cohort_count", "characterization"))
    build_demo(root, [eunomia], sites=[spec])
    path = root / "sites" / spec.name / "policy.yaml"
    content = yaml.safe_load(path.read_text())
    content["access"]["projects"] = ["*"]
    path.write_text(yaml.safe_dump({**content, **policy}))
    return SiteConfig.load(root / "sites" / spec.name / "site.yaml")


def token(root: Path, project: str) -> str:
    key = IssuerKey.load(root / "issuer" / "demo-issuer.key.pem", ISSUER)
    return issue_token(
        key, researcher="eve@uni.example", project=project, purpose="x", audience=FEDERATION
    )


def count(
    node: SiteNode, tok: str, params: dict[str, Any], analysis: str = "cohort_count"
) -> Release:
    ref = default_registry().get(analysis).ref()
    req = Request(analysis=ref, params=params, dataset="omop", token=tok)
    job = node.submit(req)
    assert node.wait(job, 60).state is JobState.QUARANTINED
    return node.release(job, token=tok)


def total(release: Release) -> int:
    rows = release.table().to_pylist()
    (row,) = [r for r in rows if all(v == "*" for k, v in r.items() if k != "count")]
    return int(row["count"])


def one_person_less(eunomia: dict[str, pa.Table]) -> dict[str, Any]:
    """GI bleed with an end date that drops exactly one person (found from the data)."""
    cohort = CohortAnalysis.cohort(eunomia, CohortParams.model_validate(GI_BLEED))
    dates = cohort.group_by("index_date").len().sort("index_date", descending=True)
    # persons whose first bleed is after ``end`` drop out; pick the end that drops exactly one
    dropped = dates["len"].cum_sum()
    i = next(i for i, n in enumerate(dropped) if n == 1)
    end: date = dates["index_date"][i + 1]
    return {**GI_BLEED, "end_date": end.isoformat()}


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, eunomia: dict[str, pa.Table]
) -> Iterator[SiteNode]:
    root = tmp_path_factory.mktemp("differencing")
    with SiteNode(make_site(root, eunomia)) as node:
        node.root = root  # type: ignore[attr-defined]
        yield node


def test_a_differencing_attack_one_person_apart_is_refused_per_project(site, eunomia):
    attacker = token(site.root, "probe-study")
    a = count(site, attacker, GI_BLEED)
    assert a.outcome is ReleaseOutcome.RELEASED and total(a) == 479
    b = count(site, attacker, one_person_less(eunomia))
    assert b.outcome is ReleaseOutcome.REFUSED and b.partial is None
    assert b.reasons == (DIFFERENCING_RULE.format(k=K),)
    refused = site.audit.entries(request_id=b.request_id, event="airlock.refused")
    assert refused and refused[0].details["reasons"] == [DIFFERENCING_RULE.format(k=K)]
    assert refused[0].details["differencing"] == "not recorded"
    assert site.desk.differencing.count(project="probe-study", dataset="omop") == 1
    # the ids were kept only while the release was undecided, and never in what left
    assert not list((site.config.state_dir / "quarantine").rglob("*.cohort.npy"))
    # the ledger is per project: another project's first look at B is not refused by A
    other = count(site, token(site.root, "other-study"), one_person_less(eunomia))
    assert other.outcome is ReleaseOutcome.RELEASED and total(other) == 478


def test_ordinary_overlapping_queries_still_pass(site, eunomia):
    researcher = token(site.root, "ordinary-study")
    ankle = {"domain": "condition", "concept_ids": [81151]}  # sprain of ankle
    queries = [
        ("cohort_count", GI_BLEED),
        ("characterization", {**GI_BLEED, "age_band_width": 10}),  # the same cohort again
        ("cohort_count", {**GI_BLEED, "min_age": 40}),  # an age window, many persons apart
        ("cohort_count", {**GI_BLEED, "concept_ids": [192671, 81151]}),  # overlapping sets
        ("cohort_count", ankle),
    ]
    # every pair of these cohorts is at least k persons apart (computed from the data)
    cohorts = [
        set(
            CohortAnalysis.cohort(
                eunomia,
                CohortParams.model_validate({k: v for k, v in p.items() if k != "age_band_width"}),
            )["person_id"].to_list()
        )
        for _, p in queries
    ]
    assert all(len(x ^ y) == 0 or len(x ^ y) >= K for x in cohorts for y in cohorts)
    for analysis, params in queries:
        release = count(site, researcher, params, analysis)
        assert release.outcome is not ReleaseOutcome.REFUSED, release.reasons
    assert site.desk.differencing.count(project="ordinary-study", dataset="omop") == len(queries)


def test_complement_rule_refuses_a_cohort_of_all_but_a_few(site, eunomia):
    researcher = token(site.root, "complement-study")
    conditions = pl.from_arrow(eunomia["condition_occurrence"])["condition_concept_id"]
    everyone = {"domain": "condition", "concept_ids": sorted(set(conditions.to_list()))}
    cohort = CohortAnalysis.cohort(eunomia, CohortParams.model_validate(everyone))
    persons = eunomia["person"].num_rows
    assert cohort.height == persons
    # leave out the oldest few at their first condition: between 1 and k - 1 persons
    ages = cohort["age"]
    max_age = max(a for a in ages.unique() if 0 < (ages > a).sum() < K)
    all_but_few = {**everyone, "max_age": max_age}
    left_out = (
        persons - CohortAnalysis.cohort(eunomia, CohortParams.model_validate(all_but_few)).height
    )
    assert 0 < left_out < K
    refused = count(site, researcher, all_but_few)
    assert refused.outcome is ReleaseOutcome.REFUSED
    assert refused.reasons == (COMPLEMENT_RULE.format(k=K),)
    assert site.audit.entries(request_id=refused.request_id, event="airlock.refused")
    # the whole dataset itself (N - |A| = 0) is released, and a suppressed count is not kept
    assert total(count(site, researcher, everyone)) == persons
    youngest = CohortAnalysis.cohort(eunomia, CohortParams.model_validate(GI_BLEED))["age"].min()
    small = count(site, researcher, {**GI_BLEED, "max_age": youngest})  # fewer than k persons
    assert small.outcome is ReleaseOutcome.SUPPRESSED
    assert site.desk.differencing.count(project="complement-study", dataset="omop") == 1


def test_policy_can_switch_it_off_and_ledger_survives_a_restart(tmp_path: Path, eunomia):
    off = make_site(tmp_path / "off", eunomia, differencing={"enabled": False})
    with SiteNode(off) as node:
        tok = token(tmp_path / "off", "probe-study")
        a, b = count(node, tok, GI_BLEED), count(node, tok, one_person_less(eunomia))
        assert total(a) - total(b) == 1  # without the defence the attack works
        assert node.desk.differencing.count(project="probe-study", dataset="omop") == 0

    on = make_site(tmp_path / "on", eunomia, differencing={"k": 5})
    tok = token(tmp_path / "on", "probe-study")
    with SiteNode(on) as node:
        assert count(node, tok, GI_BLEED).outcome is ReleaseOutcome.RELEASED
        ref = default_registry().get("cohort_count").ref()
        req = Request(analysis=ref, params=one_person_less(eunomia), dataset="omop", token=tok)
        job = node.submit(req)
        assert node.wait(job, 60).state is JobState.QUARANTINED
    with SiteNode(on) as node:  # the quarantined cohort and the ledger are read back
        b = node.release(job, token=tok)
        assert b.reasons == (DIFFERENCING_RULE.format(k=5),)
