"""Exact federated Cox proportional hazards (Breslow ties): Newton where each round is one step.

Each round runs ``cox_round`` (:mod:`flows.analyses.cox_round`) at every site with the current
coefficients; the sites' airlocks check the risk-set sums; the orchestrator adds them up and
computes the pooled Breslow log partial likelihood, gradient and Hessian
(:func:`fedflow.core.cox.breslow`), then takes a Newton step, halving it while the
log-likelihood falls. The first round, at β = 0, also gives the pooled covariate means, which
every later round subtracts (the same centre at every site, so the sums stay exact). Because
the sums equal the pooled sums, the fit is the pooled Breslow fit on the gridded data::

    fit = run_cox({"formula": "age + gender + group", "entry": ..., "event": ...,
                   "groups": {...}, "interval_days": 30, "max_days": 365},
                  federation=federation)
    fit.coefficients   # term, estimate, std_error, z, p_value, ci_low, ci_high, hazard_ratio, ...

As with the GLM (:mod:`flows.glm`), the fit is one Prefect flow run (``cox``) whose rounds are
one task run each (:func:`flows.fitting.federated_round`), and a site that refuses or fails in
round 1 is not asked again. A site that stops contributing in a later round is dropped when the
error strategy allows it (``retry`` after its retries, or ``ignore``;
:class:`~flows.strategy.StepPolicy`): Newton starts again at β = 0 over the remaining sites, so
the log-likelihoods it compares and the null log-likelihood it reports are theirs, and the fit
says so (``CoxFit.dropped``). Under ``terminate`` it stops with :class:`CoxDidNotFit` naming the
sites. ``resume=True`` reuses the verified releases of an earlier run's rounds
(:mod:`flows.resume`) and asks only the sites that had not delivered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from fedflow.core import cox
from flows import publishing
from flows.analyses.cox_round import CoxRoundParams, design_columns
from flows.errors import FlowError
from flows.federation import FederationSession, open_session
from flows.fitting import FitSites, in_session, released_rows, wald_columns
from flows.outcomes import SiteOutcome
from flows.plots import forest_plot
from flows.strategy import StepPolicy

__all__ = ["CoxDidNotFit", "CoxFit", "CoxOptions", "cox_flow", "newton_step", "run_cox"]

ANALYSIS = "cox_round"
MAX_HALVINGS = 10


class CoxDidNotFit(FlowError):
    """The federated Cox fit stopped: no convergence, a singular information, or sites changed."""


class CoxOptions(BaseModel):
    """How to fit (what ``fedflow run cox --params`` takes besides ``cox_round``'s params)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_rounds: int = Field(default=25, ge=1, le=100)
    tol: float = Field(default=1e-10, gt=0, lt=1e-3)
    confidence: float = Field(default=0.95, gt=0, lt=1)


@dataclass(frozen=True)
class CoxFit:
    """A fitted federated Cox model."""

    formula: str
    coefficients: pl.DataFrame
    """term, estimate, std_error, z, p_value, ci_low, ci_high, hazard_ratio, hr_ci_low/high."""
    loglik: float
    loglik_null: float
    n: int
    events: int
    rounds: int
    sites: pl.DataFrame
    """Per contributing site: persons and events."""
    request_ids: list[str] = field(default_factory=list)
    outcomes: list[SiteOutcome] = field(default_factory=list)
    """Every site's outcome: in the last round, or in the round that decided it."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Sites dropped during the fit, with the round in which they stopped contributing."""

    def plot(self, path: Path, *, title: str | None = None) -> Path:
        """Write the forest plot of the hazard ratios as a PNG (:func:`flows.plots.forest_plot`)."""
        return forest_plot(
            self.coefficients, path, ratio="hazard ratio", title=title or f"Cox: {self.formula}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document of the fit."""
        return {
            "analysis": "cox",
            "formula": self.formula,
            "coefficients": self.coefficients.to_dicts(),
            "loglik": self.loglik,
            "loglik_null": self.loglik_null,
            "likelihood_ratio": 2 * (self.loglik - self.loglik_null),
            "n": self.n,
            "events": self.events,
            "rounds": self.rounds,
            "sites": self.sites.to_dicts(),
            "request_ids": self.request_ids,
            "dropped": self.dropped,
            "outcomes": [o.row() for o in self.outcomes],
        }


def newton_step(partial: Any, columns: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    """The log-likelihood, Newton step and information matrix of a merged Cox partial."""
    loglik, gradient, hessian = cox.breslow(partial)
    information = -hessian
    rank = int(np.linalg.matrix_rank(information))
    if rank < len(columns):
        raise CoxDidNotFit(
            f"the pooled Cox information is rank-deficient (rank {rank} for {len(columns)} "
            "columns): drop collinear terms or covariates without events"
        )
    return loglik, np.linalg.solve(information, gradient), information


@flow(name="cox", flow_run_name="cox")
def cox_flow(
    params: dict[str, Any],
    federation: str,
    dataset: str | None = None,
    min_sites: int = 1,
    max_rounds: int = 25,
    tol: float = 1e-10,
    confidence: float = 0.95,
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> CoxFit:
    """Fit a Cox model over the sites of ``federation`` (a profile path) by federated Newton.

    ``policy``: timeout, retries, quorum and error strategy of every round; ``resume``: reuse
    the verified releases of an earlier run of the same fit (``docs/failures.md``).
    """
    logger = get_run_logger()
    base = CoxRoundParams.model_validate(params)
    columns = design_columns(base)
    raw = base.model_dump(mode="json") | {"columns": columns}
    beta, center = np.zeros(len(columns)), np.zeros(len(columns))
    policy = policy or StepPolicy(min_sites=min_sites)
    sites = FitSites(policy, CoxDidNotFit)
    request_ids: list[str] = []
    best: tuple[float, np.ndarray, np.ndarray] | None = None  # loglik, beta, step there
    loglik_null = math.nan
    halvings = 0
    # The rounds' outcome artifacts go to the Prefect API while the next round runs.
    with open_session(federation) as session, publishing.deferred():
        for round_no in range(1, max_rounds + 1):
            values = {"beta": beta.tolist(), "center": center.tolist()}
            step, same_sites = sites.round(
                session,
                ANALYSIS,
                raw | values,
                round_no,
                dataset,
                min_sites,
                resume=resume,
                flow_name="cox",
            )
            request_ids.append(step.request_id)
            partial = step.result.to_arrow()
            if round_no == 1:  # at beta = 0 and no centre, S1 / S0 at time 0 is the mean of x
                stats = cox.arrays(partial)
                center = stats["s1"][0] / stats["s0"][0]
            if not same_sites and beta.any():
                # Other sites, another likelihood: start again at zero over the remaining ones.
                beta, best, halvings = np.zeros(len(columns)), None, 0
                continue
            loglik, newton, information = newton_step(partial, columns)
            logger.info("round %d: log partial likelihood %.12g", round_no, loglik)
            if best is not None and loglik < best[0] - 1e-12 * abs(best[0]):
                halvings += 1
                if halvings > MAX_HALVINGS:
                    raise CoxDidNotFit("step-halving did not raise the log-likelihood")
                beta = (best[1] + beta) / 2  # back toward the better point
                continue
            halvings = 0
            if best is None:
                loglik_null = loglik
            best = (loglik, beta, newton)
            if float(np.max(np.abs(newton))) <= tol * (1 + float(np.max(np.abs(beta)))):
                fit = _inference(base.formula, columns, beta, information, partial, confidence)
                fit = replace(
                    fit,
                    loglik=loglik,
                    loglik_null=loglik_null,
                    rounds=round_no,
                    sites=_site_counts(session, step.outcomes),
                    request_ids=request_ids,
                    outcomes=sites.report(list(session.transports)),
                    dropped=dict(sites.dropped),
                )
                dropped = f", {len(fit.dropped)} dropped" if fit.dropped else ""
                create_table_artifact(
                    key="cox-coefficients",
                    table=fit.coefficients.to_dicts(),
                    description=f"Cox {base.formula}: {round_no} rounds, "
                    f"{len(sites.contributors or [])} site(s){dropped}",
                )
                return fit
            beta = beta + newton
    raise CoxDidNotFit(f"the Cox fit did not converge in {max_rounds} rounds")


def run_cox(
    params: Mapping[str, Any],
    *,
    federation: FederationSession | Path | str,
    dataset: str | None = None,
    min_sites: int = 1,
    max_rounds: int = 25,
    tol: float = 1e-10,
    confidence: float = 0.95,
    token: str | None = None,
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> CoxFit:
    """Fit the Cox model ``params`` describes (``cox_round``'s parameters) over a federation."""
    options: dict[str, Any] = {
        "dataset": dataset,
        "min_sites": min_sites,
        "max_rounds": max_rounds,
        "tol": tol,
        "confidence": confidence,
        "policy": policy,
        "resume": resume,
    }
    return in_session(federation, token, lambda path: cox_flow(dict(params), path, **options))


def _inference(
    formula: str,
    columns: list[str],
    beta: np.ndarray,
    information: np.ndarray,
    partial: Any,
    confidence: float,
) -> CoxFit:
    se = np.sqrt(np.diag(np.linalg.inv(information)))
    wald = wald_columns(columns, beta, se, confidence)
    coefficients = pl.DataFrame(
        wald
        | {
            "hazard_ratio": np.exp(beta),
            "hr_ci_low": np.exp(wald["ci_low"]),
            "hr_ci_high": np.exp(wald["ci_high"]),
        }
    )
    stats = cox.arrays(partial)
    return CoxFit(
        formula=formula,
        coefficients=coefficients,
        loglik=math.nan,
        loglik_null=math.nan,
        n=int(stats["at_risk"][0]),
        events=int(stats["events"].sum()),
        rounds=0,
        sites=pl.DataFrame(),
    )


def _site_counts(session: FederationSession, outcomes: list[SiteOutcome]) -> pl.DataFrame:
    """Persons and events per contributing site, read back from the releases of the last round
    (nothing new leaves)."""
    return pl.DataFrame(
        [
            {"site": site, "n": row["at_risk"][0], "events": sum(row["events"])}
            for site, row in released_rows(session, outcomes)
        ]
    )
