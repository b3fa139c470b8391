"""Exact federated GWAS: per-variant regressions fitted by federated Newton / IRLS, in batches.

Each round runs the ``gwas_round`` analysis (:mod:`flows.analyses.gwas_round`) at every site
over a whole batch of variants; the sites' airlocks check it per variant; the orchestrator sums
each variant's XᵀWX and XᵀWz and takes that variant's Newton step. Because the sums equal the
pooled sums, every variant's fit is the pooled fit: the Wald estimates and standard errors
equal statsmodels' ``GLM`` on the concatenated data, variant by variant.

1. The null model (covariates only), by federated IRLS (``mode: null``); a linear model needs
   one round.
2. One round over every variant of the region at the null model's coefficients (dosage 0):
   these statistics give the **score test** for every variant (``test="score"`` stops here).
3. ``test="wald"``: Newton rounds over the variants not yet converged, each carrying its own
   coefficients, until every step is below ``tol`` (a linear model is exact after step 2); a
   round is one federated step per ``wald_batch`` variants (a bounded request to each site),
   cheap at sites that keep their prepared partitions.

The GWAS is one Prefect flow run (``gwas``) whose rounds are one task run each
(:func:`flows.fitting.federated_round`), with the policy's timeout, retries and quorum in every
round. A site that refuses or fails in round 1 is not asked again. Every later round needs the
same sites (the variants are tested against their null model): a site lost after round 1 stops
the GWAS with :class:`GwasDidNotFit` naming it. ``resume=True`` reuses the verified releases of
an earlier run's rounds (:mod:`flows.resume`) and asks only the sites that had not delivered.

From Python::

    result = fit_gwas("case ~ female + pc1 + pc2", "binomial", federation=Path(...),
                      data={"table": "phenotype", "columns": {...}})
    result.results          # variant, chrom, pos, ref, alt, n, allele counts, beta, SE, z, p
    result.inflation        # genomic inflation lambda: median chi2 / 0.4549
    manhattan_plot(result.results, Path("manhattan.png"))   # flows.plots

A variant withheld by any site's airlock (too few minor alleles, cases or controls there) is
reported ``withheld`` and not fitted: the answer is the pooled answer or none.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from fedflow.core import gwas
from flows import publishing
from flows.analyses.glm_round import GlmRoundParams, design_columns
from flows.analyses.gwas_round import DOSAGE, encode_betas
from flows.errors import FlowError
from flows.federation import FederationSession, open_session
from flows.fitting import FitSites, in_session, wald_columns
from flows.outcomes import SiteOutcome
from flows.strategy import StepPolicy

__all__ = [
    "CHI2_MEDIAN",
    "WALD_BATCH",
    "GwasDidNotFit",
    "GwasOptions",
    "GwasResult",
    "fit_gwas",
    "gwas_flow",
]

ANALYSIS = "gwas_round"
WALD_BATCH = 5000
"""Variants per Wald step after the first: each carries its key and coefficients in the
request (about 70 bytes a variant), which stays well under a site service's body limit."""
CHI2_MEDIAN = 0.454936423119572
"""The median of a chi-squared distribution with one degree of freedom (lambda's divisor)."""


class GwasDidNotFit(FlowError):
    """The federated GWAS stopped: the null model did not fit, or the sites changed."""


class GwasOptions(BaseModel):
    """What ``fedflow run gwas --params`` takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    formula: str
    family: Literal["gaussian", "binomial"] = "binomial"
    data: dict[str, Any] = Field(default_factory=dict)
    """The phenotype table (:class:`flows.analyses.glm_table.AnalysisTable`, plain table)."""
    test: Literal["wald", "score"] = "wald"
    referenceName: str | None = None
    start: int = Field(default=0, ge=0)
    end: int | None = Field(default=None, ge=1)
    max_rounds: int = Field(default=25, ge=1, le=100)
    tol: float = Field(default=1e-10, gt=0, lt=1e-3)
    wald_batch: int = Field(default=5000, ge=1, le=6000)


@dataclass(frozen=True)
class GwasResult:
    """A federated GWAS: one row per variant, the null model, and how the fit went."""

    formula: str
    family: str
    test: str
    results: pl.DataFrame
    """variant, chrom, pos, ref, alt, n, cases, controls, allele_count, allele_number,
    alt_frequency, beta, std_error, z, chi2, p_value (the Wald test, or the score test when
    ``test="score"``), score_chi2 and score_p (the score test, always: it comes from the first
    round over the variants), status (ok, withheld, singular, not_converged), rounds."""
    inflation: float
    """Genomic inflation lambda: median chi-squared of the tested variants / 0.4549."""
    null_model: pl.DataFrame
    rounds: int
    sites: pl.DataFrame
    request_ids: list[str] = field(default_factory=list)
    outcomes: list[SiteOutcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document of the GWAS."""
        return {
            "analysis": "gwas",
            "formula": self.formula,
            "family": self.family,
            "test": self.test,
            "inflation": None if math.isnan(self.inflation) else self.inflation,
            "rounds": self.rounds,
            "null_model": self.null_model.to_dicts(),
            "results": self.results.to_dicts(),
            "sites": self.sites.to_dicts(),
            "request_ids": self.request_ids,
        }


@flow(name="gwas", flow_run_name="gwas-{family}-{test}")
def gwas_flow(
    formula: str,
    family: str,
    federation: str,
    data: dict[str, Any] | None = None,
    test: str = "wald",
    referenceName: str | None = None,
    start: int = 0,
    end: int | None = None,
    dataset: str | None = None,
    min_sites: int = 1,
    max_rounds: int = 25,
    tol: float = 1e-10,
    wald_batch: int = WALD_BATCH,
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> GwasResult:
    """Run a GWAS over the sites of ``federation`` (a profile path); see the module docstring.

    ``policy``: timeout, retries and quorum of every round; ``resume``: reuse the verified
    releases of an earlier run of the same GWAS (``docs/failures.md``).
    """
    logger = get_run_logger()
    glm = GlmRoundParams.model_validate({"formula": formula, "family": family, "data": data or {}})
    columns = design_columns(glm)
    base: dict[str, Any] = {
        "formula": formula,
        "family": family,
        "data": glm.data.model_dump(mode="json"),
        "columns": columns,
        "fit_id": uuid.uuid4().hex,  # the sites keep each partition's dosages for this GWAS
    }
    # The rounds' outcome artifacts go to the Prefect API while the next round runs.
    with open_session(federation) as session, publishing.deferred():
        fit = _Fit(session, dataset, policy or StepPolicy(min_sites=min_sites), resume)
        beta_null, null_stats = _null_model(fit, base, family, max_rounds, tol)
        region = {"referenceName": referenceName, "start": start, "end": end}
        first = fit.step(base | {"mode": "variants", "beta": beta_null.tolist()} | region)
        data0 = gwas.arrays(first)
        logger.info(
            "%d variant(s) in the batch, %d withheld", len(data0.variant), int(data0.withheld.sum())
        )
        m = len(data0.variant)
        start_betas = np.tile(np.append(beta_null, 0.0), (m, 1))
        estimate = _Estimates(data0, start_betas)
        score = _score_table(data0, beta_null, null_stats, family)
        if test == "score":
            table = score
        else:
            estimate.update(data0, family, None)
            rounds = 1
            while family == "binomial" and estimate.pending().size and rounds < max_rounds:
                todo = estimate.pending()
                for lo in range(0, len(todo), wald_batch):  # Prefect caps a run's parameters
                    part = todo[lo : lo + wald_batch]
                    raw = base | {
                        "mode": "variants",
                        "variants": [data0.variant[i] for i in part],
                        "betas": encode_betas(estimate.evaluated[part]),
                    }
                    estimate.update(gwas.arrays(fit.step(raw)), family, tol)
                rounds += 1
                logger.info(
                    "wald round %d: %d variant(s) still moving", rounds, estimate.pending().size
                )
            table = estimate.table(family)
        results = _results(data0, table, score)
        chi2 = results.filter(pl.col("status") == "ok")["chi2"]
        inflation = float(chi2.median()) / CHI2_MEDIAN if chi2.len() else math.nan  # type: ignore[arg-type]
        null_model = pl.DataFrame(wald_columns(columns, beta_null, null_stats["se"], 0.95))
        sites = pl.DataFrame(
            [
                {"site": o.site, "outcome": o.status.value, "withheld_variants": o.suppressed_cells}
                for o in fit.outcomes
            ]
        )
        create_table_artifact(
            key="gwas-top-variants",
            table=results.drop_nulls("p_value").sort("p_value").head(20).to_dicts(),
            description=f"{family} GWAS {formula} ({test}): {results.height} variants, "
            f"lambda {inflation:.3f}, {fit.rounds} rounds",
        )
        return GwasResult(
            formula=formula,
            family=family,
            test=test,
            results=results,
            inflation=inflation,
            null_model=null_model,
            rounds=fit.rounds,
            sites=sites,
            request_ids=fit.request_ids,
            outcomes=fit.outcomes,
        )


def fit_gwas(
    formula: str,
    family: str = "binomial",
    *,
    federation: FederationSession | Path | str,
    data: Mapping[str, Any] | None = None,
    test: str = "wald",
    referenceName: str | None = None,
    start: int = 0,
    end: int | None = None,
    dataset: str | None = None,
    min_sites: int = 1,
    max_rounds: int = 25,
    tol: float = 1e-10,
    wald_batch: int = 5000,
    token: str | None = None,
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> GwasResult:
    """Run a federated GWAS of ``formula`` (phenotype ~ covariates); see the module docstring."""
    options: dict[str, Any] = {
        "data": dict(data or {}),
        "test": test,
        "referenceName": referenceName,
        "start": start,
        "end": end,
        "dataset": dataset,
        "min_sites": min_sites,
        "max_rounds": max_rounds,
        "tol": tol,
        "wald_batch": wald_batch,
        "policy": policy,
        "resume": resume,
    }
    return in_session(federation, token, lambda path: gwas_flow(formula, family, path, **options))


class _Fit:
    """The rounds of one GWAS: every round after the first needs the same sites."""

    def __init__(
        self, session: FederationSession, dataset: str | None, policy: StepPolicy, resume: bool
    ) -> None:
        self.session, self.dataset, self.resume = session, dataset, resume
        # A site lost after round 1 stops the GWAS, whatever the error strategy.
        self.sites = FitSites(policy, GwasDidNotFit, drops=False)
        self.request_ids: list[str] = []
        self.outcomes: list[SiteOutcome] = []
        self.rounds = 0

    def step(self, raw: dict[str, Any]) -> pa.Table:
        """One federated round; its merged partial (the model named again in the schema)."""
        self.rounds += 1
        result, _ = self.sites.round(
            self.session,
            ANALYSIS,
            raw,
            self.rounds,
            self.dataset,
            self.sites.policy.min_sites,
            resume=self.resume,
            flow_name="gwas",
        )
        self.request_ids.append(result.request_id)
        if raw["mode"] == "variants" and not self.outcomes:
            # The first round over the variants: what each site withheld (or why it is out).
            self.outcomes = self.sites.report(list(self.session.transports))
        design = [*raw["columns"], DOSAGE] if raw["mode"] == "variants" else raw["columns"]
        schema = gwas.schema(raw["family"], design)
        return result.result.to_arrow().select(schema.names).cast(schema)


def _null_model(
    fit: _Fit, base: dict[str, Any], family: str, max_rounds: int, tol: float
) -> tuple[np.ndarray, dict[str, Any]]:
    beta: np.ndarray | None = None
    for _ in range(max_rounds):
        raw = base | {"mode": "null", "beta": None if beta is None else beta.tolist()}
        data = gwas.arrays(fit.step(raw))
        if data.withheld[0]:
            raise GwasDidNotFit("a site withheld the null model")
        xtwx, xtwz = data.xtwx[0], data.xtwz[0]
        if np.linalg.matrix_rank(xtwx) < len(xtwz):
            raise GwasDidNotFit("the covariates are collinear: drop a term")
        new = np.linalg.solve(xtwx, xtwz)
        n, p = int(data.n[0]), len(xtwz)
        scale = 1.0
        if family == "gaussian":
            scale = (data.zwz[0] - new @ xtwz) / (n - p)
        if family == "gaussian" or (
            beta is not None and np.max(np.abs(new - beta)) <= tol * (1 + np.max(np.abs(beta)))
        ):
            se = np.sqrt(np.diag(np.linalg.inv(xtwx)) * scale)
            return new, {"se": se, "scale": scale, "n": n}
        beta = new
    raise GwasDidNotFit(f"the null model did not converge in {max_rounds} rounds")


class _Estimates:
    """Per-variant Newton iterates: the coefficients evaluated, the latest solve, the status."""

    def __init__(self, data: gwas.GwasArrays, start: np.ndarray) -> None:
        m, k = start.shape
        self.evaluated = start.copy()
        self.solution = np.full((m, k), np.nan)
        self.se = np.full(m, np.nan)
        self.status = np.where(data.withheld, "withheld", "pending").astype(object)
        self.rounds = np.zeros(m, dtype=np.int64)
        self.position = {v: i for i, v in enumerate(data.variant)}

    def pending(self) -> np.ndarray:
        return np.flatnonzero(self.status == "pending")

    def update(self, data: gwas.GwasArrays, family: str, tol: float | None) -> None:
        """Take the Newton step of every variant of ``data`` (a round's merged statistics)."""
        at = np.array([self.position[v] for v in data.variant], dtype=np.int64)
        held = data.withheld
        self.status[at[held]] = "withheld"
        ok = ~held & _nonsingular(np.nan_to_num(data.xtwx))
        self.status[at[~held & ~ok]] = "singular"
        idx, rows = at[ok], np.flatnonzero(ok)
        if not len(rows):
            return
        xtwx, xtwz = data.xtwx[rows], data.xtwz[rows]
        new = np.linalg.solve(xtwx, xtwz[..., None])[..., 0]
        scale = np.ones(len(rows))
        if family == "gaussian":
            rss = data.zwz[rows] - np.einsum("ij,ij->i", new, xtwz)
            scale = rss / (data.n[rows] - xtwx.shape[1])
        self.se[idx] = np.sqrt(np.linalg.inv(xtwx)[:, -1, -1] * scale)
        self.rounds[idx] += 1
        previous = self.evaluated[idx]
        self.solution[idx] = new
        if family == "gaussian":
            self.status[idx] = "ok"
        elif tol is not None:
            moved = np.max(np.abs(new - previous), axis=1)
            done = moved <= tol * (1 + np.max(np.abs(previous), axis=1))
            self.status[idx[done]] = "ok"
        self.evaluated[idx] = new

    def table(self, family: str) -> dict[str, np.ndarray]:
        still = self.status == "pending"
        self.status[still] = "not_converged"
        beta = self.solution[:, -1]
        z = beta / self.se
        return {
            "beta": beta,
            "std_error": self.se,
            "z": z,
            "status": self.status,
            "rounds": self.rounds,
        }


def _nonsingular(xtwx: np.ndarray) -> np.ndarray:
    """Per variant: is XᵀWX positive definite enough to solve (a monomorphic dosage is not)."""
    out = np.zeros(len(xtwx), dtype=bool)
    if not len(xtwx):
        return out
    scale = np.sqrt(np.abs(np.diagonal(xtwx, axis1=1, axis2=2)))
    scale[scale == 0] = 1.0
    normed = xtwx / scale[:, :, None] / scale[:, None, :]
    eig = np.linalg.eigvalsh(normed)
    out[:] = eig[:, 0] > 1e-10 * np.maximum(eig[:, -1], 1e-300)
    return out


def _score_table(
    data: gwas.GwasArrays, beta_null: np.ndarray, null: dict[str, Any], family: str
) -> dict[str, np.ndarray]:
    """Score statistics of every variant at the null model (dosage coefficient 0)."""
    m = len(data.variant)
    status = np.where(data.withheld, "withheld", "ok").astype(object)
    ok = ~data.withheld & _nonsingular(np.nan_to_num(data.xtwx))
    status[~data.withheld & ~ok] = "singular"
    z = np.full(m, np.nan)
    rows = np.flatnonzero(ok)
    beta0 = np.append(beta_null, 0.0)
    score = data.xtwz[rows] - data.xtwx[rows] @ beta0  # Xᵀ(y - mu) at the null model
    inverse_gg = np.linalg.inv(data.xtwx[rows])[:, -1, -1]
    variance = 1.0 / inverse_gg  # efficient information of the dosage
    z[rows] = score[:, -1] / np.sqrt(variance * (null["scale"] if family == "gaussian" else 1.0))
    nan = np.full(m, np.nan)
    return {"beta": nan, "std_error": nan, "z": z, "status": status, "rounds": np.ones(m, np.int64)}


def _p_values(z: np.ndarray) -> np.ndarray:
    """Two-sided normal p-values (the chi-squared test on one degree of freedom of z²)."""
    return np.array([math.erfc(abs(v) / math.sqrt(2)) for v in z.tolist()])


def _results(
    data: gwas.GwasArrays, fitted: dict[str, np.ndarray], score: dict[str, np.ndarray]
) -> pl.DataFrame:
    parts = [v.rsplit(":", 3) for v in data.variant]
    ok = fitted["status"] == "ok"
    z = np.where(ok, fitted["z"], np.nan)
    score_z = np.where(score["status"] == "ok", score["z"], np.nan)
    allele_number = 2 * data.n
    frame = pl.DataFrame(
        {
            "variant": data.variant,
            "chrom": [p[0] for p in parts],
            "pos": [int(p[1]) for p in parts],
            "ref": [p[2] for p in parts],
            "alt": [p[3] for p in parts],
            "n": data.n,
            "cases": data.cases,
            "controls": data.controls,
            "allele_count": data.allele_count,
            "allele_number": allele_number,
            "beta": np.where(ok, fitted["beta"], np.nan),
            "std_error": np.where(ok, fitted["std_error"], np.nan),
            "z": z,
            "chi2": z * z,
            "p_value": _p_values(z),
            "score_chi2": score_z * score_z,
            "score_p": _p_values(score_z),
            "status": [str(s) for s in fitted["status"]],
            "rounds": fitted["rounds"],
        },
        strict=False,
    )
    frame = frame.with_columns(
        pl.when(pl.col("status") == "withheld").then(None).otherwise(pl.col(c)).alias(c)
        for c in ("n", "cases", "controls", "allele_count", "allele_number")
    ).with_columns(
        (pl.col("allele_count") / pl.col("allele_number")).alias("alt_frequency"),
        *[
            pl.col(c).fill_nan(None)
            for c in ("beta", "std_error", "z", "chi2", "p_value", "score_chi2", "score_p")
        ],
    )
    return frame.sort(["chrom", "pos", "ref", "alt"])
