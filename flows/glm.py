"""Exact federated GLM: Newton / IRLS where every round is one federated step.

Each round runs the ``glm_round`` analysis (:mod:`flows.analyses.glm_round`) at every site
with the current coefficients; the sites' airlocks check the statistics; the orchestrator sums
them (XᵀWX and XᵀWz) and solves for the next coefficients. Because the sums equal the pooled
sums, the fit is the pooled fit: coefficients, standard errors, deviance and AIC equal
statsmodels' ``GLM`` on the concatenated data to rounding.

From Python::

    fit = fit_glm("gi_bleed ~ age + gender + nsaid", "binomial", data=table,
                  federation=Path("federation.yaml"))
    fit.coefficients      # term, estimate, std_error, z, p_value, ci_low, ci_high

The fit is one Prefect flow run (``glm``) whose rounds are one task run each
(:func:`flows.fitting.federated_round`: the sites' gates, runs and releases in threads of that
task, audited and receipted as any federated step). The rounds carry a fit id, with which
the sites keep each partition's design matrix for the rounds of the fit and for later fits of
the same model (:class:`executors.cluster.PreparedCache`).
A site that refuses or fails in round 1 is not asked again. A site that stops contributing in a
later round k is dropped for the rest of the fit when the error strategy allows it (``retry``,
after its retries, or ``ignore``; :class:`~flows.strategy.StepPolicy`): the fit goes on over
fewer sites, never takes a round after a drop as converged, and says so (``GlmFit.dropped``,
the outcomes); it is then the fit of the remaining sites. Under ``terminate`` the fit stops
with :class:`GlmDidNotFit` naming the sites. ``resume=True`` reuses the verified releases of an
earlier run's rounds (:mod:`flows.resume`) and asks only the sites that had not delivered.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from fedflow.core import regression
from fedflow.core.regression import Family
from flows import publishing
from flows.analyses.glm_round import GlmRoundParams, design_columns
from flows.errors import FlowError
from flows.federation import FederationSession, open_session
from flows.fitting import (
    FitSites,
    in_session,
    released_rows,
    wald_columns,
)
from flows.outcomes import SiteOutcome
from flows.plots import forest_plot
from flows.strategy import StepPolicy

__all__ = ["GlmDidNotFit", "GlmFit", "GlmOptions", "fit_glm", "glm_flow"]

ANALYSIS = "glm_round"
RATIOS = {"binomial": "odds ratio", "poisson": "rate ratio"}
"""What a family's coefficients exponentiate to (its forest plot's scale); none for Gaussian."""


class GlmDidNotFit(FlowError):
    """The federated fit stopped: no convergence, a singular design, or sites changed."""


class GlmOptions(BaseModel):
    """What ``fedflow run glm --params`` takes: the model and how to fit it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    formula: str
    family: Family = "gaussian"
    data: dict[str, Any] = Field(default_factory=dict)
    """The analysis table (:class:`flows.analyses.glm_table.AnalysisTable`)."""
    offset: str | None = None
    exposure: str | None = None
    weights: str | None = None
    max_rounds: int = Field(default=25, ge=1, le=100)
    tol: float = Field(default=1e-10, gt=0, lt=1e-3)
    local_start: bool = True
    confidence: float = Field(default=0.95, gt=0, lt=1)


@dataclass(frozen=True)
class GlmFit:
    """A fitted federated GLM."""

    formula: str
    family: str
    coefficients: pl.DataFrame
    """term, estimate, std_error, z, p_value, ci_low, ci_high."""
    deviance: float
    loglik: float
    aic: float
    scale: float
    n: int
    df_resid: int
    rounds: int
    converged: bool
    sites: pl.DataFrame
    """Per contributing site: n, cases / non-cases (binomial) or events (Poisson)."""
    request_ids: list[str] = field(default_factory=list)
    outcomes: list[SiteOutcome] = field(default_factory=list)
    """Every site of the federation: its outcome in the last round, or in the round that
    decided it (refused, or failed: unavailable, timed out, corrupt payload)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Sites that contributed and then failed, with the round: the fit is over the others."""

    def plot(self, path: Path, *, title: str | None = None) -> Path:
        """Write the forest plot of the coefficients as a PNG (:func:`flows.plots.forest_plot`):
        odds ratios (binomial) or rate ratios (Poisson) on a log axis, the coefficients
        themselves for a Gaussian model."""
        return forest_plot(
            self.coefficients,
            path,
            ratio=RATIOS.get(self.family),
            title=title or f"{self.family} GLM: {self.formula}",
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document of the fit."""
        return {
            "analysis": "glm",
            "formula": self.formula,
            "family": self.family,
            "coefficients": self.coefficients.to_dicts(),
            "deviance": self.deviance,
            "loglik": self.loglik,
            "aic": self.aic,
            "scale": self.scale,
            "n": self.n,
            "df_resid": self.df_resid,
            "rounds": self.rounds,
            "converged": self.converged,
            "sites": self.sites.to_dicts(),
            "dropped": self.dropped,
            "outcomes": [o.row() for o in self.outcomes],
            "request_ids": self.request_ids,
        }


@flow(name="glm", flow_run_name="glm-{family}")
def glm_flow(
    formula: str,
    family: str,
    federation: str,
    data: dict[str, Any] | None = None,
    offset: str | None = None,
    exposure: str | None = None,
    weights: str | None = None,
    dataset: str | None = None,
    min_sites: int = 1,
    max_rounds: int = 25,
    tol: float = 1e-10,
    confidence: float = 0.95,
    policy: StepPolicy | None = None,
    resume: bool = False,
    local_start: bool = True,
) -> GlmFit:
    """Fit a GLM over the sites of ``federation`` (a profile path) by federated IRLS.

    ``local_start``: in round 1 each site partition moves to its own Newton step before its
    statistics (a binomial or Poisson model; ``GlmRoundParams.local_step``), which starts the
    common rounds closer to the fit and saves one; False starts them at the data's start.

    ``policy``: timeout, retries, quorum and error strategy of every round; ``resume``: reuse
    the verified releases of an earlier run of the same fit (``docs/failures.md``).
    """
    logger = get_run_logger()
    base = GlmRoundParams.model_validate(
        {
            "formula": formula,
            "family": family,
            "data": data or {},
            "offset": offset,
            "exposure": exposure,
            "weights": weights,
        }
    )
    columns = design_columns(base)
    raw = base.model_dump(mode="json") | {"columns": columns, "fit_id": uuid.uuid4().hex}
    beta: list[float] | None = None
    policy = policy or StepPolicy(min_sites=min_sites)
    sites = FitSites(policy, GlmDidNotFit)
    request_ids: list[str] = []
    # The rounds' outcome artifacts go to the Prefect API while the next round runs.
    with open_session(federation) as session, publishing.deferred():
        for round_no in range(1, max_rounds + 1):
            local_step = local_start and beta is None and family != "gaussian"
            step, same_sites = sites.round(
                session,
                ANALYSIS,
                raw | {"beta": beta, "local_step": local_step},
                round_no,
                dataset,
                min_sites,
                resume=resume,
                flow_name="glm",
            )
            request_ids.append(step.request_id)
            contributors = sites.contributors or []
            partial = step.result.to_arrow()
            xtwx, xtwz = regression.matrices(partial)
            new_beta = _solve(xtwx, xtwz, columns)
            logger.info(
                "round %d: deviance %.10g over %d site(s)%s",
                round_no,
                partial["deviance"][0].as_py(),
                len(contributors),
                " (each partition at its own Newton step)" if local_step else "",
            )
            if beta is not None and same_sites:
                step_size = float(np.max(np.abs(new_beta - np.asarray(beta))))
                if step_size <= tol * (1 + float(np.max(np.abs(beta)))):
                    fit = _inference(base, columns, np.asarray(beta), partial, round_no, confidence)
                    fit = _with_sites(fit, session, step.outcomes, request_ids)
                    fit = replace(
                        fit,
                        outcomes=sites.report(list(session.transports)),
                        dropped=dict(sites.dropped),
                    )
                    dropped = f", {len(fit.dropped)} dropped" if fit.dropped else ""
                    create_table_artifact(
                        key="glm-coefficients",
                        table=fit.coefficients.to_dicts(),
                        description=f"{family} GLM {formula}: {round_no} rounds, "
                        f"{len(contributors)} site(s){dropped}",
                    )
                    return fit
            beta = new_beta.tolist()
    raise GlmDidNotFit(f"the fit did not converge in {max_rounds} rounds")


def fit_glm(
    formula: str,
    family: str = "gaussian",
    *,
    federation: FederationSession | Path | str,
    data: Mapping[str, Any] | None = None,
    offset: str | None = None,
    exposure: str | None = None,
    weights: str | None = None,
    dataset: str | None = None,
    min_sites: int = 1,
    max_rounds: int = 25,
    tol: float = 1e-10,
    confidence: float = 0.95,
    token: str | None = None,
    policy: StepPolicy | None = None,
    resume: bool = False,
    local_start: bool = True,
) -> GlmFit:
    """Fit ``formula`` (formulaic syntax) over a federation; see the module docstring."""
    options: dict[str, Any] = {
        "policy": policy,
        "resume": resume,
        "local_start": local_start,
        "data": dict(data or {}),
        "offset": offset,
        "exposure": exposure,
        "weights": weights,
        "dataset": dataset,
        "min_sites": min_sites,
        "max_rounds": max_rounds,
        "tol": tol,
        "confidence": confidence,
    }
    return in_session(federation, token, lambda path: glm_flow(formula, family, path, **options))


def _solve(xtwx: np.ndarray, xtwz: np.ndarray, columns: list[str]) -> np.ndarray:
    rank = int(np.linalg.matrix_rank(xtwx))
    if rank < len(columns):
        raise GlmDidNotFit(
            f"the pooled design is rank-deficient (rank {rank} for {len(columns)} columns): "
            "drop collinear terms"
        )
    return np.linalg.solve(xtwx, xtwz)


def _inference(
    params: GlmRoundParams,
    columns: list[str],
    beta: np.ndarray,
    partial: Any,
    rounds: int,
    confidence: float,
) -> GlmFit:
    row = partial.to_pylist()[0]
    xtwx, _ = regression.matrices(partial)
    n, p = int(row["n"]), len(columns)
    df_resid = n - p
    deviance = float(row["deviance"])
    if params.family == "gaussian":
        scale = deviance / df_resid if df_resid > 0 else math.nan
        # statsmodels' Gaussian log-likelihood uses the maximum-likelihood scale RSS / n.
        loglik = -n / 2 * (math.log(2 * math.pi * deviance / n) + 1) + row["log_weight_sum"] / 2
    else:
        scale, loglik = 1.0, float(row["loglik"])
    covariance = np.linalg.inv(xtwx) * scale
    se = np.sqrt(np.diag(covariance))
    coefficients = pl.DataFrame(wald_columns(columns, beta, se, confidence))
    return GlmFit(
        formula=params.formula,
        family=params.family,
        coefficients=coefficients,
        deviance=deviance,
        loglik=loglik,
        aic=-2 * loglik + 2 * p,
        scale=scale,
        n=n,
        df_resid=df_resid,
        rounds=rounds,
        converged=True,
        sites=pl.DataFrame(),
    )


def _with_sites(
    fit: GlmFit,
    session: FederationSession,
    outcomes: list[SiteOutcome],
    request_ids: list[str],
) -> GlmFit:
    """Per-site counts, read back from the releases of the last round (nothing new leaves)."""
    rows = []
    for site, row in released_rows(session, outcomes):
        counts: dict[str, Any] = {"site": site, "n": row["n"]}
        if fit.family == "binomial":
            counts |= {"cases": row["y_one"], "non_cases": row["y_zero"]}
        elif fit.family == "poisson":
            counts |= {"events": row["y_sum"]}
        rows.append(counts)
    return GlmFit(
        **{
            **fit.__dict__,
            "sites": pl.DataFrame(rows),
            "request_ids": request_ids,
            "outcomes": outcomes,
        }
    )
