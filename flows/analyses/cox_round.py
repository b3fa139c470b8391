"""One round of a federated Cox model: a site's risk-set sums per grid point at given coefficients.

:func:`flows.cox.run_cox` calls this analysis once per Newton round with the current
coefficients (``beta``) and the covariate centre (``center``, the same at every site, so
exp(xβ) cannot overflow and the sums stay exact). The cohort is Kaplan-Meier's
(:func:`flows.analyses.km.gridded_persons`): time zero is the first ``entry`` record, the
event the first ``event`` record on or after it, follow-up ends with the last observation
period, and times are rounded up to a grid of ``interval_days`` and cut at ``max_days``, so no
single event time leaves a site. The covariates come from the GLM's analysis table
(:mod:`flows.analyses.glm_table`) through a right-hand-side formula such as
``age + gender + celecoxib``; with ``groups`` the cohort is limited to their members and the
formula may also use ``group`` (a category whose reference is the first name in sorted order).
Each site returns, per grid point, the events, the sum of x over them and the risk-set sums
S0, S1, S2 (:mod:`fedflow.core.cox`); their sums give the pooled Breslow partial likelihood.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from formulaic import Formula, model_matrix
from pydantic import Field, model_validator

from fedflow.core import Analysis, InvalidRequest, OutputKind, Params, TableColumns, cox
from flows.analyses.glm_round import _check_node
from flows.analyses.glm_table import GENDERS, AnalysisTable, Variable, derive
from flows.analyses.km import KaplanMeier, KaplanMeierParams, gridded_persons

__all__ = ["MAX_GRID_POINTS", "CoxRound", "CoxRoundParams", "cohort", "covariates", "design"]

MAX_GRID_POINTS = 2000
"""The largest time grid (``max_days / interval_days + 1`` points) a round may ask for."""
GROUP = "group"


class CoxRoundParams(Params):
    """The cohort and its time grid, the covariates, and this round's coefficients."""

    formula: str = Field(min_length=1, max_length=2000)
    """The covariates, formulaic syntax without an outcome: ``age + gender + group``."""
    entry: Variable
    event: Variable
    groups: dict[str, Variable] | None = Field(default=None, min_length=1, max_length=20)
    interval_days: int = Field(default=365, ge=1, le=36500)
    max_days: int = Field(default=3650, ge=1, le=73000)
    data: AnalysisTable = Field(default_factory=AnalysisTable)
    columns: list[str] = Field(default_factory=list, max_length=50)
    """The design's columns, as :func:`design` names them; set by the fitting flow."""
    beta: list[float] | None = None
    """The coefficients of this round, in ``columns`` order; None means all zero."""
    center: list[float] | None = None
    """What every site subtracts from the covariates; None means zero."""

    @model_validator(mode="after")
    def _checked(self) -> CoxRoundParams:
        if self.max_days < self.interval_days:
            raise ValueError("max_days is shorter than one interval")
        if math.ceil(self.max_days / self.interval_days) + 1 > MAX_GRID_POINTS:
            raise ValueError(f"the time grid has more than {MAX_GRID_POINTS} points")
        if GROUP in self.data.variables:
            raise ValueError(f"variable {GROUP!r} is reserved for the cohort's groups")
        if "~" in self.formula.strip().removeprefix("~"):
            raise ValueError("a Cox formula names only covariates: no outcome before '~'")
        _check_covariates(self.formula, set(self.kinds()))
        for name in ("beta", "center"):
            values = getattr(self, name)
            if values is not None:
                if len(values) != len(self.columns):
                    raise ValueError(f"{name} must have one value per design column")
                if not all(math.isfinite(v) for v in values):
                    raise ValueError(f"{name} must be finite")
        return self

    def kinds(self) -> dict[str, str]:
        """Every column the formula may use and its kind."""
        extra = {GROUP: "category"} if self.groups else {}
        return {**self.data.kinds(), **extra}

    def levels(self, column: str) -> list[str]:
        """The levels of a category column, in the order that makes the first the reference."""
        return sorted(self.groups or {}) if column == GROUP else sorted(GENDERS.values())


def cohort(params: CoxRoundParams) -> KaplanMeierParams:
    """The Kaplan-Meier cohort and grid of the model (everyone with an entry when no groups)."""
    return KaplanMeierParams(
        entry=params.entry,
        event=params.event,
        groups=params.groups or {"cohort": params.entry},
        interval_days=params.interval_days,
        max_days=params.max_days,
    )


def covariates(params: CoxRoundParams) -> set[str]:
    """The columns the formula reads."""
    return set(Formula(_rhs(params.formula)).required_variables)


def design(params: CoxRoundParams, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The design's column names and matrix (formulaic, the intercept dropped: Cox has none)."""
    matrix = model_matrix(_rhs(params.formula), frame, na_action="raise")
    names = [str(c) for c in matrix.columns]
    if "Intercept" not in names:
        raise InvalidRequest("a Cox formula must not remove the intercept (it is dropped anyway)")
    keep = [i for i, name in enumerate(names) if name != "Intercept"]
    if not keep:
        raise InvalidRequest("a Cox formula needs at least one covariate")
    return [names[i] for i in keep], np.asarray(matrix, dtype=np.float64)[:, keep]


def design_columns(params: CoxRoundParams) -> list[str]:
    """The design's column names, found on a small synthetic table of the right kinds."""
    kinds = params.kinds()
    used = sorted(covariates(params))
    size = max([3, *(len(params.levels(c)) + 1 for c in used if kinds[c] == "category")])
    frame = pd.DataFrame(
        {
            name: pd.Categorical(
                [params.levels(name)[i % len(params.levels(name))] for i in range(size)],
                categories=params.levels(name),
            )
            if kinds[name] == "category"
            else np.arange(1.0, size + 1)
            for name in used
        }
    )
    return design(params, frame)[0]


class CoxRound(Analysis[CoxRoundParams]):
    """Breslow risk-set sums of a Cox model per grid point at given coefficients."""

    name = "cox_round"
    version = "1.0"
    output = OutputKind.COX
    params_model = CoxRoundParams
    iterated = frozenset({"beta", "center"})
    """The coefficients, and the centre the flow sets once after round 1 (the same at every
    site): a fit's later rounds run as steps at each site (:mod:`executors.fits`)."""

    def tables(self, params: CoxRoundParams) -> TableColumns:
        declared = {t: list(c) for t, c in KaplanMeier().tables(cohort(params)).items()}
        for table, columns in params.data.tables(covariates(params) - {GROUP}).items():
            declared[table] = [*declared.get(table, []), *columns]
        return {table: list(dict.fromkeys(columns)) for table, columns in declared.items()}

    def local(self, tables: Mapping[str, pa.Table], params: CoxRoundParams) -> pa.Table:
        grid = cohort(params)
        grid_points = math.ceil(grid.max_days / grid.interval_days) + 1
        used = covariates(params)
        persons = gridded_persons(tables, grid).to_pandas()
        values = derive(tables, params.data, (used - {GROUP}) | {"person_id"})
        frame = persons.merge(values, on="person_id", how="inner")
        if GROUP in used:
            frame[GROUP] = pd.Categorical(frame[GROUP], categories=params.levels(GROUP))
        frame = frame.dropna(subset=sorted(used))
        p = len(params.columns)
        if frame.empty:
            x = np.zeros((0, p))
        else:
            names, x = design(params, frame)
            if names != params.columns:
                raise InvalidRequest("the design at this site does not have the expected columns")
        if not np.all(np.isfinite(x)):
            raise InvalidRequest("the design has non-finite values")
        zeros = np.zeros(p)
        return cox.from_arrays(
            params.columns,
            grid_points=grid_points,
            interval=frame["interval"].to_numpy(np.int64),
            event=frame["event"].to_numpy(bool),
            x=x,
            center=zeros if params.center is None else np.asarray(params.center),
            beta=zeros if params.beta is None else np.asarray(params.beta),
        )

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return cox.merge(partials)

    def finalize(self, partial: pa.Table, params: CoxRoundParams) -> pa.Table:
        return partial


def _rhs(formula: str) -> str:
    return formula.strip().removeprefix("~").strip()


def _check_covariates(formula: str, columns: set[str]) -> None:
    """Allow only columns, numbers, arithmetic and the GLM's functions (no stateful ones)."""
    try:
        parsed = Formula(_rhs(formula))
    except Exception:  # formulaic raises several types for bad syntax
        raise ValueError("the formula cannot be parsed") from None
    for term in parsed:
        for factor in term.factors:
            try:
                tree = ast.parse(str(factor.expr), mode="eval")
            except SyntaxError:
                raise ValueError("the formula has a term that is not an expression") from None
            for node in ast.walk(tree):
                _check_node(node, columns)
