"""Cohorts on OMOP CDM: persons with any concept of a concept set in one domain table.

:class:`CohortAnalysis` is the base of analyses that first build a cohort and then count it.
The index date of a person is their first qualifying event; age is the age at index in whole
years (year of index minus year of birth, as the OMOP ``person`` table records only the year
reliably).

Every cohort analysis is also a :class:`~fedflow.core.CountsCohort`: when the site asks
(its differencing defence is on), ``local_members`` returns the partial together with the
person ids of the partition's cohort, which the site keeps and never releases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Literal

import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from fedflow.core import Analysis, CountsCohort, Params, TableColumns

__all__ = ["DOMAINS", "CohortAnalysis", "CohortParams", "Domain", "concept_set"]

Domain = Literal["condition", "drug", "procedure", "measurement", "observation", "visit"]

DOMAINS: dict[str, tuple[str, str, str]] = {
    "condition": ("condition_occurrence", "condition_concept_id", "condition_start_date"),
    "drug": ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
    "procedure": ("procedure_occurrence", "procedure_concept_id", "procedure_date"),
    "measurement": ("measurement", "measurement_concept_id", "measurement_date"),
    "observation": ("observation", "observation_concept_id", "observation_date"),
    "visit": ("visit_occurrence", "visit_concept_id", "visit_start_date"),
}
"""Domain name to (table, concept column, event date column)."""


def concept_set(
    tables: Mapping[str, pa.Table], concept_ids: Sequence[int], include_descendants: bool
) -> pl.Series:
    """The concept ids, with their descendants through ``concept_ancestor`` when asked."""
    concepts = pl.Series(concept_ids, dtype=pl.Int64)
    if include_descendants:
        ancestry = pl.from_arrow(tables["concept_ancestor"])
        assert isinstance(ancestry, pl.DataFrame)
        below = ancestry.filter(pl.col("ancestor_concept_id").is_in(concepts.implode()))
        concepts = pl.concat([concepts, below["descendant_concept_id"].cast(pl.Int64)]).unique()
    return concepts


class CohortParams(Params):
    """Who is in the cohort."""

    domain: Domain
    concept_ids: list[int] = Field(min_length=1, max_length=5000)
    include_descendants: bool = False
    gender_concept_ids: list[int] | None = Field(default=None, min_length=1)
    min_age: int | None = Field(default=None, ge=0, le=130)
    max_age: int | None = Field(default=None, ge=0, le=130)
    start_date: date | None = None
    end_date: date | None = None

    @model_validator(mode="after")
    def _ranges(self) -> CohortParams:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age is greater than max_age")
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError("start_date is after end_date")
        return self


class CohortAnalysis(Analysis[Any], CountsCohort):
    """Base of analyses over a cohort: declares the cohort's tables and builds it in ``local``."""

    def tables(self, params: Any) -> TableColumns:
        table, concept, when = DOMAINS[params.domain]
        declared: dict[str, list[str]] = {
            "person": ["person_id", "gender_concept_id", "year_of_birth"],
            table: ["person_id", concept, when],
        }
        if params.include_descendants:
            declared["concept_ancestor"] = ["ancestor_concept_id", "descendant_concept_id"]
        return declared

    def local_members(
        self, tables: Mapping[str, pa.Table], params: Any
    ) -> tuple[pa.Table, pa.Array]:
        """``local``'s partial and the ids of the persons in this partition's cohort.

        The cohort is built again next to ``local`` (a filter and a join over the partition,
        cheap next to reading it), so a subclass's ``local`` stays the one that runs.
        """
        members = self.cohort(tables, params)["person_id"].cast(pl.Int64).to_arrow()
        return self.local(tables, params), members

    @staticmethod
    def cohort(tables: Mapping[str, pa.Table], params: CohortParams) -> pl.DataFrame:
        """One row per person in the cohort: person_id, index_date, age, gender_concept_id."""
        table, concept, when = DOMAINS[params.domain]
        concepts = concept_set(tables, params.concept_ids, params.include_descendants)
        events = pl.from_arrow(tables[table])
        assert isinstance(events, pl.DataFrame)
        events = events.filter(pl.col(concept).is_in(concepts.implode()))
        if params.start_date is not None:
            events = events.filter(pl.col(when) >= params.start_date)
        if params.end_date is not None:
            events = events.filter(pl.col(when) <= params.end_date)
        index = events.group_by("person_id").agg(pl.col(when).min().alias("index_date"))
        person = pl.from_arrow(tables["person"])
        assert isinstance(person, pl.DataFrame)
        cohort = index.join(person, on="person_id", how="inner").with_columns(
            (pl.col("index_date").dt.year() - pl.col("year_of_birth")).alias("age")
        )
        if params.gender_concept_ids is not None:
            cohort = cohort.filter(pl.col("gender_concept_id").is_in(params.gender_concept_ids))
        if params.min_age is not None:
            cohort = cohort.filter(pl.col("age") >= params.min_age)
        if params.max_age is not None:
            cohort = cohort.filter(pl.col("age") <= params.max_age)
        return cohort.select("person_id", "index_date", "age", "gender_concept_id")
