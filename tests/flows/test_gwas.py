"""Federated GWAS over three 1000 Genomes sites (the EPACTS test set split by super-population).

Every federated answer is checked against statsmodels on the pooled data: the Wald fit of each
variant (``case ~ female + pc1 + pc2 + dosage``), the score test, a linear GWAS, and the plain
GLM of issue 5 over the same sites' phenotype tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import statsmodels.api as sm

from fedflow.core import gwas
from flows import connect
from flows.analyses.gwas_round import GwasRound
from flows.beacon import DEMO_GROUPS
from flows.federation import FederationSession
from flows.glm import fit_glm
from flows.gwas import GwasDidNotFit, fit_gwas
from flows.gwas_demo import EPACTS_DATA, build_gwas_sites, epacts_parts
from flows.plots import manhattan_plot, qq_plot
from flows.strategy import StepPolicy
from governance.airlock import Outcome, check
from tests.transports import wrap

pytestmark = pytest.mark.integration

NAMES = [name for name, _ in DEMO_GROUPS]
COVARIATES = ["female", "pc1", "pc2"]


@pytest.fixture(scope="module")
def epacts(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, pa.Table], list[dict[str, pa.Table]]]:
    return epacts_parts(shared_data / "genomics_1000g_vcf", tmp_path_factory.mktemp("epacts"))


@pytest.fixture(scope="module")
def federation(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]],
    tmp_path_factory: pytest.TempPathFactory,
    prefect_server: str,
) -> Iterator[FederationSession]:
    profile = build_gwas_sites(
        tmp_path_factory.mktemp("gwas"), epacts[1], NAMES, thresholds=[1, 1, 1]
    )
    with connect(profile) as session:
        yield session


def _pooled(pooled: dict[str, pa.Table]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Phenotypes and (person, variant key, dosage) of every called genotype."""
    variants = pooled["variant"].to_pandas()
    variants["key"] = (
        variants.chrom + ":" + variants.pos.astype(str) + ":" + variants.ref + ":" + variants.alt
    )
    calls = pooled["genotype"].to_pandas().dropna(subset=["dosage"])
    calls = calls.merge(variants[["variant_id", "key"]], on="variant_id")
    return pooled["phenotype"].to_pandas(), calls


def _design(phenotype: pd.DataFrame, calls: pd.DataFrame, key: str) -> pd.DataFrame:
    mine = calls[calls.key == key][["person_id", "dosage"]]
    return phenotype.merge(mine, on="person_id").dropna()


def test_federated_wald_equals_pooled_statsmodels_per_variant(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]],
    federation: FederationSession,
    tmp_path: Path,
) -> None:
    result = fit_gwas(
        "case ~ female + pc1 + pc2",
        "binomial",
        federation=federation,
        data=EPACTS_DATA,
        wald_batch=3,  # two federated steps per Newton round after the first
    )
    phenotype, calls = _pooled(epacts[0])
    assert result.results.height == 5 and set(result.results["status"]) == {"ok"}
    assert {o.status.value for o in result.outcomes} == {"released"}
    assert result.rounds <= 20
    chi2 = []
    for row in result.results.iter_rows(named=True):
        frame = _design(phenotype, calls, row["variant"])
        x = sm.add_constant(frame[[*COVARIATES, "dosage"]].astype(float))
        fit = sm.GLM(frame["case"], x, family=sm.families.Binomial()).fit(tol=1e-13)
        assert abs(row["beta"] - fit.params["dosage"]) < 1e-8
        assert abs(row["std_error"] - fit.bse["dosage"]) < 1e-8
        assert abs(row["p_value"] - fit.pvalues["dosage"]) < 1e-8
        assert row["n"] == len(frame) and row["allele_count"] == frame.dosage.sum()
        assert (row["cases"], row["controls"]) == (frame.case.sum(), (1 - frame.case).sum())
        chi2.append((fit.params["dosage"] / fit.bse["dosage"]) ** 2)
    assert result.inflation == pytest.approx(np.median(chi2) / 0.454936423119572, rel=1e-8)
    # the first round over the variants, at the null model, is the score test of each
    expected = _score_tests(epacts, result.results["variant"].to_list())
    for row, (statistic, p_value) in zip(
        result.results.iter_rows(named=True), expected, strict=True
    ):
        assert abs(row["score_chi2"] - statistic) < 1e-8 * max(1.0, statistic)
        assert abs(row["score_p"] - p_value) < 1e-8
    null = sm.GLM(
        phenotype["case"],
        sm.add_constant(phenotype[COVARIATES]),
        family=sm.families.Binomial(),
    ).fit(tol=1e-13)
    np.testing.assert_allclose(result.null_model["estimate"], null.params, atol=1e-8)
    for plot, name in ((manhattan_plot, "manhattan.png"), (qq_plot, "qq.png")):
        path = plot(result.results, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def _score_tests(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]], keys: list[str]
) -> list[tuple[float, float]]:
    """statsmodels' score test of each variant's dosage at the pooled null model."""
    phenotype, calls = _pooled(epacts[0])
    null = sm.GLM(
        phenotype["case"], sm.add_constant(phenotype[COVARIATES]), family=sm.families.Binomial()
    ).fit(tol=1e-13)
    out = []
    for key in keys:
        dosage = _design(phenotype, calls, key)["dosage"].to_numpy()
        statistic, p_value = null.score_test(exog_extra=dosage[:, None])[:2]
        out.append((float(np.squeeze(statistic)), float(np.squeeze(p_value))))
    return out


def test_a_linear_gwas_is_exact_in_one_variant_round(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]],
    federation: FederationSession,
) -> None:
    result = fit_gwas("pc2 ~ female + pc1", "gaussian", federation=federation, data=EPACTS_DATA)
    assert result.rounds == 2  # the null model and one round over the variants
    phenotype, calls = _pooled(epacts[0])
    for row in result.results.iter_rows(named=True):
        frame = _design(phenotype, calls, row["variant"])
        fit = sm.OLS(frame["pc2"], sm.add_constant(frame[["female", "pc1", "dosage"]])).fit()
        assert abs(row["beta"] - fit.params["dosage"]) < 1e-8
        assert abs(row["std_error"] - fit.bse["dosage"]) < 1e-8


def test_federated_glm_on_the_phenotype_table_equals_pooled_statsmodels(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]],
    federation: FederationSession,
) -> None:
    """Issue 5's acceptance on the EPACTS data: the plain GLM of the phenotype."""
    fit = fit_glm("case ~ female + pc1 + pc2", "binomial", federation=federation, data=EPACTS_DATA)
    phenotype = epacts[0]["phenotype"].to_pandas()
    pooled = sm.GLM(
        phenotype["case"], sm.add_constant(phenotype[COVARIATES]), family=sm.families.Binomial()
    ).fit(tol=1e-13)
    np.testing.assert_allclose(fit.coefficients["estimate"], pooled.params, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.coefficients["std_error"], pooled.bse, rtol=0, atol=1e-6)
    assert fit.rounds <= 10 and fit.n == len(phenotype)


def test_rare_variants_are_withheld_per_site_not_the_batch(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]],
    tmp_path: Path,
    prefect_server: str,
) -> None:
    """At k = 10 the two rare variants (7 and 21 copies in 2,535 persons) fall below the minor
    allele count somewhere; the other three are released and fitted as before."""
    analysis = GwasRound()
    params = analysis.parse_params(
        {
            "formula": "pc2 ~ female + pc1",
            "family": "gaussian",
            "data": EPACTS_DATA,
            "columns": ["Intercept", "female", "pc1"],
        }
    )
    expected: set[str] = set()
    for part in epacts[1]:
        partial = analysis.local(part, params)
        verdict = check("gwas", partial, threshold=10)
        data = gwas.arrays(partial)
        minor = np.minimum(data.allele_count, 2 * data.n - data.allele_count)
        rare = (minor > 0) & (minor < 10)
        expected |= {v for v, r in zip(data.variant, rare, strict=True) if r}
        if rare.any():
            assert verdict.outcome is Outcome.SUPPRESSED
            assert verdict.suppressed_cells == int(rare.sum())
            # the rare variants' dosages are 0/1 only: their carriers are a small cell too
            assert f"{int(rare.sum())} variant(s) withheld: minor allele count below 10" in (
                verdict.reasons
            )
            assert verdict.table is not None
            assert gwas.arrays(verdict.table).withheld.tolist() == rare.tolist()
    assert expected == {"22:16117940:T:G", "22:16117953:G:C"}
    profile = build_gwas_sites(tmp_path, epacts[1], NAMES, thresholds=[10, 10, 10])
    with connect(profile) as session:
        result = fit_gwas("pc2 ~ female + pc1", "gaussian", federation=session, data=EPACTS_DATA)
    status = dict(zip(result.results["variant"], result.results["status"], strict=True))
    assert {v for v, s in status.items() if s == "withheld"} == expected
    assert sum(status[v] == "ok" for v in status) == 3
    assert result.sites["withheld_variants"].sum() >= 2


def test_partials_merge_in_any_order_and_withholding_sticks(
    epacts: tuple[dict[str, pa.Table], list[dict[str, pa.Table]]],
) -> None:
    analysis = GwasRound()
    params = analysis.parse_params(
        {
            "formula": "case ~ female + pc1 + pc2",
            "family": "binomial",
            "data": EPACTS_DATA,
            "columns": ["Intercept", *COVARIATES],
            "beta": [0.1, -0.2, 0.01, 0.02],
        }
    )
    parts = [analysis.local(part, params) for part in epacts[1]]
    pooled = gwas.arrays(analysis.local(epacts[0], params))
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = gwas.arrays(
            analysis.merge([analysis.merge([parts[order[0]], parts[order[1]]]), parts[order[2]]])
        )
        at = [merged.variant.index(v) for v in pooled.variant]
        np.testing.assert_allclose(merged.xtwx[at], pooled.xtwx, rtol=1e-12)
        np.testing.assert_allclose(merged.xtwz[at], pooled.xtwz, rtol=1e-12)
        assert merged.n[at].tolist() == pooled.n.tolist()
    held = gwas.withhold(parts[0], np.array([True, False, False, False, False]))
    merged = gwas.arrays(analysis.merge([held, parts[1], parts[2]]))
    assert merged.withheld.tolist() == [v == gwas.arrays(held).variant[0] for v in merged.variant]


def test_a_site_lost_after_the_first_round_stops_the_gwas_naming_it(
    federation: FederationSession,
) -> None:
    """The variants are tested against the null model of every site: one lost in round 2
    (after its retry, under the default error strategy) stops the GWAS and is named."""
    lost = NAMES[1]
    wrap(federation, {lost: "crash"})
    try:
        with pytest.raises(GwasDidNotFit, match="contributing sites changed in round 2") as stop:
            fit_gwas(
                "case ~ female + pc1 + pc2",
                "binomial",
                federation=federation,
                data=EPACTS_DATA,
                policy=StepPolicy(max_retries=1, backoff=0.05),
            )
    finally:
        wrap(federation)
    before, now = stop.value.message.split(": ", 1)[1].split(" before, ")
    assert lost in before and lost not in now
