"""Differential privacy at a site that opts in: OpenDP noise on counts, sums and histograms.

:func:`privatize` adds noise to a partial before the airlock sees it, and charges the site's
:class:`PrivacyLedger` (SQLite in the state folder, per site, project and dataset). A release
that would overdraw the budget is refused, stating the budget that remains. The mechanisms are
OpenDP's (``make_laplace``, and ``make_gaussian`` turned into (epsilon, delta) with
``make_zCDP_to_approxDP`` and ``make_fix_delta``); their scale is calibrated by OpenDP's
``binary_search_param`` so that each release costs exactly the policy's ``query_epsilon``.

Sensitivity assumptions (what the guarantee rests on):

- neighbouring datasets differ by one person (added or removed);
- a person contributes at most once to each cell, and to at most ``cells_per_person``
  interior cells (1 for a characterization: one age band and gender per person), so a count
  vector has L1 sensitivity ``cells_per_person`` and L2 sensitivity its square root;
- a person's contribution to a sum lies within the declared ``sum_bounds`` ``[L, U]`` (the
  analysis clamps it, e.g. ``magnitude_table``'s ``clamp``; the site checks the contributions
  it kept and refuses otherwise), so a sum vector has L1 sensitivity
  ``cells_per_person * max(|L|, |U|)``; a magnitude table spends half of the query's epsilon
  (and delta) on its counts and half on its sums (basic composition).

Only interior cells are noised; margins are recomputed from them (post-processing, so
consistent and free), noisy counts are clamped at zero, and the cells of a table are the
product of the dimension values seen (missing combinations enter as zeros and get noise too).
What is not covered: which dimension values exist at all (a band nobody falls in is absent),
and the airlock's suppressions after noise are post-processing except the dominance rules,
which look at the true contributions the site kept (they only ever withhold more).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
from opendp import combinators, domains, measurements, metrics
from opendp.mod import Measurement, binary_search_param, enable_features
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedflow.core import OutputKind, frequency, magnitude
from fedflow.core.sqlitedb import open_shared
from governance.airlock import AirlockResult, Outcome
from governance.airlock.result import refused

__all__ = ["PrivacyLedger", "PrivacyPolicy", "Spent", "noise_measurement", "privatize"]

enable_features("contrib")

_NOISED = (OutputKind.FREQUENCY, OutputKind.MAGNITUDE)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    job_id TEXT PRIMARY KEY, site TEXT NOT NULL, project TEXT NOT NULL, dataset TEXT NOT NULL,
    epsilon REAL NOT NULL, delta REAL NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL
);
"""


class PrivacyPolicy(BaseModel):
    """The site policy's ``privacy`` section (off unless ``enabled``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    epsilon: float = Field(default=1.0, gt=0)
    """Total budget per (project, dataset), unless ``budgets`` names the pair."""
    budgets: dict[str, dict[str, float]] = Field(default_factory=dict)
    """``{project: {dataset: epsilon}}``: budgets other than the default."""
    query_epsilon: float = Field(default=0.1, gt=0)
    """What one release costs."""
    delta: float = Field(default=1e-7, gt=0, lt=1e-3)
    """Per release, for the Gaussian mechanism only."""
    output_kinds: tuple[OutputKind, ...] = (OutputKind.FREQUENCY,)
    """Which outputs get noise: ``frequency`` (counts, histograms) and ``magnitude`` (sums)."""
    sum_bounds: tuple[float, float] | None = None
    """``[L, U]``: the range of one person's contribution to a sum (needed for magnitude)."""
    cells_per_person: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyPolicy:
        other = [k.value for k in self.output_kinds if k not in _NOISED]
        if other:
            raise ValueError(f"no differential privacy mechanism for output kinds {other}")
        if self.sum_bounds is not None and not self.sum_bounds[0] <= self.sum_bounds[1]:
            raise ValueError("sum_bounds: the lower bound is above the upper bound")
        if self.enabled and OutputKind.MAGNITUDE in self.output_kinds and not self.sum_bounds:
            raise ValueError("sum_bounds is required to add noise to magnitude tables")
        budgets = [self.epsilon, *(e for d in self.budgets.values() for e in d.values())]
        if any(not e > 0 for e in budgets):
            raise ValueError("every budget must be a positive epsilon")
        return self

    def budget(self, project: str, dataset: str) -> float:
        """The total epsilon of ``project`` on ``dataset``."""
        return self.budgets.get(project, {}).get(dataset, self.epsilon)


class Spent(BaseModel):
    """What a (site, project, dataset) has spent, and on how many releases."""

    epsilon: float
    delta: float
    releases: int


class PrivacyLedger:
    """Epsilon (and delta) spent per (site, project, dataset), kept in SQLite at the site."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_shared(path, _SCHEMA)

    def spent(self, *, site: str, project: str, dataset: str) -> Spent:
        row = self._db.execute(
            "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0), COUNT(*) FROM spend "
            "WHERE site = ? AND project = ? AND dataset = ?",
            (site, project, dataset),
        ).fetchone()
        return Spent(epsilon=row[0], delta=row[1], releases=row[2])

    def charge(
        self,
        *,
        site: str,
        project: str,
        dataset: str,
        job_id: str,
        epsilon: float,
        delta: float,
        kind: str,
        budget: float,
    ) -> float | None:
        """Record the spend and return the epsilon left, or None (nothing recorded) if the
        spend would exceed ``budget`` or the job was charged before (noise is drawn once)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                done = self._db.execute("SELECT 1 FROM spend WHERE job_id = ?", (job_id,))
                spent = self.spent(site=site, project=project, dataset=dataset).epsilon
                if done.fetchone() is not None or spent + epsilon > budget * (1 + 1e-12):
                    self._db.execute("ROLLBACK")
                    return None
                self._db.execute(
                    "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, site, project, dataset, epsilon, delta, kind, _now()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return max(0.0, round(budget - spent - epsilon, 12))

    def close(self) -> None:
        self._db.close()


def noise_measurement(
    mechanism: str, *, integer: bool, l1: float, l2: float, epsilon: float, delta: float
) -> Measurement:
    """OpenDP's measurement adding ``mechanism`` noise to a vector at exactly ``epsilon``.

    ``l1`` / ``l2`` bound how much one person changes the vector (L1 for Laplace, L2 for
    Gaussian); integer vectors get OpenDP's discrete Laplace or discrete Gaussian noise.
    """
    atom = domains.atom_domain(T=int) if integer else domains.atom_domain(T=float, nan=False)
    domain = domains.vector_domain(atom)
    if mechanism == "laplace":
        metric = metrics.l1_distance(T=int if integer else float)
        d_in: Any = int(l1) if integer else float(l1)
        scale = binary_search_param(
            lambda s: measurements.make_laplace(domain, metric, scale=s), d_in=d_in, d_out=epsilon
        )
        return measurements.make_laplace(domain, metric, scale=scale)

    def gaussian(s: float) -> Measurement:
        zcdp = measurements.make_gaussian(domain, metrics.l2_distance(T=float), scale=s)
        return combinators.make_fix_delta(combinators.make_zCDP_to_approxDP(zcdp), delta)

    classic = l2 * math.sqrt(2 * math.log(1.25 / delta)) / epsilon  # keeps the search finite
    scale = binary_search_param(
        gaussian, d_in=float(l2), d_out=(epsilon, delta), bounds=(classic / 20, classic * 2)
    )
    return gaussian(scale)


def privatize(
    kind: OutputKind | str,
    table: pa.Table,
    policy: PrivacyPolicy,
    ledger: PrivacyLedger,
    *,
    site: str,
    project: str,
    dataset: str,
    job_id: str,
) -> AirlockResult:
    """Noise ``table`` and charge the ledger; unchanged when the policy does not apply.

    Returns ``released`` with the noisy partial (the airlock then checks it as usual, its
    threshold now applied to noisy counts) or ``refused`` with the reason, the remaining
    budget included when the budget is exhausted.
    """
    kind = OutputKind(kind)
    if not policy.enabled or kind not in policy.output_kinds:
        return AirlockResult(Outcome.RELEASED, table, 0, ())
    if kind is OutputKind.MAGNITUDE:
        assert policy.sum_bounds is not None
        if not magnitude.has_contributions(table):
            return refused("a magnitude table needs its contributions to check the sum bounds")
        low, high = policy.sum_bounds
        tops, lowest = table["top"].to_pylist(), table["lowest"].to_pylist()
        if any(t and t[0] > high for t in tops) or any(v is not None and v < low for v in lowest):
            return refused(
                f"a contribution lies outside the declared sum bounds [{low:g}, {high:g}]: "
                "ask with contributions clamped to them"
            )
    budget = policy.budget(project, dataset)
    delta = policy.delta if policy.mechanism == "gaussian" else 0.0
    left = ledger.charge(
        site=site,
        project=project,
        dataset=dataset,
        job_id=job_id,
        epsilon=policy.query_epsilon,
        delta=delta,
        kind=kind.value,
        budget=budget,
    )
    if left is None:
        spent = ledger.spent(site=site, project=project, dataset=dataset)
        remaining = max(0.0, round(budget - spent.epsilon, 12))
        return refused(
            f"privacy budget exhausted: this release needs epsilon {policy.query_epsilon:g}; "
            f"{remaining:g} of {budget:g} remains for project {project!r} on dataset "
            f"{dataset!r} at site {site!r}"
        )
    noisy = _noisy(kind, table, policy)
    reason = (
        f"{policy.mechanism} noise (OpenDP) at epsilon {policy.query_epsilon:g}"
        + (f", delta {delta:g}" if delta else "")
        + f"; {left:g} of {budget:g} epsilon remains for this project and dataset"
    )
    return AirlockResult(Outcome.RELEASED, noisy, 0, (reason,))


def _noisy(kind: OutputKind, table: pa.Table, policy: PrivacyPolicy) -> pa.Table:
    is_frequency = kind is OutputKind.FREQUENCY
    dims = frequency.dimensions(table) if is_frequency else magnitude.dimensions(table)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    interior = frame.filter(*(pl.col(d) != frequency.MARGIN for d in dims)) if dims else frame
    if dims:  # every combination of the values seen, absent ones as zeros
        grid = pl.DataFrame({dims[0]: interior[dims[0]].unique()})
        for d in dims[1:]:
            grid = grid.join(pl.DataFrame({d: interior[d].unique()}), how="cross")
        interior = grid.join(interior, on=dims, how="left")
    cells = policy.cells_per_person
    epsilon, delta = policy.query_epsilon, policy.delta
    counted = frequency.COUNT if is_frequency else magnitude.PERSONS
    if not is_frequency:
        epsilon, delta = epsilon / 2, delta / 2
        assert policy.sum_bounds is not None
        bound = max(abs(b) for b in policy.sum_bounds)
        sums = interior[magnitude.SUM].fill_null(0.0).to_list()
        measure = noise_measurement(
            policy.mechanism,
            integer=False,
            l1=cells * bound,
            l2=math.sqrt(cells) * bound,
            epsilon=epsilon,
            delta=delta,
        )
        interior = interior.with_columns(pl.Series(magnitude.SUM, measure(sums), pl.Float64))
    counts = interior[counted].fill_null(0).to_list()
    measure = noise_measurement(
        policy.mechanism, integer=True, l1=cells, l2=math.sqrt(cells), epsilon=epsilon, delta=delta
    )
    noisy = [max(0, int(c)) for c in measure(counts)]
    interior = interior.with_columns(pl.Series(counted, noisy, pl.Int64))
    summed = [counted] if is_frequency else [counted, magnitude.SUM]
    rebuilt = _with_margins(interior.select(*dims, *summed), dims, summed)
    if not is_frequency:  # the airlock's evidence stays as the site kept it
        evidence = frame.select(*dims, *magnitude.SITE_ONLY)
        rebuilt = rebuilt.join(evidence, on=dims, how="left") if dims else rebuilt.hstack(evidence)
        rebuilt = rebuilt.with_columns(
            pl.col("top").fill_null(pl.lit([], dtype=pl.List(pl.Float64))),
            pl.col("negatives").fill_null(0),
        )
    out = rebuilt.sort(dims).to_arrow() if dims else rebuilt.to_arrow()
    return out.cast(pa.schema([table.schema.field(c) for c in out.column_names]))


def _with_margins(interior: pl.DataFrame, dims: Sequence[str], summed: list[str]) -> pl.DataFrame:
    pieces = []
    for k in range(len(dims), -1, -1):
        for kept in combinations(dims, k):
            totals = [pl.col(c).sum() for c in summed]
            part = interior.group_by(list(kept)).agg(totals) if kept else interior.select(totals)
            pieces.append(
                part.select(
                    *(pl.col(d) if d in kept else pl.lit(frequency.MARGIN).alias(d) for d in dims),
                    *summed,
                )
            )
    return pl.concat(pieces)


def _now() -> str:
    return datetime.now(UTC).isoformat()
