"""Federated Cox (Breslow ties) equals pooled statsmodels on gridded Eunomia, and lifelines untied.

lifelines' ``CoxPHFitter`` handles ties only by Efron's method, so the pooled Breslow oracle on
the gridded data (three event times, many ties) is statsmodels' ``PHReg(ties="breslow")``;
on untied times, where Efron and Breslow coincide, the same site statistics, merge and Newton
step are checked against lifelines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from lifelines import CoxPHFitter
from PIL import Image
from statsmodels.duration.hazard_regression import PHReg
from typer.testing import CliRunner

from fedflow.cli import app
from fedflow.core import InvalidRequest, OutputKind, cox
from flows import SiteStatus, connect
from flows.analyses.cox_round import CoxRound, CoxRoundParams, cohort, covariates, design
from flows.analyses.glm_table import derive
from flows.analyses.km import gridded_persons
from flows.cox import CoxFit, newton_step, run_cox
from flows.cox_example import PARAMS as EXAMPLE
from flows.demo import ALL, DemoSite, build_demo, pool, split_by_person
from flows.errors import FlowError
from flows.plots import forest_rows
from flows.strategy import ErrorStrategy, StepPolicy
from governance.airlock import Outcome, check
from governance.audit import AuditLog
from tests.transports import wrap

pytestmark = pytest.mark.integration


PARAMS: dict[str, Any] = EXAMPLE | {"interval_days": 30, "max_days": 365}
"""The worked example's model (``flows.cox_example``) on a 30-day grid over a year."""
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "drug_exposure": ["person_id", "drug_concept_id", "drug_exposure_start_date"],
    "observation_period": ["person_id", "observation_period_end_date"],
    "concept_ancestor": "*",
}
Federation = tuple[Path, dict[str, dict[str, pa.Table]]]
"""The profile and each site's tables."""
# Three sites that release, and a small one whose policy needs 100 of everything.
SITES = [
    *(
        DemoSite(f"site-{i}", "EU", share, 1, (*ALL, "cox_round", "kaplan_meier"), tables=TABLES)
        for i, share in enumerate((0.45, 0.3, 0.15))
    ),
    DemoSite("strict", "EU", 0.1, 100, (*ALL, "cox_round", "kaplan_meier"), tables=TABLES),
]


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, eunomia: dict[str, pa.Table], prefect_server: str
) -> Federation:
    parts = split_by_person(eunomia, [s.share for s in SITES], seed=7)
    profile = build_demo(tmp_path_factory.mktemp("cox") / "federation", parts, sites=SITES)
    return profile, dict(zip((s.name for s in SITES), parts, strict=True))


@pytest.fixture(scope="module")
def fit(federation: Federation) -> CoxFit:
    with connect(federation[0]) as session:
        return run_cox(PARAMS, federation=session)


def _cohort(tables: dict[str, pa.Table], params: CoxRoundParams) -> tuple[pd.DataFrame, np.ndarray]:
    """The pooled gridded cohort and its design, built as a site builds them."""
    persons = gridded_persons(tables, cohort(params)).to_pandas()
    values = derive(tables, params.data, (covariates(params) - {"group"}) | {"person_id"})
    frame = persons.merge(values, on="person_id").dropna()
    frame["group"] = pd.Categorical(frame["group"], categories=params.levels("group"))
    columns, x = design(params, frame)
    assert columns == params.columns
    return frame, x


def test_federated_cox_equals_pooled_breslow(fit: CoxFit, federation: Federation) -> None:
    assert fit.rounds <= 10
    outcomes = {o.site: o for o in fit.outcomes}
    assert [s for s, o in outcomes.items() if o.status is SiteStatus.RELEASED] == [
        "site-0",
        "site-1",
        "site-2",
    ]
    params = CoxRound().parse_params(PARAMS | {"columns": fit.coefficients["term"].to_list()})
    pooled = pool([federation[1][s] for s in ("site-0", "site-1", "site-2")])
    frame, x = _cohort(pooled, params)
    oracle = PHReg(
        frame["interval"].to_numpy(float), x, status=frame["event"].to_numpy(int), ties="breslow"
    ).fit()
    np.testing.assert_allclose(fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.coefficients["std_error"], oracle.bse, rtol=0, atol=1e-6)
    assert fit.loglik == pytest.approx(oracle.llf, rel=1e-12)
    np.testing.assert_allclose(fit.coefficients["hazard_ratio"], np.exp(oracle.params), rtol=1e-8)
    assert (fit.n, fit.events) == (len(frame), int(frame["event"].sum()))
    assert fit.sites["n"].sum() == fit.n and fit.sites["events"].sum() == fit.events
    assert fit.loglik > fit.loglik_null


def test_the_forest_plot_draws_the_hazard_ratios(fit: CoxFit, tmp_path: Path) -> None:
    rows = forest_rows(fit.coefficients, ratio=True)
    assert rows["term"].to_list() == fit.coefficients["term"].to_list()  # no intercept
    for drawn, reported in (("estimate", "hazard_ratio"), ("ci_low", "hr_ci_low")):
        np.testing.assert_allclose(rows[drawn], fit.coefficients[reported], rtol=1e-12)
    np.testing.assert_allclose(rows["ci_high"], fit.coefficients["hr_ci_high"], rtol=1e-12)
    path = fit.plot(tmp_path / "hazards.png")
    with Image.open(path) as image:
        height = round((1.2 + 0.45 * rows.height) * 120)
        assert image.format == "PNG" and image.size == (840, height)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert np.any(np.all(pixels == (0x1F, 0x4E, 0x79), axis=1))


def test_the_gate_decides_once_per_fit_and_later_rounds_are_steps(
    fit: CoxFit, federation: Federation
) -> None:
    root = federation[0].parent
    for site in ("site-0", "site-1", "site-2", "strict"):
        with AuditLog(root / "sites" / site / "state" / "audit.db", site=site) as audit:
            ours = [
                e for e in audit.entries() if e.request_id in fit.request_ids and e.event in WATCHED
            ]
        gates = [e for e in ours if e.event == "gate.allowed" and e.details["step"] == "check"]
        steps = [e for e in ours if e.event == "step.started"]
        if site == "strict":  # refused in round 1 by its airlock, never asked again
            assert (len(gates), len(steps)) == (1, 0)
        else:
            assert (len(gates), len(steps)) == (1, fit.rounds - 1), site
            assert [e.details["round"] for e in steps] == list(range(2, fit.rounds + 1))


WATCHED = {"gate.allowed", "step.started"}


def test_a_site_with_too_few_events_is_refused_and_not_asked_again(fit: CoxFit) -> None:
    strict = next(o for o in fit.outcomes if o.site == "strict")
    assert strict.status is SiteStatus.REFUSED
    reasons = " ".join(strict.reasons)
    assert "events is below the threshold of 100" in reasons, reasons
    assert "strict" not in fit.sites["site"].to_list()
    assert strict.round == 1 and fit.rounds > 1 and not fit.dropped


def _pooled_breslow(federation: Federation, sites: list[str], columns: list[str]) -> Any:
    """statsmodels' Breslow fit of these sites' pooled gridded cohort (the oracle)."""
    params = CoxRound().parse_params(PARAMS | {"columns": columns})
    frame, x = _cohort(pool([federation[1][s] for s in sites]), params)
    return PHReg(
        frame["interval"].to_numpy(float), x, status=frame["event"].to_numpy(int), ties="breslow"
    )


def test_a_site_lost_mid_fit_is_dropped_or_stops_the_fit_and_resume_reuses_round_1(
    fit: CoxFit, federation: Federation
) -> None:
    retry_once = StepPolicy(max_retries=1, backoff=0.05)
    with connect(federation[0]) as session:
        # site-1 crashes from round 2 on: after its retry it is dropped, Newton starts again
        # at zero over site-0 and site-2, and the fit is theirs, null log-likelihood included.
        wrap(session, {"site-1": "crash"})
        dropped = run_cox(PARAMS, federation=session, policy=retry_once)
        assert dropped.dropped == {"site-1": 2}
        crash = next(o for o in dropped.outcomes if o.site == "site-1")
        assert (crash.status, crash.failure, crash.stage, crash.round, crash.attempts) == (
            SiteStatus.FAILED,
            "unavailable",
            "run",
            2,
            2,
        )
        assert dropped.sites["site"].to_list() == ["site-0", "site-2"]
        model = _pooled_breslow(
            federation, ["site-0", "site-2"], fit.coefficients["term"].to_list()
        )
        oracle = model.fit()
        np.testing.assert_allclose(dropped.coefficients["estimate"], oracle.params, atol=1e-8)
        np.testing.assert_allclose(dropped.coefficients["std_error"], oracle.bse, atol=1e-6)
        assert dropped.loglik == pytest.approx(oracle.llf, rel=1e-12)
        assert dropped.loglik_null == pytest.approx(
            model.loglike(np.zeros(len(oracle.params))), rel=1e-12
        )
        # Told to terminate, the fit stops at the first lost site and names it.
        wrap(session, {"site-1": "crash"})
        terminate = StepPolicy(error_strategy=ErrorStrategy.TERMINATE, max_retries=0)
        with pytest.raises(FlowError, match="site-1"):
            run_cox(PARAMS, federation=session, policy=terminate)
        # Resumed with the fault gone: round 1 is reused whole (verified again), and the fit
        # is the fit of every site that releases.
        calls = wrap(session)
        again = run_cox(PARAMS, federation=session, resume=True)
    assert sum(t.first_round_checks for t in calls.values()) == 0
    assert not again.dropped and again.rounds == fit.rounds
    np.testing.assert_allclose(
        again.coefficients["estimate"], fit.coefficients["estimate"], rtol=0, atol=1e-12
    )
    assert calls["strict"].calls["check"] == 0  # its round-1 refusal is reused too


def test_newton_on_untied_times_equals_lifelines(eunomia: dict[str, pa.Table]) -> None:
    """Without ties Breslow is Efron: the site sums, merge and Newton step against lifelines."""
    params = CoxRound().parse_params(PARAMS)
    params = CoxRound().parse_params(PARAMS | {"columns": _columns(params)})
    frame, x = _cohort(eunomia, params)
    order = np.random.default_rng(3).permutation(len(frame))
    time = np.empty(len(frame), dtype=np.int64)
    time[order] = np.arange(len(frame))  # distinct times, so no ties
    event = frame["event"].to_numpy(bool)
    parts = np.array_split(np.arange(len(frame)), 3)
    beta, center = np.zeros(x.shape[1]), x.mean(axis=0)
    for _ in range(10):
        partials = [
            cox.from_arrays(
                params.columns,
                grid_points=len(frame),
                interval=time[i],
                event=event[i],
                x=x[i],
                center=center,
                beta=beta,
            )
            for i in parts
        ]
        loglik, step, information = newton_step(cox.merge(partials), params.columns)
        if np.max(np.abs(step)) < 1e-12:
            break
        beta = beta + step
    data = pd.DataFrame(x, columns=params.columns).assign(time=time + 1, event=event)
    oracle = CoxPHFitter().fit(data, "time", "event", fit_options={"precision": 1e-14})
    np.testing.assert_allclose(beta, oracle.params_.to_numpy(), rtol=0, atol=1e-8)
    se = np.sqrt(np.diag(np.linalg.inv(information)))
    np.testing.assert_allclose(se, oracle.standard_errors_.to_numpy(), rtol=0, atol=1e-6)
    assert loglik == pytest.approx(oracle.log_likelihood_, rel=1e-10)


def _columns(params: CoxRoundParams) -> list[str]:
    from flows.analyses.cox_round import design_columns

    return design_columns(params)


def test_cli_runs_cox_and_reports_no_convergence(federation: Federation) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "cox", "-f", str(federation[0]), "--params", _json(PARAMS | {"max_rounds": 1})],
    )
    assert result.exit_code == 2, result.output
    assert "did not converge in 1 rounds" in result.output


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value)


def _partial(events: list[int], censored: list[int], p: int = 1) -> pa.Table:
    """A Cox partial of persons leaving at each grid point (x = 0/1 alternating)."""
    interval = np.repeat(np.arange(len(events)), np.add(events, censored))
    event = np.concatenate(
        [[True] * e + [False] * c for e, c in zip(events, censored, strict=True)]
    )
    x = np.column_stack([np.arange(len(interval)) % 2 + j for j in range(p)]).astype(float)
    zeros = np.zeros(p)
    columns = [f"x{j}" for j in range(p)]
    return cox.from_arrays(
        columns,
        grid_points=len(events),
        interval=interval,
        event=event,
        x=x,
        center=zeros,
        beta=zeros,
    )


@pytest.mark.parametrize(
    ("events", "censored", "p", "reason"),
    [
        ([6, 0], [20, 20], 1, "6 events is below the threshold of 10"),
        ([10, 10], [20, 20], 7, "7 parameters for 20 events exceeds 0.33 parameters per event"),
        ([10, 10], [20, 3], 1, "1 grid cells below the threshold of 10"),
    ],
)
def test_the_airlock_refuses_unsafe_cox_rounds(
    events: list[int], censored: list[int], p: int, reason: str
) -> None:
    result = check(OutputKind.COX, _partial(events, censored, p), threshold=10)
    assert result.outcome is Outcome.REFUSED
    assert any(reason in r for r in result.reasons), result.reasons


def test_the_airlock_releases_a_safe_cox_round_unchanged() -> None:
    table = _partial([10, 12], [20, 30])
    result = check(OutputKind.COX, table, threshold=10)
    assert result.outcome is Outcome.RELEASED and result.table is not None
    assert result.table.equals(table)


def test_partials_of_different_rounds_do_not_merge() -> None:
    one = _partial([10, 12], [20, 30])
    other = cox.from_arrays(
        ["x0"],
        grid_points=2,
        interval=np.array([0, 1]),
        event=np.array([True, False]),
        x=np.array([[1.0], [0.0]]),
        center=np.zeros(1),
        beta=np.ones(1),
    )
    with pytest.raises(InvalidRequest, match="different models or rounds"):
        cox.merge([one, other])


def test_cli_km_draws_the_federated_curves_and_resumes(
    federation: Federation, tmp_path: Path
) -> None:
    keys = ("entry", "event", "groups", "interval_days", "max_days")
    km = {key: PARAMS[key] for key in keys}
    path = tmp_path / "km.png"
    run = ["run", "km", "-f", str(federation[0]), "--params", _json(km)]
    result = CliRunner().invoke(app, [*run, "--plot", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    # --resume reaches the step: every site's release of that run is reused, none is asked
    again = CliRunner().invoke(app, [*run, "--resume", "--error-strategy", "terminate"])
    assert again.exit_code == 0, again.output
    first, second = (json.loads(r.stdout) for r in (result, again))
    assert [s["reused"] for s in second["sites"]] == [True] * len(SITES)
    assert second["result"] == first["result"] and second["logrank"] == first["logrank"]
