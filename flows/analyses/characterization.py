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
    """A cohort, the width of its age bands (years), and the age from which all are one band.

    With ``top_age`` (e.g. 90, as HIPAA Safe Harbor asks), every age from ``top_age`` up is
    counted in one band ``"90+"``, and the band below it ends at ``top_age - 1``.
    """

    age_band_width: int = Field(default=10, ge=1, le=50)
    top_age: int | None = Field(default=None, ge=1, le=150)


class Characterization(CohortAnalysis):
    """Persons of a cohort by age band at index x gender (with all margins)."""

    name = "characterization"
    version = "1.0"
    output = OutputKind.FREQUENCY
    params_model = CharacterizationParams

    def local(self, tables: Mapping[str, pa.Table], params: CharacterizationParams) -> pa.Table:
        width, top = params.age_band_width, params.top_age
        lower = (pl.col("age") // width) * width
        upper = lower + width - 1 if top is None else pl.min_horizontal(lower + width, top) - 1
        band = pl.format("{}-{}", lower, upper)
        if top is not None:
            band = pl.when(pl.col("age") >= top).then(pl.lit(f"{top}+")).otherwise(band)
        cohort = self.cohort(tables, params).select(
            band.alias("age_band"),
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
            .otherwise(
                pl.col("age_band").str.split("-").list.first().str.strip_suffix("+").cast(pl.Int64)
            )
        )
        ordered = df.sort([lower, pl.col("gender") == frequency.MARGIN, "gender"], nulls_last=True)
        return ordered.to_arrow()
