"""The analysis table of a regression: one row per person, derived from OMOP at the site.

A study declares its variables; the site derives them from its own OMOP tables inside
``local`` and hands the model only the columns the formula names. Every person in the
partition is a row. Built-in columns, read from ``person`` (and ``observation_period``):

| column | meaning |
|---|---|
| ``age`` | ``age_year`` minus the year of birth |
| ``year_of_birth`` | as recorded |
| ``gender`` | ``"female"`` (concept 8532) or ``"male"`` (8507); any other concept is missing |
| ``observation_years`` | total length of the person's observation periods, in years |

Declared variables (``variables``) come from one domain table each::

    {"gi_bleed": {"domain": "condition", "concept_ids": [192671], "include_descendants": true},
     "nsaid":    {"domain": "drug", "concept_ids": [1118084, 1124300], "value": "any"}}

``value: "any"`` is 1 when the person has at least one such record, else 0; ``"count"`` is the
number of records. A person with a missing value in a column the model uses is left out.

A plain analysis table instead (``table``): a person table of the dataset that already holds
one row per person with the model's columns (a study's extract, a simulated table), declared
with their kinds; it is read as it is, with only the columns the model uses::

    {"table": "analysis", "columns": {"y": "float", "x1": "float", "x2": "float"}}

Its columns are numbers (code a category as 0/1 indicator columns): a category's levels would
otherwise depend on which levels each site happens to hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import pandas as pd
import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from fedflow.core import Params
from flows.analyses.cohort import DOMAINS, Domain, concept_set

__all__ = ["BUILTINS", "AnalysisTable", "Variable", "derive"]

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
BUILTINS: dict[str, str] = {
    "age": "float",
    "year_of_birth": "float",
    "gender": "category",
    "observation_years": "float",
}
"""Built-in person-level columns and their kind."""
GENDERS = {8532: "female", 8507: "male"}
_PERSON = ["person_id", "gender_concept_id", "year_of_birth"]
_PERIOD = ["person_id", "observation_period_start_date", "observation_period_end_date"]


class Variable(Params):
    """A person-level variable from one OMOP domain: any record (0/1) or the record count."""

    domain: Domain
    concept_ids: list[int] = Field(min_length=1, max_length=5000)
    include_descendants: bool = False
    value: Literal["any", "count"] = "any"


class AnalysisTable(Params):
    """How the site derives the person-level analysis table from its OMOP tables."""

    variables: dict[str, Variable] = Field(default_factory=dict, max_length=50)
    age_year: int = Field(default=2020, ge=1800, le=2200)
    """Age is this year minus the year of birth."""
    table: str | None = Field(default=None, pattern=_NAME)
    """A plain analysis table (a person table of the dataset) instead of OMOP-derived columns."""
    columns: dict[str, Literal["float"]] = Field(default_factory=dict, max_length=500)
    """The plain table's columns and their kinds (with ``table`` only)."""

    @model_validator(mode="after")
    def _names(self) -> AnalysisTable:
        if self.table is not None:
            if self.variables:
                raise ValueError("a plain analysis table (table) takes no variables")
            if not self.columns:
                raise ValueError("a plain analysis table (table) must declare its columns")
        elif self.columns:
            raise ValueError("columns are declared only for a plain analysis table (table)")
        for name in self.columns:
            if not re.match(_NAME, name) or name == "person_id":
                raise ValueError(f"column name {name!r} is not a lower-case identifier")
        for name in self.variables:
            if not re.match(_NAME, name):
                raise ValueError(f"variable name {name!r} is not a lower-case identifier")
            if name in BUILTINS:
                raise ValueError(f"variable {name!r} shadows a built-in column")
        return self

    def kinds(self) -> dict[str, str]:
        """Every column this table can hold and its kind (``float`` or ``category``)."""
        if self.table is not None:
            return dict(self.columns)
        return {**BUILTINS, **{name: "float" for name in self.variables}}

    def tables(self, used: set[str]) -> dict[str, list[str]]:
        """The OMOP tables and columns needed to derive the columns in ``used``."""
        if self.table is not None:
            return {self.table: ["person_id", *sorted(used)]}
        declared: dict[str, list[str]] = {"person": list(_PERSON)}
        if "observation_years" in used:
            declared["observation_period"] = list(_PERIOD)
        for name in sorted(used & set(self.variables)):
            variable = self.variables[name]
            table, concept, _ = DOMAINS[variable.domain]
            declared.setdefault(table, ["person_id", concept])
            if variable.include_descendants:
                declared["concept_ancestor"] = ["ancestor_concept_id", "descendant_concept_id"]
        return declared


def derive(tables: Mapping[str, pa.Table], spec: AnalysisTable, used: set[str]) -> pd.DataFrame:
    """The analysis table of this partition's persons, with the columns in ``used``."""
    if spec.table is not None:
        plain = tables[spec.table].select(sorted(used))
        return pd.DataFrame(
            {
                name: plain[name].to_numpy(zero_copy_only=False).astype(float)
                for name in plain.column_names
            }
        )
    person = _frame(tables["person"])
    frame = person.select(
        "person_id",
        (pl.lit(spec.age_year) - pl.col("year_of_birth")).cast(pl.Float64).alias("age"),
        pl.col("year_of_birth").cast(pl.Float64),
        pl.col("gender_concept_id")
        .replace_strict(GENDERS, default=None, return_dtype=pl.String)
        .alias("gender"),
    )
    if "observation_years" in used:
        periods = _frame(tables["observation_period"])
        days = (
            pl.col("observation_period_end_date") - pl.col("observation_period_start_date")
        ).dt.total_days() + 1
        years = periods.group_by("person_id").agg((days.sum() / 365.25).alias("observation_years"))
        frame = frame.join(years, on="person_id", how="left")
    for name in sorted(used & set(spec.variables)):
        frame = frame.join(
            _variable(tables, name, spec.variables[name]), on="person_id", how="left"
        )
        frame = frame.with_columns(pl.col(name).fill_null(0).cast(pl.Float64))
    out = frame.select(sorted(used)).to_pandas()
    if "gender" in used:
        out["gender"] = pd.Categorical(out["gender"], categories=sorted(GENDERS.values()))
    return out


def _variable(tables: Mapping[str, pa.Table], name: str, variable: Variable) -> pl.DataFrame:
    table, concept, _ = DOMAINS[variable.domain]
    concepts = concept_set(tables, variable.concept_ids, variable.include_descendants)
    events = _frame(tables[table]).filter(pl.col(concept).is_in(concepts.implode()))
    value = pl.len() if variable.value == "count" else pl.len() > 0
    return events.group_by("person_id").agg(value.cast(pl.Float64).alias(name))


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
