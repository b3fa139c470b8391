"""Magnitude table: the sum of a quantity per age band x gender, with persons and margins.

For example the total days' supply of a drug in each age band and gender::

    params = {"domain": "drug", "concept_ids": [1127433], "column": "days_supply"}

Each person of the cohort (anyone with an event of the concept set in the domain table)
contributes the sum of ``column`` over their qualifying events, in the cell of their age
band at index (first qualifying event, as in :mod:`flows.analyses.cohort`) and gender. Events
whose value is missing do not contribute. The site keeps each cell's largest contributions
for its airlock's dominance rules (:mod:`governance.airlock.magnitude`); they never leave it.
With ``clamp`` each person's contribution to a cell is limited to ``[lower, upper]`` first
(what a site applying differential privacy to sums requires, see ``docs/privacy.md``).
The contributing persons form a cohort (:class:`~fedflow.core.CountsCohort`), so the site's
differencing defence compares them with the cohorts it released before.

Run it on the Eunomia data::

    python -m flows.analyses.magnitude_table
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from fedflow.core import Analysis, CountsCohort, OutputKind, Params, TableColumns, magnitude
from flows.analyses.characterization import GENDERS
from flows.analyses.cohort import DOMAINS, concept_set

__all__ = ["MagnitudeTable", "MagnitudeTableParams"]

_IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"


class MagnitudeTableParams(Params):
    """Which quantity to add up over which events, and the width of the age bands."""

    domain: Literal["drug", "measurement", "observation", "procedure"]
    concept_ids: list[int] = Field(min_length=1, max_length=5000)
    include_descendants: bool = False
    column: str = Field(pattern=_IDENTIFIER)
    age_band_width: int = Field(default=10, ge=1, le=50)
    clamp: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _quantity(self) -> MagnitudeTableParams:
        if self.column.endswith(("_id", "_date", "_datetime")):
            raise ValueError(f"column {self.column!r} is not a quantity")
        if self.clamp is not None and not self.clamp[0] <= self.clamp[1]:
            raise ValueError("clamp's lower bound is above its upper bound")
        return self


class MagnitudeTable(Analysis[MagnitudeTableParams], CountsCohort):
    """Persons and the sum of a quantity by age band at index x gender (with all margins)."""

    name = "magnitude_table"
    version = "1.0"
    output = OutputKind.MAGNITUDE
    params_model = MagnitudeTableParams

    def tables(self, params: MagnitudeTableParams) -> TableColumns:
        table, concept, when = DOMAINS[params.domain]
        declared: dict[str, list[str]] = {
            "person": ["person_id", "gender_concept_id", "year_of_birth"],
            table: ["person_id", concept, when, params.column],
        }
        if params.include_descendants:
            declared["concept_ancestor"] = ["ancestor_concept_id", "descendant_concept_id"]
        return declared

    def local(self, tables: Mapping[str, pa.Table], params: MagnitudeTableParams) -> pa.Table:
        return self.local_members(tables, params)[0]

    def local_members(
        self, tables: Mapping[str, pa.Table], params: MagnitudeTableParams
    ) -> tuple[pa.Table, pa.Array]:
        """The partial and the ids of the contributing persons (for the differencing defence)."""
        units = self.units(tables, params).to_arrow()
        partial = magnitude.cube(units, ["age_band", "gender"], "value")
        return partial, pc.cast(units["person_id"], pa.int64()).combine_chunks()

    @staticmethod
    def units(tables: Mapping[str, pa.Table], params: MagnitudeTableParams) -> pl.DataFrame:
        """One row per contributing person: person_id, age_band, gender, value (contribution)."""
        table, concept, when = DOMAINS[params.domain]
        concepts = concept_set(tables, params.concept_ids, params.include_descendants)
        events = pl.from_arrow(tables[table])
        person = pl.from_arrow(tables["person"])
        assert isinstance(events, pl.DataFrame) and isinstance(person, pl.DataFrame)
        events = events.filter(pl.col(concept).is_in(concepts.implode()))
        per_person = events.group_by("person_id").agg(
            pl.col(when).min().alias("index_date"),
            pl.col(params.column).cast(pl.Float64).sum().alias("value"),
            pl.col(params.column).is_not_null().any().alias("measured"),
        )
        if params.clamp is not None:
            per_person = per_person.with_columns(pl.col("value").clip(*params.clamp))
        width = params.age_band_width
        age = pl.col("index_date").dt.year() - pl.col("year_of_birth")
        lower = (age // width) * width
        return (
            per_person.filter(pl.col("measured"))
            .join(person, on="person_id")
            .select(
                "person_id",
                pl.format("{}-{}", lower, lower + width - 1).alias("age_band"),
                pl.col("gender_concept_id")
                .replace_strict(GENDERS, default="other", return_dtype=pl.String)
                .alias("gender"),
                "value",
            )
        )

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return magnitude.merge(partials)

    def finalize(self, partial: pa.Table, params: MagnitudeTableParams) -> pa.Table:
        """The released table with each cell's mean per person; age bands in order, margins last."""
        df = pl.from_arrow(magnitude.public(partial))
        assert isinstance(df, pl.DataFrame)
        lower = (
            pl.when(pl.col("age_band") == magnitude.MARGIN)
            .then(None)
            .otherwise(pl.col("age_band").str.split("-").list.first().cast(pl.Int64))
        )
        mean = pl.when(pl.col("persons") > 0).then(pl.col("sum") / pl.col("persons"))
        ordered = df.with_columns(mean.alias("mean")).sort(
            [lower, pl.col("gender") == magnitude.MARGIN, "gender"], nulls_last=True
        )
        return ordered.to_arrow()


if __name__ == "__main__":  # pragma: no cover - a runnable example
    from flows.demo import eunomia_tables
    from governance.airlock import check_magnitude

    analysis = MagnitudeTable()
    example = analysis.parse_params(
        {"domain": "drug", "concept_ids": [1127433], "column": "days_supply"}
    )
    data = eunomia_tables()
    partial = analysis.local({n: data[n] for n in analysis.tables(example)}, example)
    verdict = check_magnitude(partial, threshold=10)
    print(verdict.outcome.value, *verdict.reasons, sep="\n  ")
    assert verdict.table is not None
    print(analysis.finalize(verdict.table, example).to_pandas().to_string(index=False))
