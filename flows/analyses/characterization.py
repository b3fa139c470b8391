"""Characterization: a cohort's persons counted by age band and gender, with margins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl
import pyarrow as pa
from pydantic import Field

from fedflow.core import OutputKind, frequency
from flows.analyses.cohort import CohortAnalysis, CohortParams

__all__ = ["Characterization", "CharacterizationParams"]

GENDERS = {8507: "male", 8532: "female"}


class CharacterizationParams(CohortParams):
    """A cohort and the width of its age bands (years)."""

    age_band_width: int = Field(default=10, ge=1, le=50)


class Characterization(CohortAnalysis):
    """Persons of a cohort by age band at index x gender (with all margins)."""

    name = "characterization"
    version = "1.0"
    output = OutputKind.FREQUENCY
    params_model = CharacterizationParams

    def local(self, tables: Mapping[str, pa.Table], params: CharacterizationParams) -> pa.Table:
        width = params.age_band_width
        lower = (pl.col("age") // width) * width
        cohort = self.cohort(tables, params).select(
            pl.format("{}-{}", lower, lower + width - 1).alias("age_band"),
            pl.col("gender_concept_id")
            .replace_strict(GENDERS, default="other", return_dtype=pl.String)
            .alias("gender"),
        )
        return frequency.cube(cohort.to_arrow(), dims=["age_band", "gender"])

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return frequency.merge(partials)

    def finalize(self, partial: pa.Table, params: CharacterizationParams) -> pa.Table:
        # Order age bands by their lower bound, margins ("*") last.
        df = pl.from_arrow(partial)
        assert isinstance(df, pl.DataFrame)
        lower = (
            pl.when(pl.col("age_band") == frequency.MARGIN)
            .then(None)
            .otherwise(pl.col("age_band").str.split("-").list.first().cast(pl.Int64))
        )
        ordered = df.sort([lower, pl.col("gender") == frequency.MARGIN, "gender"], nulls_last=True)
        return ordered.to_arrow()
