"""One round of an exact federated GLM: a site's IRLS sufficient statistics at given coefficients.

:func:`flows.glm.fit_glm` calls this analysis once per Newton / IRLS round with the current
coefficients (``beta``; none in the first round, which starts from the data as R and
statsmodels do). Each site builds its person-level analysis table from OMOP
(:mod:`flows.analyses.glm_table`), its design matrix from the formula with ``formulaic``, and
returns XᵀWX, XᵀWz, the deviance and the log-likelihood (:mod:`fedflow.core.regression`).
The statistics add up across sites, so the orchestrator's update is the pooled update and
the fit is the pooled fit. Canonical links only (identity, logit, log), for which IRLS is
Newton's method.

Only the coefficients change from round to round, so the analysis splits a round in two
(the site's prepared-partition protocol, :class:`executors.cluster.PreparedAnalysis`):
:meth:`GlmRound.prepare` reads and derives the analysis table and builds the design matrix
(:class:`Design`), and :meth:`GlmRound.local_prepared` computes the round's statistics from
it. When the fitting flow names its fit (``fit_id``), the site keeps each partition's
design, keyed by :meth:`GlmRound.prepared_key` (everything but the fit id and ``beta``) and
the dataset's snapshot, for the rounds of that fit and for later fits of the same model on
the same data; ``local`` is the two in a row.

A formula is researcher input evaluated at the site, so it is checked before anything runs:
only the analysis table's columns, numbers, arithmetic and a short list of functions
(:data:`FUNCTIONS`) are allowed, and no stateful transform (``center``, ``scale``, splines),
whose result would depend on how the data is split.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
from formulaic import Formula, model_matrix
from pydantic import Field, model_validator

from fedflow.core import (
    Analysis,
    InvalidRequest,
    OutputKind,
    Params,
    TableColumns,
    digest_json,
    regression,
)
from fedflow.core.regression import Family
from flows.analyses.glm_table import AnalysisTable, derive

__all__ = [
    "FUNCTIONS",
    "Design",
    "GlmRound",
    "GlmRoundParams",
    "design_columns",
    "irls_statistics",
    "local_step_statistics",
    "used_columns",
]

FUNCTIONS = frozenset({"I", "C", "log", "log2", "log10", "exp"})
"""Functions a formula may call, besides ``np.<NUMPY>``."""
NUMPY = frozenset({"log", "log1p", "log2", "log10", "exp", "sqrt", "abs", "square"})
_COLUMN = r"^[a-z][a-z0-9_]{0,62}$"


class GlmRoundParams(Params):
    """The model, the analysis table, and the coefficients of this round."""

    formula: str = Field(min_length=3, max_length=2000)
    family: Family
    data: AnalysisTable = Field(default_factory=AnalysisTable)
    offset: str | None = Field(default=None, pattern=_COLUMN)
    exposure: str | None = Field(default=None, pattern=_COLUMN)
    """A column whose log is added to the offset (person-time for a Poisson rate model)."""
    weights: str | None = Field(default=None, pattern=_COLUMN)
    """A column of positive prior weights (statsmodels' ``var_weights``, R's ``weights``)."""
    columns: list[str] = Field(default_factory=list, max_length=200)
    """The design's columns, as :func:`design_columns` names them; set by the fitting flow."""
    beta: list[float] | None = None
    """The coefficients of this round, in ``columns`` order; None in the first round."""
    local_step: bool = False
    """Before its statistics, each partition takes one Newton step from ``beta`` (or the start)
    on its own rows and computes them at its own estimate (from a given ``beta``, only where
    that lowers its deviance): the sum then solves to a combination of the partitions'
    estimates, much closer to the pooled fit than one common step
    (:func:`local_step_statistics`). The fitting flow asks for it in the first round, which
    saves the fit a round where partitions are large; the later rounds are exact Newton
    steps."""
    fit_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    """The fit this round belongs to (set by the fitting flow): a site may keep the design
    matrices for the fit's rounds (and later fits of the same model). None: nothing is kept."""

    @model_validator(mode="after")
    def _checked(self) -> GlmRoundParams:
        kinds = self.data.kinds()
        _check_formula(self.formula, set(kinds))
        for role in ("offset", "exposure", "weights"):
            column = getattr(self, role)
            if column is not None and kinds.get(column) != "float":
                raise ValueError(f"{role} must name a numeric column of the analysis table")
        if self.beta is not None:
            if len(self.beta) != len(self.columns):
                raise ValueError("beta must have one value per design column")
            if not all(math.isfinite(b) for b in self.beta):
                raise ValueError("beta must be finite")
        return self


def used_columns(params: GlmRoundParams) -> set[str]:
    """The analysis-table columns the model reads."""
    used = set(_required(params.formula))
    used |= {c for c in (params.offset, params.exposure, params.weights) if c is not None}
    return used


def design_columns(params: GlmRoundParams) -> list[str]:
    """The design matrix's column names, found on a small synthetic table of the right kinds."""
    kinds = params.data.kinds()
    used = tuple((name, kinds[name]) for name in sorted(used_columns(params)))
    return list(_design_columns(params.formula, used))


@lru_cache(maxsize=256)
def _design_columns(formula: str, used: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """:func:`design_columns` of ``formula`` over columns of these (name, kind): a fitting flow
    asks once per fit, and formulaic takes about 10 ms to build even this small matrix."""
    frame = pd.DataFrame(
        {
            name: pd.Categorical(["female", "male", "female"])
            if kind == "category"
            else [1.0, 2.0, 3.0]
            for name, kind in used
        }
    )
    matrices = model_matrix(formula, frame)
    if len(matrices.lhs.columns) != 1:
        raise InvalidRequest("the formula must have exactly one outcome column")
    return tuple(str(c) for c in matrices.rhs.columns)


class GlmRound(Analysis[GlmRoundParams]):
    """IRLS sufficient statistics of a Gaussian, binomial or Poisson GLM at given coefficients."""

    name = "glm_round"
    version = "1.0"
    output = OutputKind.REGRESSION
    params_model = GlmRoundParams
    iterated = frozenset({"beta", "local_step"})

    def tables(self, params: GlmRoundParams) -> TableColumns:
        return params.data.tables(used_columns(params))

    def local(self, tables: Mapping[str, pa.Table], params: GlmRoundParams) -> pa.Table:
        return self.local_prepared(self.prepare(tables, params), params)

    def prepared_key(self, params: GlmRoundParams) -> str | None:
        """What a partition's :class:`Design` depends on: every parameter but the fit id and the
        round's (beta, local step), so a later fit of the same model reuses the design (None
        without a fit id)."""
        if params.fit_id is None:
            return None
        return digest_json(params.model_dump(mode="json", exclude={*self.iterated, "fit_id"}))

    def prepare(self, tables: Mapping[str, pa.Table], params: GlmRoundParams) -> Design:
        """The partition's design matrix, outcome, offset and prior weights, checked."""
        used = used_columns(params)
        frame = derive(tables, params.data, used).dropna(subset=sorted(used))
        p = len(params.columns)
        if frame.empty:
            x, y = np.zeros((0, p)), np.zeros(0)
        else:
            matrices = model_matrix(params.formula, frame, na_action="raise")
            if [str(c) for c in matrices.rhs.columns] != params.columns:
                raise InvalidRequest("the design at this site does not have the expected columns")
            x = np.asarray(matrices.rhs, dtype=np.float64)
            y = np.asarray(matrices.lhs, dtype=np.float64)[:, 0]
        offset = np.zeros(len(y))
        if params.offset is not None:
            offset += frame[params.offset].to_numpy(np.float64)
        if params.exposure is not None:
            exposure = frame[params.exposure].to_numpy(np.float64)
            if np.any(exposure <= 0):
                raise InvalidRequest("exposure must be positive")
            offset += np.log(exposure)
        weights = np.ones(len(y))
        if params.weights is not None:
            weights = frame[params.weights].to_numpy(np.float64)
            if np.any(weights <= 0):
                raise InvalidRequest("weights must be positive")
        _check_outcome(params.family, y)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(offset))):
            raise InvalidRequest("the design or offset has non-finite values")
        return Design.build(params.family, x, y, offset, weights)

    def local_prepared(self, design: Design, params: GlmRoundParams) -> pa.Table:
        """The round's statistics at ``params.beta`` over a prepared partition (at the
        partition's own estimate with ``params.local_step``)."""
        beta = None if params.beta is None else np.asarray(params.beta)
        if params.local_step:
            return local_step_statistics(params.family, params.columns, design, beta)
        return _statistics_at(params.family, params.columns, design, beta)

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return regression.merge(partials)

    def finalize(self, partial: pa.Table, params: GlmRoundParams) -> pa.Table:
        return partial


@dataclass(frozen=True, eq=False)
class Design:
    """One partition's model inputs, and what about them does not change between rounds."""

    x: np.ndarray
    y: np.ndarray
    offset: np.ndarray
    weights: np.ndarray
    ones: list[int | None]
    """Per design column, the count of ones of a 0/1 column (:func:`regression.indicator_ones`)."""
    log_factorial: np.ndarray | None
    """log(y!) for a Poisson outcome, else None."""
    totals: dict[str, float | int]
    """n, weight_sum, log_weight_sum, y_sum, y_zero and y_one."""
    unit_weights: bool
    """Every prior weight is 1 (the rounds then skip multiplying by them)."""
    has_offset: bool
    """Some offset is not 0."""

    @classmethod
    def build(
        cls, family: str, x: np.ndarray, y: np.ndarray, offset: np.ndarray, weights: np.ndarray
    ) -> Design:
        log_factorial = None
        if family == "poisson":
            log_factorial = np.fromiter((math.lgamma(v + 1) for v in y), float, len(y))
        return cls(
            x=np.asfortranarray(x, dtype=np.float64),
            y=y,
            offset=offset,
            weights=weights,
            ones=regression.indicator_ones(x),
            log_factorial=log_factorial,
            totals={
                "n": int(y.size),
                "weight_sum": float(weights.sum()),
                "log_weight_sum": float(np.log(weights).sum()),
                "y_sum": float(y.sum()),
                "y_zero": int(np.count_nonzero(y == 0)),
                "y_one": int(np.count_nonzero(y == 1)),
            },
            unit_weights=bool(np.all(weights == 1)),
            has_offset=bool(np.any(offset != 0)),
        )

    @property
    def nbytes(self) -> int:
        arrays = (self.x, self.y, self.offset, self.weights, self.log_factorial)
        return sum(a.nbytes for a in arrays if a is not None)


def irls_statistics(
    family: str,
    columns: Sequence[str],
    x: np.ndarray,
    y: np.ndarray,
    offset: np.ndarray,
    weights: np.ndarray,
    beta: np.ndarray | None,
    *,
    design: Design | None = None,
) -> pa.Table:
    """XᵀWX, XᵀWz, deviance and log-likelihood at ``beta`` (or at the starting values).

    ``design``: the same arrays prepared (:class:`Design`), whose per-fit constants are then
    not computed again.
    """
    if design is None:
        design = Design.build(family, x, y, offset, weights)
    unit = design.unit_weights
    if beta is None:  # start from the data, as statsmodels and R do
        mu = _START[family](y)
        eta = _LINK[family](mu)
    else:
        eta = x @ beta
        if design.has_offset:
            eta += offset
        mu = _INVERSE[family](eta)
    # For a canonical link dmu/deta is the variance function, so W = w * V(mu) and
    # W z = W (eta - offset) + w (y - mu), which stays finite as mu nears 0 or 1.
    variance = _VARIANCE[family](mu)
    working_weights = variance if unit else weights * variance
    if beta is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            working = np.where(working_weights > 0, (eta - offset) + (y - mu) / variance, 0.0)
        xtwx, xtwz = regression.weighted_gram(x, working_weights, working)
    else:
        # At given coefficients eta - offset = X beta, so XᵀWz = (XᵀWX) beta + Xᵀ w (y - mu):
        # the score, with no working response to form.
        residual = y - mu if unit else weights * (y - mu)
        xtwx = regression.gram(x, working_weights)
        xtwz = xtwx @ beta + x.T @ residual
    if family == "gaussian":
        deviance = float(np.sum(weights * (y - mu) ** 2))
        loglik = 0.0
    elif family == "binomial":
        mu = np.clip(mu, 1e-300, 1 - 1e-16)
        # log(mu) where y = 1, log(1 - mu) where y = 0: one logarithm per row.
        loglik = float(np.sum(weights * np.log(np.where(y == 1, mu, 1 - mu))))
        deviance = -2 * loglik
    else:
        assert design.log_factorial is not None
        log_y = np.log(np.where(y > 0, y, 1.0))
        log_mu = np.log(mu)
        loglik = float(np.sum(weights * (y * log_mu - mu - design.log_factorial)))
        deviance = float(2 * np.sum(weights * (y * (log_y - log_mu) - (y - mu))))
    return regression.from_gram(
        family,
        columns,
        design.totals,
        xtwx=xtwx,
        xtwz=xtwz,
        deviance=deviance,
        loglik=loglik,
        ones=design.ones,
    )


def local_step_statistics(
    family: str, columns: Sequence[str], design: Design, beta: np.ndarray | None
) -> pa.Table:
    """The statistics at this partition's own one-step estimate, or at ``beta`` (or the start).

    The partition solves its statistics at ``beta`` for its own next Newton iterate and
    returns the statistics there. It keeps those at ``beta`` where its XᵀWX is rank-deficient
    or, from a given ``beta``, where the iterate does not lower its deviance. From the start
    the iterate is the first IRLS step, a weighted least-squares fit, and is always taken.

    At partition ``k``'s point ``b_k``, XᵀWz is ``H_k b_k + g_k`` (Hessian, score), so the
    summed statistics solve to ``(sum H_k)⁻¹ sum (H_k b_k + g_k)``: the partitions' estimates
    weighted by their information. From the start this is about as close to the pooled fit
    as two common rounds get (``bench/glm.py``). Any ``b_k`` is a valid start: only the later
    rounds, at one common beta, decide the fit.
    """

    here = _statistics_at(family, columns, design, beta)
    xtwx, xtwz = regression.matrices(here)
    if xtwx.size == 0 or np.linalg.matrix_rank(xtwx) < xtwx.shape[0]:
        return here
    try:
        estimate = np.linalg.solve(xtwx, xtwz)
    except np.linalg.LinAlgError:
        return here
    if not np.all(np.isfinite(estimate)):
        return here
    there = _statistics_at(family, columns, design, estimate)
    if beta is None:  # the start's deviance is of mu from y itself, not of a model: no test
        return there
    return there if there["deviance"][0].as_py() < here["deviance"][0].as_py() else here


def _statistics_at(
    family: str, columns: Sequence[str], design: Design, beta: np.ndarray | None
) -> pa.Table:
    """:func:`irls_statistics` over a prepared partition."""
    return irls_statistics(
        family, columns, design.x, design.y, design.offset, design.weights, beta, design=design
    )


_START: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian": lambda y: y,
    "binomial": lambda y: (y + 0.5) / 2,
    "poisson": lambda y: y + 0.1,
}
_LINK: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian": lambda mu: mu,
    "binomial": lambda mu: np.log(mu / (1 - mu)),
    "poisson": np.log,
}
_INVERSE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian": lambda eta: eta,
    "binomial": lambda eta: 1 / (1 + np.exp(-eta)),
    "poisson": np.exp,
}
_VARIANCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gaussian": np.ones_like,
    "binomial": lambda mu: mu * (1 - mu),
    "poisson": lambda mu: mu,
}


def _check_outcome(family: str, y: np.ndarray) -> None:
    if not np.all(np.isfinite(y)):
        raise InvalidRequest("the outcome has non-finite values")
    if family == "binomial" and not np.all((y == 0) | (y == 1)):
        raise InvalidRequest("a binomial outcome must be 0 or 1")
    if family == "poisson" and np.any((y < 0) | (y != np.round(y))):
        raise InvalidRequest("a Poisson outcome must be a non-negative count")


@lru_cache(maxsize=256)
def _parsed(formula: str) -> Formula:
    """The parsed formula: a site parses the same formula on every request of a fit."""
    return Formula(formula)


@lru_cache(maxsize=256)
def _required(formula: str) -> frozenset[str]:
    return frozenset(_parsed(formula).required_variables)


def _check_formula(formula: str, columns: set[str]) -> None:
    """Allow only columns, numbers, arithmetic and the listed functions (no stateful ones)."""
    _check_parsed(formula, frozenset(columns))


@lru_cache(maxsize=256)
def _check_parsed(formula: str, columns: frozenset[str]) -> None:
    try:
        parsed = _parsed(formula)
    except Exception:  # formulaic raises several types for bad syntax
        raise ValueError("the formula cannot be parsed") from None
    factors = [f for side in (parsed.lhs, parsed.rhs) for term in side for f in term.factors]
    for factor in factors:
        try:
            tree = ast.parse(str(factor.expr), mode="eval")
        except SyntaxError:
            raise ValueError("the formula has a term that is not an expression") from None
        for node in ast.walk(tree):
            _check_node(node, columns)


_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Load,
    ast.List,
    ast.Tuple,
    ast.keyword,
)


def _check_node(node: ast.AST, columns: Set[str]) -> None:
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str) or isinstance(node.value, bool):
            raise ValueError("the formula may hold only numbers and level names as constants")
    elif isinstance(node, ast.Name):
        if node.id not in columns and node.id not in FUNCTIONS and node.id != "np":
            raise ValueError(f"the formula names {node.id!r}, not a column of the analysis table")
    elif isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id == "np" and node.attr in NUMPY):
            raise ValueError("the formula may use only np." + ", np.".join(sorted(NUMPY)))
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if isinstance(func, ast.Name) and name not in FUNCTIONS:
            raise ValueError(f"the formula may not call {name!r}")
        if any(k.arg not in {"levels"} for k in node.keywords):
            raise ValueError("the only keyword a formula function takes is levels")
    elif isinstance(node, ast.keyword):
        pass
    elif not isinstance(node, _ALLOWED_NODES):
        raise ValueError(f"the formula may not use {type(node).__name__}")
