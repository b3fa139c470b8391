"""Federated Kaplan-Meier and log-rank equal lifelines on the pooled gridded Eunomia data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import yaml
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from typer.testing import CliRunner

from fedflow.cli import app
from fedflow.core import OutputKind, survival
from flows import QuorumNotMet, SiteStatus, connect, run_analysis
from flows.analyses.km import KaplanMeier, gridded_persons
from flows.demo import ALL, DemoSite, pool
from flows.km import run_km
from governance.airlock import Outcome, check
from governance.audit import AuditLog

pytestmark = pytest.mark.integration


def _drug(*ids: int) -> dict[str, Any]:
    return {"domain": "drug", "concept_ids": list(ids), "include_descendants": True}


PARAMS: dict[str, Any] = {
    "entry": _drug(1118084, 1124300),
    "event": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
    "groups": {
        "naproxen": _drug(1115008),
        "celecoxib": _drug(1118084),
        "diclofenac": _drug(1124300),
    },
    "interval_days": 30,
    "max_days": 365,
}
TABLES: dict[str, list[str] | str] = {
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "drug_exposure": ["person_id", "drug_concept_id", "drug_exposure_start_date"],
    "observation_period": ["person_id", "observation_period_end_date"],
    "concept_ancestor": "*",
}


def _sites(shares: tuple[float, ...], threshold: int) -> list[DemoSite]:
    allowed = (*ALL, "kaplan_meier")
    return [
        DemoSite(f"site-{i}", "EU", share, threshold, allowed, tables=TABLES)
        for i, share in enumerate(shares)
    ]


def test_federated_kaplan_meier_equals_lifelines(make_federation, eunomia, prefect_server):
    profile, parts = make_federation(_sites((0.5, 0.3, 0.2), threshold=1))
    with connect(profile) as federation:
        km = run_km(PARAMS, federation=federation)
    assert {o.status for o in km.step.outcomes} == {SiteStatus.RELEASED}

    analysis = KaplanMeier()
    params = analysis.parse_params(PARAMS)
    pooled = pool(list(parts.values()))
    persons = gridded_persons(
        {t: pooled[t].select(list(c)) for t, c in analysis.tables(params).items()}, params
    ).to_pandas()
    curve = km.curve
    for group in PARAMS["groups"]:
        rows = persons[persons.group == group]
        fitter = KaplanMeierFitter(alpha=0.05).fit(rows.interval, rows.event)
        ours = curve.filter(pl.col("group") == group)
        at = ours["interval"].to_list()
        np.testing.assert_allclose(
            ours["survival"], fitter.survival_function_.loc[at].iloc[:, 0], atol=1e-12
        )
        bounds = fitter.confidence_interval_.loc[at].to_numpy()
        np.testing.assert_allclose(ours["ci_low"], bounds[:, 0], atol=1e-12)
        np.testing.assert_allclose(ours["ci_high"], bounds[:, 1], atol=1e-12)
        assert ours["at_risk"][0] == len(rows)

    test = km.logrank
    assert test is not None
    oracle = multivariate_logrank_test(persons.interval, persons.group, persons.event)
    assert test["chi2"] == pytest.approx(oracle.test_statistic, rel=1e-10)
    assert test["p_value"] == pytest.approx(oracle.p_value, rel=1e-8)
    assert test["df"] == 2


def test_a_fine_grid_is_refused_and_a_coarse_one_released(make_federation, prefect_server):
    profile, _ = make_federation(_sites((0.7, 0.3), threshold=10))
    with connect(profile) as federation:
        with pytest.raises(QuorumNotMet) as refused:
            run_analysis("kaplan_meier", PARAMS, federation=federation)
        outcomes = refused.value.outcomes
        assert {o.status for o in outcomes} == {SiteStatus.REFUSED}
        assert all("ask for a coarser grid" in " ".join(o.reasons) for o in outcomes)
    coarse = {
        **PARAMS,
        "groups": {"celecoxib": _drug(1118084), "diclofenac": _drug(1124300)},
        "interval_days": 365,
    }
    result = CliRunner().invoke(
        app, ["run", "km", "-f", str(profile), "--params", json.dumps(coarse)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {s["status"] for s in document["sites"]} == {"released"}
    assert document["logrank"]["df"] == 1 and 0 < document["logrank"]["p_value"] < 1


def test_a_site_refuses_a_grid_finer_than_its_policy_minimum(
    make_federation: Any, prefect_server: str, tmp_path: Path
) -> None:
    """site-0's policy asks for at least 90 days: the 30-day request leaves only site-1."""
    profile, parts = make_federation(_sites((0.6, 0.4), threshold=1))
    path = tmp_path / "federation" / "sites" / "site-0" / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**policy, "survival": {"min_interval_days": 90}}))
    with connect(profile) as federation:
        result = run_analysis("kaplan_meier", PARAMS, federation=federation)
    outcomes = {o.site: o for o in result.outcomes}
    refused = outcomes["site-0"]
    assert (refused.status, refused.stage) == (SiteStatus.REFUSED, "gate_before")
    reason = "time grid of 30 days is finer than this site's minimum of 90 days"
    assert any(reason in r for r in refused.reasons), refused.reasons
    assert outcomes["site-1"].status is SiteStatus.RELEASED
    # the answer is site-1's alone: its persons are the ones at risk at the start
    analysis = KaplanMeier()
    params = analysis.parse_params(PARAMS)
    tables = {t: parts["site-1"][t].select(list(c)) for t, c in analysis.tables(params).items()}
    persons = gridded_persons(tables, params)
    first = result.result.group_by("group").agg(pl.col("at_risk").first())
    expected = persons.group_by("group").len()
    assert dict(first.iter_rows()) == dict(expected.iter_rows())
    # the refusal is audited at the site like any gate refusal
    with AuditLog(path.parent / "state" / "audit.db", site="site-0") as audit:
        denied = audit.entries(request_id=result.request_id, event="gate.denied")
    assert denied and all(reason in " ".join(e.details["reasons"]) for e in denied)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([("a", 1, 12, 0), ("a", 2, 0, 3)], "group 'a': 1 grid cells below the threshold of 10"),
        ([("a", 1, 4, 0)], "group 'a': 4 persons is below the threshold of 10"),
    ],
)
def test_the_airlock_refuses_small_survival_cells(rows, reason):
    result = check(OutputKind.SURVIVAL, survival.from_counts(rows), threshold=10)
    assert result.outcome is Outcome.REFUSED
    assert any(reason in r for r in result.reasons), result.reasons


def test_the_airlock_releases_a_safe_grid_unchanged():
    table = survival.from_counts([("a", 1, 12, 0), ("a", 2, 0, 30), ("b", 1, 10, 10)])
    result = check(OutputKind.SURVIVAL, table, threshold=10)
    assert result.outcome is Outcome.RELEASED and result.table is not None
    assert result.table.equals(table)
    assert check(OutputKind.SURVIVAL, pa.table({"x": [1]}), threshold=1).outcome is (
        Outcome.REFUSED
    )
