"""The federated GLM equals the pooled statsmodels fit on Eunomia split 3 and 5 ways."""

from __future__ import annotations

import collections
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import statsmodels.api as sm
from formulaic import model_matrix
from PIL import Image

from executors import SiteTransport
from fedflow.core import regression
from flows import SiteStatus, connect
from flows.analyses.glm_round import GlmRound, design_columns, irls_statistics, used_columns
from flows.analyses.glm_table import derive
from flows.demo import ALL, DemoSite, pool
from flows.glm import GlmDidNotFit, fit_glm
from flows.plots import forest_rows
from governance.checkpoints import Checkpoint, check_checkpoints

pytestmark = pytest.mark.integration

DATA: dict[str, Any] = {
    "variables": {
        "gi_bleed": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
        "celecoxib": {"domain": "drug", "concept_ids": [1118084], "include_descendants": True},
        "naproxen": {"domain": "drug", "concept_ids": [1115008], "include_descendants": True},
        "nsaid_records": {
            "domain": "drug",
            "concept_ids": [1118084, 1124300, 1177480, 1115008],
            "include_descendants": True,
            "value": "count",
        },
    }
}
MODELS: list[tuple[str, str, dict[str, str]]] = [
    ("binomial", "gi_bleed ~ age + gender + celecoxib + naproxen", {}),
    ("poisson", "nsaid_records ~ age + gender + gi_bleed", {"exposure": "observation_years"}),
    ("gaussian", "age ~ gender * celecoxib + gi_bleed", {"weights": "observation_years"}),
]
SPLITS = {
    "three": (0.55, 0.30, 0.15),
}
"""Unequal shares. (A five-site split ran too; it was dropped to keep CI under 20 minutes: the
fit's arithmetic does not depend on the number of sites, and bench/glm.py fits 3 to 30.)"""
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id"],
    "drug_exposure": ["person_id", "drug_concept_id"],
    "observation_period": [
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
    ],
    "concept_ancestor": "*",
}


def _sites(shares: tuple[float, ...], threshold: int = 1) -> list[DemoSite]:
    return [
        DemoSite(f"site-{i}", "EU", share, threshold, (*ALL, "glm_round"), tables=TABLES)
        for i, share in enumerate(shares)
    ]


def pooled_fit(tables: Mapping[str, pa.Table], family: str, formula: str, extra: dict[str, str]):  # type: ignore[no-untyped-def]
    """statsmodels' GLM on the pooled analysis table (the oracle)."""
    params = GlmRound().parse_params({"formula": formula, "family": family, "data": DATA, **extra})
    used = used_columns(params)
    frame = derive(tables, params.data, used).dropna(subset=sorted(used))
    matrices = model_matrix(formula, frame)
    options: dict[str, Any] = {}
    if "exposure" in extra:
        options["exposure"] = frame[extra["exposure"]].to_numpy()
    if "weights" in extra:
        options["var_weights"] = frame[extra["weights"]].to_numpy()
    families = {
        "binomial": sm.families.Binomial(),
        "poisson": sm.families.Poisson(),
        "gaussian": sm.families.Gaussian(),
    }
    model = sm.GLM(
        np.asarray(matrices.lhs)[:, 0],
        np.asarray(matrices.rhs),
        family=families[family],
        **options,
    )
    return model.fit(tol=1e-14, maxiter=100), list(matrices.rhs.columns)


@pytest.mark.parametrize("split", list(SPLITS))
def test_federated_glm_equals_pooled_statsmodels(split, make_federation, eunomia, prefect_server):
    profile, parts = make_federation(_sites(SPLITS[split]))
    pooled = pool(list(parts.values()))
    with connect(profile) as federation:
        for family, formula, extra in MODELS:
            fit = fit_glm(formula, family, data=DATA, federation=federation, **extra)
            oracle, columns = pooled_fit(pooled, family, formula, extra)
            assert fit.coefficients["term"].to_list() == columns
            np.testing.assert_allclose(
                fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8
            )
            np.testing.assert_allclose(fit.coefficients["std_error"], oracle.bse, rtol=1e-8)
            np.testing.assert_allclose(fit.coefficients["z"], oracle.tvalues, rtol=1e-7)
            np.testing.assert_allclose(fit.coefficients["p_value"], oracle.pvalues, rtol=1e-6)
            ci = oracle.conf_int()
            np.testing.assert_allclose(fit.coefficients["ci_low"], ci[:, 0], atol=1e-8)
            np.testing.assert_allclose(fit.coefficients["ci_high"], ci[:, 1], atol=1e-8)
            assert fit.deviance == pytest.approx(oracle.deviance, rel=1e-10)
            assert fit.loglik == pytest.approx(oracle.llf, rel=1e-10)
            assert fit.aic == pytest.approx(oracle.aic, rel=1e-10)
            assert fit.scale == pytest.approx(oracle.scale, rel=1e-10)
            assert fit.n == oracle.nobs and fit.df_resid == oracle.df_resid
            assert fit.converged and fit.rounds <= 10
            assert fit.sites["site"].to_list() == list(parts)
            assert fit.sites["n"].sum() == fit.n
            if family == "binomial":
                assert fit.sites["cases"].sum() == int(oracle.model.endog.sum())


def test_later_rounds_are_steps_and_a_site_without_them_goes_through_its_gate(
    make_federation, eunomia, prefect_server, monkeypatch
):
    """Round 1 passes every site's gate; later rounds are steps of the fit it opened, except
    at a site whose transport has no steps (as the pull transport), which runs each round
    through its gate; the fit is the pooled fit either way."""
    profile, parts = make_federation(_sites(SPLITS["three"]))
    family, formula, extra = MODELS[0]
    oracle, _ = pooled_fit(pool(list(parts.values())), family, formula, extra)
    with connect(profile) as federation:
        gated = federation.transports["site-2"]
        monkeypatch.setattr(gated, "step", functools.partial(SiteTransport.step, gated))
        asked: collections.Counter[str] = collections.Counter()
        for name, transport in federation.transports.items():
            monkeypatch.setattr(transport, "checkpoint", _counted(transport, name, asked))
        fit = fit_glm(formula, family, data=DATA, federation=federation, **extra)
        np.testing.assert_allclose(fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8)
        assert fit.rounds > 2 and fit.sites["site"].to_list() == list(parts)
        for site, transport in federation.transports.items():
            audit = transport.node.audit  # type: ignore[attr-defined]
            stepped = audit.entries(event="step.started")
            checked = [
                e for e in audit.entries(event="gate.allowed") if e.details["step"] == "check"
            ]
            released = audit.entries(event="airlock.released")
            assert len(released) == fit.rounds, site
            if site == "site-2":
                assert not stepped and len(checked) == fit.rounds
            else:
                assert len(stepped) == fit.rounds - 1 and len(checked) == 1, site
                assert {e.details["fit_job_id"] for e in stepped} == {released[0].details["job_id"]}
            # A checkpoint of every round is kept; a step's came with its release, unasked.
            kept = [
                Checkpoint.model_validate(e.details["checkpoint"])
                for e in federation.audit.entries(event="site.checkpoint")
                if e.actor == site
            ]
            assert len(kept) == fit.rounds
            assert all(c.ok for c in check_checkpoints(audit, kept)), site
            assert asked[site] == (fit.rounds if site == "site-2" else 1), site


def _counted(
    transport: SiteTransport, site: str, asked: collections.Counter[str]
) -> Callable[[str | None], Checkpoint]:
    """``transport.checkpoint``, counting the calls in ``asked``."""
    fetch = transport.checkpoint

    def checkpoint(nonce: str | None = None) -> Checkpoint:
        asked[site] += 1
        return fetch(nonce)

    return checkpoint


def test_a_step_checkpoint_that_does_not_verify_is_refused_and_audited(
    make_federation, eunomia, prefect_server, monkeypatch
):
    """A step's release that brings a checkpoint made for another request is not kept: the
    orchestrator audits the refusal and the fit goes on, equal to the pooled fit."""
    profile, parts = make_federation(_sites(SPLITS["three"]))
    family, formula, extra = MODELS[0]
    oracle, _ = pooled_fit(pool(list(parts.values())), family, formula, extra)
    with connect(profile) as federation:
        liar = federation.transports["site-1"]
        honest = liar.step

        def stale(request):  # type: ignore[no-untyped-def]
            earlier = liar.node.checkpoint("an-earlier-request")  # type: ignore[attr-defined]
            return honest(request).model_copy(update={"checkpoint": earlier})

        monkeypatch.setattr(liar, "step", stale)
        fit = fit_glm(formula, family, data=DATA, federation=federation, **extra)
        np.testing.assert_allclose(fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8)
        entries = federation.audit.entries()
        refused = [e for e in entries if e.event == "site.checkpoint_refused"]
        assert [e.actor for e in refused] == ["site-1"] * (fit.rounds - 1)
        assert {e.details["reason"] for e in refused} == {"stale"}
        kept = [e.actor for e in entries if e.event == "site.checkpoint"]
        assert kept.count("site-1") == 1 and kept.count("site-0") == fit.rounds  # round 1's


def test_a_refusing_site_is_left_out_of_every_round(make_federation, eunomia, prefect_server):
    # A tiny site (about 11 persons) has too few cases and residual degrees of freedom at a
    # threshold of 10: its airlock refuses every round and the fit is the fit of the others.
    sites = _sites((0.6, 0.396, 0.004), threshold=10)
    profile, parts = make_federation(sites)
    family, formula, extra = MODELS[0]
    with connect(profile) as federation:
        fit = fit_glm(formula, family, data=DATA, federation=federation, **extra)
    refused = {o.site: o for o in fit.outcomes}["site-2"]
    assert refused.status is SiteStatus.REFUSED and refused.stage == "gate_after"
    assert any("below the threshold of 10" in r for r in refused.reasons)
    assert fit.sites["site"].to_list() == ["site-0", "site-1"]
    oracle, _ = pooled_fit(pool([parts["site-0"], parts["site-1"]]), family, formula, extra)
    np.testing.assert_allclose(fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8)
    # The outcome tables reached the Prefect API (published in the background while the next
    # round ran) whenever the sites' outcomes changed: the refusal in round 1, then the two
    # sites asked from round 2 on. Later rounds, the same again, publish none (the sites'
    # audit logs and the orchestrator's still record every round); a round's statistics are
    # never published.
    published = _artifacts_by_request(["glm-round-sites", "glm-round-result"])
    assert fit.rounds >= 3
    for round_no, request_id in enumerate(fit.request_ids, start=1):
        if round_no > 2:
            assert request_id not in published
            continue
        (sites_table,) = published[request_id]
        assert sites_table.key == "glm-round-sites"
        rows = {row["site"]: row["outcome"] for row in json.loads(str(sites_table.data))}
        expected = {"site-0": "released", "site-1": "released"}
        assert rows == expected | ({"site-2": "refused"} if round_no == 1 else {})


def _artifacts_by_request(keys: list[str]) -> dict[str, list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    found: dict[str, list[Any]] = {}
    for artifact in artifacts:
        request_id = (artifact.description or "").rsplit(" ", 1)[-1]
        found.setdefault(request_id, []).append(artifact)
    return found


def test_a_singular_design_stops_with_a_reason(make_federation, prefect_server):
    profile, _ = make_federation(_sites((0.5, 0.5)))
    with connect(profile) as federation, pytest.raises(GlmDidNotFit, match="rank-deficient"):
        fit_glm("age ~ celecoxib + I(1 - celecoxib)", "gaussian", data=DATA, federation=federation)


def test_the_forest_plot_draws_the_odds_ratios_of_every_term_but_the_intercept(
    make_federation, eunomia, prefect_server, tmp_path
):
    profile, parts = make_federation(_sites((0.6, 0.4)))
    family, formula, extra = MODELS[0]
    with connect(profile) as federation:
        fit = fit_glm(formula, family, data=DATA, federation=federation, **extra)
    oracle, columns = pooled_fit(pool(list(parts.values())), family, formula, extra)
    rows = forest_rows(fit.coefficients, ratio=True)
    assert rows["term"].to_list() == columns[1:] and columns[0] == "Intercept"
    ci = oracle.conf_int()
    np.testing.assert_allclose(rows["estimate"], np.exp(oracle.params[1:]), rtol=1e-8)
    np.testing.assert_allclose(rows["ci_low"], np.exp(ci[1:, 0]), rtol=1e-8)
    np.testing.assert_allclose(rows["ci_high"], np.exp(ci[1:, 1]), rtol=1e-8)
    path = fit.plot(tmp_path / "odds.png")
    with Image.open(path) as image:  # 7 x (1.2 + 0.45 a term) inches at 120 dpi
        assert image.format == "PNG" and image.size == (840, 360)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50  # markers, bars, labels: not a blank canvas
    assert np.any(np.all(pixels == (0x1F, 0x4E, 0x79), axis=1))  # the estimates' squares


def test_fedflow_run_glm_prints_the_fit(make_federation, eunomia, prefect_server, tmp_path):
    import json

    from typer.testing import CliRunner

    from fedflow.cli import app

    profile, parts = make_federation(_sites((0.6, 0.4)))
    family, formula, extra = MODELS[2]
    params = {"formula": formula, "family": family, "data": DATA, **extra}
    runner = CliRunner()
    plot = tmp_path / "coefficients.png"
    run = ["run", "glm", "-f", str(profile), "--params"]
    result = runner.invoke(app, [*run, json.dumps(params), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    document = json.loads(result.stdout)
    oracle, columns = pooled_fit(pool(list(parts.values())), family, formula, extra)
    assert [c["term"] for c in document["coefficients"]] == columns
    np.testing.assert_allclose(
        [c["estimate"] for c in document["coefficients"]], oracle.params, atol=1e-8
    )
    assert document["rounds"] == 2 and [s["site"] for s in document["sites"]] == list(parts)

    bad = runner.invoke(
        app, ["run", "glm", "-f", str(profile), "--params", json.dumps({"family": "gamma"})]
    )
    assert bad.exit_code != 0 and "formula" in bad.output and "family" in bad.output
    mean_only = json.dumps({"formula": "age ~ 1", "family": "gaussian", "data": DATA})
    flat = runner.invoke(app, [*run, mean_only, "--plot", str(tmp_path / "mean.png")])
    assert flat.exit_code == 2 and "no term besides the intercept" in flat.output
    assert not (tmp_path / "mean.png").exists()


def test_a_partition_moves_to_its_own_newton_step_only_where_that_helps(eunomia):
    """``local_step``: the statistics at the partition's one-step estimate from the start;
    from a beta where the step would raise the deviance, or a Hessian of rank 0, those at beta."""
    family, formula, extra = MODELS[0]
    analysis = GlmRound()
    first = analysis.parse_params({"formula": formula, "family": family, "data": DATA, **extra})
    params = first.model_copy(update={"columns": design_columns(first)})
    design = analysis.prepare(eunomia, params)

    def at(beta: np.ndarray | None) -> pa.Table:
        return irls_statistics(
            family, params.columns, design.x, design.y, design.offset, design.weights, beta
        )

    def local(beta: np.ndarray | None) -> pa.Table:
        update = {"local_step": True, "beta": None if beta is None else beta.tolist()}
        return analysis.local_prepared(design, params.model_copy(update=update))

    estimate = np.linalg.solve(*regression.matrices(at(None)))
    assert local(None).equals(at(estimate))
    overshooting = 3 * estimate  # its Newton step raises the deviance about 14-fold
    step = np.linalg.solve(*regression.matrices(at(overshooting)))
    assert at(step)["deviance"][0].as_py() > at(overshooting)["deviance"][0].as_py()
    assert local(overshooting).equals(at(overshooting))
    saturated = estimate + 5  # every weight underflows: XᵀWX is zero
    assert np.linalg.matrix_rank(regression.matrices(at(saturated))[0]) == 0
    assert local(saturated).equals(at(saturated))


def test_a_local_start_saves_a_round_and_changes_nothing_else(
    make_federation, eunomia, prefect_server, monkeypatch
):
    """Binomial and Poisson fits with and without the local start: the same fit to rounding,
    in one round fewer with it, whose round 1 (the one a site's gate checks) asks for
    ``local_step``."""
    profile, _ = make_federation(_sites(SPLITS["three"]))
    with connect(profile) as federation:
        checked: list[dict[str, Any]] = []
        transport = federation.transports["site-0"]
        check = transport.check

        def recorded(request):  # type: ignore[no-untyped-def]
            checked.append(dict(request.params))
            return check(request)

        monkeypatch.setattr(transport, "check", recorded)
        for family, formula, extra in MODELS[:2]:
            checked.clear()
            local = fit_glm(formula, family, data=DATA, federation=federation, **extra)
            assert [p.get("local_step") for p in checked] == [True], family
            checked.clear()
            common = fit_glm(
                formula, family, data=DATA, federation=federation, local_start=False, **extra
            )
            assert [p.get("local_step") for p in checked] == [False], family
            assert local.rounds == common.rounds - 1, family
            for column in ("estimate", "std_error", "ci_low", "ci_high"):
                np.testing.assert_allclose(
                    local.coefficients[column], common.coefficients[column], rtol=1e-9, atol=1e-10
                )
            assert local.deviance == pytest.approx(common.deviance, rel=1e-12)
            assert local.sites.equals(common.sites)
