"""Numeric summary of one column: n, persons, mean, sd, min/max and quantiles from a sketch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from fedflow.core import Analysis, OutputKind, Params, TableColumns, summary
from flows.analyses.cohort import DOMAINS

__all__ = ["NumericSummary", "NumericSummaryParams"]

_IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"
_CONCEPT_COLUMN = {table: concept for table, concept, _ in DOMAINS.values()}


class NumericSummaryParams(Params):
    """Which column to summarise, optionally only rows of some concepts."""

    table: str = Field(pattern=_IDENTIFIER)
    column: str = Field(pattern=_IDENTIFIER)
    concept_ids: list[int] | None = Field(default=None, min_length=1, max_length=5000)
    relative_accuracy: float = Field(default=0.01, ge=0.001, le=0.2)
    quantiles: list[float] = Field(default=[0.05, 0.25, 0.5, 0.75, 0.95], max_length=99)

    @model_validator(mode="after")
    def _filterable(self) -> NumericSummaryParams:
        if self.column.endswith("_id"):
            # Identifiers are not quantities, and their extremes would be row-level values.
            raise ValueError(f"column {self.column!r} is an identifier, not a quantity")
        if self.concept_ids is not None and self.table not in _CONCEPT_COLUMN:
            raise ValueError(f"concept_ids given but table {self.table!r} has no concept column")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise ValueError("quantiles must lie in [0, 1]")
        return self


class NumericSummary(Analysis[NumericSummaryParams]):
    """Count, mean, standard deviation, extremes and sketched quantiles of a numeric column."""

    name = "numeric_summary"
    version = "1.0"
    output = OutputKind.SUMMARY
    params_model = NumericSummaryParams

    def tables(self, params: NumericSummaryParams) -> TableColumns:
        columns = ["person_id", params.column]
        if params.concept_ids is not None:
            columns.append(_CONCEPT_COLUMN[params.table])
        return {params.table: columns}

    def local(self, tables: Mapping[str, pa.Table], params: NumericSummaryParams) -> pa.Table:
        rows = pl.from_arrow(tables[params.table])
        assert isinstance(rows, pl.DataFrame)
        if params.concept_ids is not None:
            rows = rows.filter(pl.col(_CONCEPT_COLUMN[params.table]).is_in(params.concept_ids))
        rows = rows.select("person_id", pl.col(params.column).cast(pl.Float64).alias("x"))
        rows = rows.filter(pl.col("x").is_not_null() & pl.col("x").is_not_nan())
        values = rows["x"].to_numpy()
        persons = rows["person_id"].n_unique()
        return summary.from_values(np.asarray(values), params.relative_accuracy, persons=persons)

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return summary.merge(partials)

    def finalize(self, partial: pa.Table, params: NumericSummaryParams) -> pa.Table:
        row = partial.to_pylist()[0]
        n = row["n"]
        sd = (row["m2"] / (n - 1)) ** 0.5 if n > 1 else None
        result: dict[str, list[object]] = {
            "n": [n],
            "persons": [row["persons"]],
            "mean": [row["mean"] if n else None],
            "sd": [sd],
            "min": [row["min"]],
            "max": [row["max"]],
        }
        for q, value in zip(
            params.quantiles, summary.quantiles(partial, params.quantiles), strict=True
        ):
            result[f"p{q * 100:g}"] = [value]
        return pa.table(result)
