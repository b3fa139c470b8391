"""Federated results equal the pooled answer on the Eunomia GiBleed data, split several ways."""

from __future__ import annotations

import math

import polars as pl
import pytest

from flows import QuorumNotMet, SiteStatus, connect, run_analysis
from flows.demo import ALL, DemoSite, pooled_answer

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
NSAIDS = [1118084, 1124300, 1177480, 1115008]  # celecoxib, diclofenac, ibuprofen, naproxen
CASES = [
    ("cohort_count", GI_BLEED),
    (
        "cohort_count",
        {
            "domain": "drug",
            "concept_ids": NSAIDS,
            "include_descendants": True,
            "gender_concept_ids": [8532],
            "min_age": 30,
            "max_age": 60,
            "start_date": "1990-01-01",
            "end_date": "2015-12-31",
        },
    ),
    ("characterization", {**GI_BLEED, "age_band_width": 5}),
    ("characterization", {"domain": "condition", "concept_ids": [81151], "age_band_width": 10}),
    (
        "numeric_summary",
        {"table": "drug_exposure", "column": "days_supply", "concept_ids": [19059056]},
    ),
    ("numeric_summary", {"table": "person", "column": "year_of_birth", "relative_accuracy": 0.001}),
]
SPLITS = {
    "three-unequal": (0.55, 0.30, 0.15),
    "five-sites": (0.4, 0.25, 0.15, 0.1, 0.1),
}


def _open_sites(shares: tuple[float, ...]) -> list[DemoSite]:
    """Sites that suppress nothing (threshold 1, extremes released), so results must be exact."""
    return [
        DemoSite(f"site-{i}", "EU", share, 1, ALL, release_extremes=True)
        for i, share in enumerate(shares)
    ]


def assert_same(federated: pl.DataFrame, pooled: pl.DataFrame) -> None:
    """Equal cell by cell: integers exactly, floats to 1e-9 relative."""
    assert federated.columns == pooled.columns
    assert federated.height == pooled.height
    for column in federated.columns:
        for ours, theirs in zip(federated[column].to_list(), pooled[column].to_list(), strict=True):
            if isinstance(theirs, float):
                assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), column
            else:
                assert ours == theirs, column


@pytest.mark.parametrize("split", list(SPLITS))
def test_federated_equals_pooled(split, make_federation, eunomia, prefect_server):
    profile, _ = make_federation(_open_sites(SPLITS[split]))
    with connect(profile) as federation:
        for name, params in CASES:
            result = run_analysis(name, params, federation=federation)
            assert {o.status for o in result.outcomes} == {SiteStatus.RELEASED}
            pooled = pl.from_arrow(pooled_answer(name, params, eunomia))
            assert_same(result.result, pooled)


def test_demo_policies_are_enforced_per_site(make_federation, prefect_server):
    from flows.demo import DEMO_SITES

    profile, _ = make_federation(DEMO_SITES, seed=20261128)
    with connect(profile) as federation:
        chars = run_analysis(
            "characterization", {**GI_BLEED, "age_band_width": 5}, federation=federation
        )
        by_site = {o.site: o for o in chars.outcomes}
        assert all(o.status is SiteStatus.SUPPRESSED for o in chars.outcomes)
        assert any("threshold of 11" in r for r in by_site["us-clinic"].reasons)
        assert any("margins" in r for o in chars.outcomes for r in o.reasons)
        # A cell suppressed at any site is suppressed in the federated table.
        assert chars.result["count"].null_count() > 0

        summary = run_analysis(
            "numeric_summary",
            {"table": "drug_exposure", "column": "days_supply", "concept_ids": [19059056]},
            federation=federation,
        )
        refused = {o.site: o for o in summary.outcomes}["uk-registry"]
        assert refused.status is SiteStatus.REFUSED and refused.stage == "gate_before"
        assert refused.reasons == ("analysis numeric_summary is not allowed at this site",)
        assert summary.sites_contributing == ["eu-hospital", "us-clinic"]
        # us-clinic withholds extremes, so the federated min and max are withheld too.
        assert summary.result["min"][0] is None and summary.result["max"][0] is None

        with pytest.raises(QuorumNotMet) as raised:
            run_analysis(
                "numeric_summary",
                {"table": "person", "column": "year_of_birth"},
                federation=federation,
                min_sites=3,
            )
        assert [o.site for o in raised.value.outcomes if o.contributed] == [
            "eu-hospital",
            "us-clinic",
        ]


def test_results_are_published_as_prefect_artifacts(make_federation, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    profile, _ = make_federation(_open_sites((0.6, 0.4)))
    with connect(profile) as federation:
        result = run_analysis("cohort_count", GI_BLEED, federation=federation)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["cohort-count-result", "cohort-count-sites"])
            )
        )
    found = {a.key: a for a in artifacts if result.request_id in (a.description or "")}
    assert set(found) == {"cohort-count-result", "cohort-count-sites"}


def test_the_literate_example_runs_as_a_module(tmp_path, prefect_server):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    done = subprocess.run(
        [sys.executable, "-m", "flows.analyses.cohort_count"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cohort_count@1.0 over" in done.stdout and "479" in done.stdout
    assert (tmp_path / ".fedflow" / "demo" / "federation.yaml").is_file()
