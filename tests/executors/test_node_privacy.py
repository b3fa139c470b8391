"""End to end at a site: magnitude tables and differential privacy through the release desk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from executors import SiteConfig, SiteNode
from fedflow.core.messages import JobState, Release, ReleaseOutcome, Request
from fedflow.core.registry import default_registry
from flows.demo import FEDERATION, ISSUER, DemoSite, build_demo
from governance.identity import IssuerKey, issue_token

pytestmark = pytest.mark.integration

DAYS = {"domain": "drug", "concept_ids": [19126352], "column": "days_supply", "clamp": [0, 90]}
GI_BLEED: dict[str, Any] = {
    "domain": "condition",
    "concept_ids": [192671],
    "include_descendants": True,
}


def make_site(root: Path, eunomia: dict[str, pa.Table]) -> SiteConfig:
    spec = DemoSite("dp-site", "EU", 1.0, 10, ("characterization", "magnitude_table"))
    build_demo(root, [eunomia], sites=[spec])
    path = root / "sites" / spec.name / "policy.yaml"
    content = yaml.safe_load(path.read_text())
    content["access"]["projects"] = ["*"]
    content["privacy"] = {
        "enabled": True,
        "epsilon": 0.25,
        "query_epsilon": 0.1,
        "output_kinds": ["frequency"],
    }
    path.write_text(yaml.safe_dump(content))
    return SiteConfig.load(root / "sites" / spec.name / "site.yaml")


def run(node: SiteNode, tok: str, analysis: str, params: dict[str, Any]) -> Release:
    ref = default_registry().get(analysis).ref()
    job = node.submit(Request(analysis=ref, params=params, dataset="omop", token=tok))
    assert node.wait(job, 60).state is JobState.QUARANTINED
    return node.release(job, token=tok)


def test_magnitude_and_budget_end_to_end(tmp_path: Path, eunomia: dict[str, pa.Table]) -> None:
    root = tmp_path
    with SiteNode(make_site(root, eunomia)) as node:
        key = IssuerKey.load(root / "issuer" / "demo-issuer.key.pem", ISSUER)
        tok = issue_token(key, researcher="r@x", project="p", purpose="x", audience=FEDERATION)
        mag = run(node, tok, "magnitude_table", DAYS)
        assert mag.outcome is ReleaseOutcome.SUPPRESSED
        assert "top" not in mag.table().column_names
        assert any("dominated" in r for r in mag.reasons)
        first = run(node, tok, "characterization", GI_BLEED)
        assert "laplace noise (OpenDP) at epsilon 0.1" in first.reasons[0]
        assert run(node, tok, "characterization", GI_BLEED).outcome is not ReleaseOutcome.REFUSED
        third = run(node, tok, "characterization", GI_BLEED)
        assert third.outcome is ReleaseOutcome.REFUSED
        assert "0.05 of 0.25 remains" in third.reasons[0]
        refused = node.audit.entries(request_id=third.request_id, event="airlock.refused")
        assert refused and "privacy budget exhausted" in refused[0].details["reasons"][0]
    with SiteNode(SiteConfig.load(root / "sites" / "dp-site" / "site.yaml")) as again:
        fourth = run(again, tok, "characterization", GI_BLEED)
        assert fourth.outcome is ReleaseOutcome.REFUSED and "0.05 of 0.25" in fourth.reasons[0]


def test_magnitude_one_person_apart_is_refused(
    tmp_path: Path, eunomia: dict[str, pa.Table]
) -> None:
    from flows.analyses.cohort import CohortAnalysis, CohortParams

    drug = {"domain": "drug", "concept_ids": [19126352]}
    cohort = CohortAnalysis.cohort(eunomia, CohortParams.model_validate(drug))
    dates = cohort.group_by("index_date").len().sort("index_date", descending=True)
    dropped = dates["len"].cum_sum()
    i = next(i for i, n in enumerate(dropped) if n == 1)
    minus_one = {**drug, "end_date": dates["index_date"][i + 1].isoformat()}
    with SiteNode(make_site(tmp_path, eunomia)) as node:
        key = IssuerKey.load(tmp_path / "issuer" / "demo-issuer.key.pem", ISSUER)
        tok = issue_token(key, researcher="r@x", project="q", purpose="x", audience=FEDERATION)
        assert run(node, tok, "characterization", minus_one).outcome is not ReleaseOutcome.REFUSED
        mag = run(node, tok, "magnitude_table", {**DAYS, "concept_ids": [19126352]})
        assert mag.outcome is ReleaseOutcome.REFUSED
