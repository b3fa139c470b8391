"""What the federated model fits (GLM, Cox) share: one round as one Prefect task, the round's
contributors, Wald inference, per-site counts read back from the last round's releases, and
running a fit's flow over a profile or an open session.

A fit runs many rounds of the same step, so a round is one Prefect task run
(:func:`federated_round`) that runs the step's stages at every site in the session's site
threads (:meth:`~flows.federation.FederationSession.site_threads`), inside that task run:
``gate_before`` → ``run`` → ``gate_after`` at each site, as in every federated step, with the
same request, receipts, checkpoints, secure aggregation, orchestrator audit and per-site
outcomes (:func:`flows.federated._federated_step`), but one task run per round instead of three
per site, and no subflow run per round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, TypeVar, cast

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from fedflow.core import from_ipc
from flows import steps
from flows.errors import FlowError
from flows.federated import _federated_step
from flows.federation import FederationSession, connect
from flows.outcomes import FederatedResult, SiteOutcome, SiteStatus
from flows.server import ad_hoc_runs
from flows.strategy import ErrorStrategy, StepPolicy

__all__ = [
    "FitSites",
    "federated_round",
    "in_session",
    "released_rows",
    "wald_columns",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)


@task(name="round", task_run_name="{analysis}-round-{round_no}", cache_policy=NO_CACHE)
def federated_round(
    session: FederationSession,
    analysis: str,
    params: dict[str, Any],
    round_no: int,
    dataset: str | None = None,
    min_sites: int = 1,
    timeout: float = steps.DEFAULT_TIMEOUT,
    review_timeout: float = steps.DEFAULT_REVIEW_TIMEOUT,
    *,
    policy: StepPolicy | None = None,
    skip: Mapping[str, str] | None = None,
    resume: bool = False,
    flow_name: str = "fit",
    published: Mapping[str, SiteStatus] | None = None,
) -> FederatedResult:
    """One round of a fit: one federated step, its site stages in the session's site threads.

    ``skip``: sites dropped earlier in the fit (not asked); ``resume``: reuse the verified
    releases of an earlier run of this round (same fit, parameters and coefficients);
    ``published``: the site statuses the fit last published (a round with the same ones
    publishes no outcome tables or events).
    """
    return _federated_step(
        session,
        analysis,
        params,
        dataset,
        None,
        min_sites,
        timeout,
        review_timeout,
        pool=session.site_threads(),
        policy=policy,
        skip=skip,
        resume=resume,
        flow_name=flow_name,
        round_no=round_no,
        published=published,
    )


@dataclass
class FitSites:
    """Which sites a fit runs over, round by round, and what happened to each.

    The first round's contributors make the fit. A site that stops contributing in a later
    round is dropped for the rest of the fit when the error strategy allows it (``retry``
    after its retries, or ``ignore``) and ``drops`` is true: the fit goes on over fewer sites
    and says so (``dropped``); under ``terminate``, or without ``drops``, the fit stops with
    ``error``. Sites never change within a round, so a round after a drop is never taken as
    converged.
    """

    policy: StepPolicy
    error: type[FlowError]
    drops: bool = True
    """Whether a site lost after round 1 may be dropped (a GWAS, tested against round 1's null
    model, may not)."""
    contributors: list[str] | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    """Site -> the round in which it stopped contributing."""
    outcomes: dict[str, SiteOutcome] = field(default_factory=dict)
    """Each site's last outcome: in the last round, or in the round that decided it."""
    statuses: dict[str, SiteStatus] | None = None
    """The last round's site statuses: the next round publishes its outcome tables and
    governance events only if its own differ (round 1, a refusal, a failure, a drop)."""

    def round(
        self,
        session: FederationSession,
        analysis: str,
        params: dict[str, Any],
        round_no: int,
        dataset: str | None,
        min_sites: int,
        *,
        resume: bool,
        flow_name: str,
    ) -> tuple[FederatedResult, bool]:
        """Round ``round_no`` over the sites still in the fit (:func:`federated_round`, under
        the fit's policy); the step, and whether its contributing sites stayed the same."""
        step = federated_round(
            _unwalked(session),
            analysis,
            _unwalked(params),
            round_no,
            dataset,
            min_sites,
            policy=_unwalked(self.policy),
            skip=_unwalked(self._skip()),
            resume=resume,
            flow_name=flow_name,
            published=_unwalked(self.statuses),
        )
        self.statuses = {o.site: o.status for o in step.outcomes}
        return step, self._update(step, round_no)

    def _skip(self) -> dict[str, str]:
        """The sites not to ask in the next round, with why."""
        if self.contributors is None:
            return {}
        return {
            site: _why(self.outcomes[site])
            for site in self.outcomes
            if site not in self.contributors
        }

    def _update(self, step: FederatedResult, round_no: int) -> bool:
        """Take a round's outcomes; whether the contributing sites stayed the same."""
        for outcome in step.outcomes:
            self.outcomes[outcome.site] = outcome
        sites = step.sites_contributing
        if self.contributors is None:
            self.contributors = sites
            return True
        lost = [s for s in self.contributors if s not in sites]
        if not lost:
            return True
        if not self.drops or self.policy.error_strategy is ErrorStrategy.TERMINATE:
            raise self.error(
                f"contributing sites changed in round {round_no}: "
                f"{', '.join(self.contributors)} before, {', '.join(sites) or 'none'} now",
                request_id=step.request_id,
            )
        for site in lost:
            self.dropped[site] = round_no
        logger.warning(
            "round %d: %s dropped; the fit goes on over %d site(s)",
            round_no,
            ", ".join(lost),
            len(sites),
        )
        self.contributors = sites
        return False

    def report(self, order: list[str]) -> list[SiteOutcome]:
        """Every site's outcome for the fit, in the federation's order."""
        return [self.outcomes[s] for s in order if s in self.outcomes]


def _unwalked(value: T) -> T:
    """``value`` as a task argument Prefect passes on as it is. Prefect walks every argument of
    a task run for futures and states to resolve; a round's arguments hold none, and the
    session holds every site's transport: the walk took about 35 ms of a ten-site fit."""
    return cast(T, quote(value))


def _why(outcome: SiteOutcome) -> str:
    """Why a site is not asked any more (its deciding outcome)."""
    where = "" if outcome.round is None else f" in round {outcome.round}"
    return f"not asked again: {outcome.status.value} at {outcome.stage}{where}"


def wald_columns(
    columns: Sequence[str], beta: np.ndarray, se: np.ndarray, confidence: float
) -> dict[str, Any]:
    """term, estimate, std_error, z, two-sided normal p_value, ci_low and ci_high."""
    z = beta / se
    quantile = NormalDist().inv_cdf(0.5 + confidence / 2)
    return {
        "term": list(columns),
        "estimate": beta,
        "std_error": se,
        "z": z,
        "p_value": [math.erfc(abs(v) / math.sqrt(2)) for v in z],
        "ci_low": beta - quantile * se,
        "ci_high": beta + quantile * se,
    }


def released_rows(
    session: FederationSession, outcomes: list[SiteOutcome]
) -> list[tuple[str, dict[str, Any]]]:
    """(site, partial row) of each contributing site's last release (nothing new leaves)."""
    rows = []
    for outcome in outcomes:
        if not outcome.contributed or outcome.job_id is None:
            continue
        release = session.transports[outcome.site].release(outcome.job_id)
        assert release.partial is not None
        rows.append((outcome.site, from_ipc(release.partial).to_pylist()[0]))
    return rows


def in_session(
    federation: FederationSession | Path | str,
    token: str | None,
    run: Callable[[str], T],
) -> T:
    """``run(profile path)`` with the session open: the given one, or one opened here."""
    if isinstance(federation, FederationSession):
        assert federation.profile.path is not None
        with ad_hoc_runs():
            return run(str(federation.profile.path))
    with connect(Path(federation), token=token) as session:
        return in_session(session, token, run)
