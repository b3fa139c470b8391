"""Allele frequencies per variant, per site and federated, optionally by population label.

The partial holds counts only, so the federated frequency is exactly the pooled one: per
variant (``chrom:pos:ref:alt``, the same key at every site) and population, the *allele count*
(copies of the alternate allele over called genotypes), the *allele number* (2 x called
genotypes: calls are taken as diploid) and the *carriers* (persons with at least one copy).
Missing calls add nothing. ``population`` is ``all`` without ``by_population``; with it,
each label of ``genotype_sample.population`` (``unlabelled`` for none) and ``*``, the margin
over them (a margin with no labelled cells below it would tell the airlock it must be zero,
so a plain total is not written as a margin).

It is a frequency table (``variant``, ``population``, ``statistic`` -> ``count``), so the
site's airlock suppresses every count between 1 and its threshold - 1 and protects the
population margin; an allele frequency with a suppressed count is withheld. Select variants
with the Beacon v2 coordinates of :mod:`flows.analyses.variants` (a range, or one allele), or
leave ``referenceName`` out for every variant of the store. Run it::

    python -m flows.analyses.allele_frequency
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from fedflow.core import Analysis, OutputKind, Params, TableColumns, frequency
from flows.analyses.variants import VARIANT_COLUMNS, VariantQuery, matching_variants, variant_key

__all__ = ["AlleleFrequency", "AlleleFrequencyParams"]

STATISTICS = ("allele_count", "allele_number", "carriers")
UNLABELLED = "unlabelled"
EVERYBODY = "all"


class AlleleFrequencyParams(Params):
    """Which variants (all, a range or one allele) and whether to split by population."""

    referenceName: str | None = Field(default=None, min_length=1, max_length=64)
    start: int = Field(default=0, ge=0)
    end: int | None = Field(default=None, ge=1)
    referenceBases: str | None = None
    alternateBases: str | None = None
    by_population: bool = False

    @model_validator(mode="after")
    def _query(self) -> AlleleFrequencyParams:
        self.query()  # validates the coordinates when a chromosome is named
        return self

    def query(self) -> VariantQuery | None:
        if self.referenceName is None:
            return None
        fields = self.model_dump(exclude={"by_population"})
        if fields["end"] is None and fields["alternateBases"] is None:
            fields["end"] = 2**62  # the whole chromosome from ``start``
        return VariantQuery.model_validate(fields)


class AlleleFrequency(Analysis[AlleleFrequencyParams]):
    """Allele count, allele number, carriers and allele frequency per variant (and population)."""

    name = "allele_frequency"
    version = "1.0"
    output = OutputKind.FREQUENCY
    params_model = AlleleFrequencyParams

    def tables(self, params: AlleleFrequencyParams) -> TableColumns:
        tables: dict[str, list[str]] = {
            "variant": VARIANT_COLUMNS,
            "genotype": ["person_id", "variant_id", "dosage"],
        }
        if params.by_population:
            tables["genotype_sample"] = ["person_id", "population"]
        return tables

    def local(self, tables: Mapping[str, pa.Table], params: AlleleFrequencyParams) -> pa.Table:
        variants = tables["variant"]
        query = params.query()
        if query is not None:
            variants = matching_variants(variants, query)
        keys = pa.table({"variant_id": variants["variant_id"], "variant": variant_key(variants)})
        calls = tables["genotype"].filter(
            pc.is_in(tables["genotype"]["variant_id"], keys["variant_id"])
        )
        calls = calls.filter(pc.is_valid(calls["dosage"]))  # missing calls count nowhere
        calls = calls.join(keys, "variant_id")
        if params.by_population:
            labels = tables["genotype_sample"].select(["person_id", "population"])
            calls = calls.join(labels, "person_id", join_type="left outer")
            population = pc.fill_null(calls["population"], UNLABELLED)
        else:
            population = pa.nulls(calls.num_rows, pa.string())
        dosage = pc.cast(calls["dosage"], pa.int64())
        units = pa.table(
            {
                "variant": calls["variant"],
                "population": population,
                "allele_count": dosage,
                "allele_number": pa.array(np.full(calls.num_rows, 2, np.int64)),
                "carriers": pc.cast(pc.greater(dosage, 0), pa.int64()),
            }
        )
        if params.by_population:
            pieces = [
                self._counts(units, ["variant", "population"], ""),
                self._counts(units, ["variant"], frequency.MARGIN),
            ]
        else:
            pieces = [self._counts(units, ["variant"], EVERYBODY)]
        return frequency.merge(pieces)

    @staticmethod
    def _counts(units: pa.Table, by: list[str], everybody: str) -> pa.Table:
        grouped = units.group_by(by).aggregate([(s, "sum") for s in STATISTICS])
        n = grouped.num_rows
        population = grouped["population"] if "population" in by else pa.array([everybody] * n)
        return pa.concat_tables(
            pa.table(
                {
                    "variant": grouped["variant"],
                    "population": population,
                    "statistic": pa.array([s] * n, pa.string()),
                    frequency.COUNT: pc.cast(grouped[f"{s}_sum"], pa.int64()),
                }
            )
            for s in STATISTICS
        )

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return frequency.merge(partials)

    def finalize(self, partial: pa.Table, params: AlleleFrequencyParams) -> pa.Table:
        wide = None
        for s in STATISTICS:
            one = partial.filter(pc.equal(partial["statistic"], s))
            one = one.select(["variant", "population", frequency.COUNT]).rename_columns(
                ["variant", "population", s]
            )
            wide = (
                one
                if wide is None
                else wide.join(one, ["variant", "population"], join_type="full outer")
            )
        assert wide is not None
        parts = pc.split_pattern(wide["variant"], ":", reverse=True, max_splits=3)
        pieces = parts.to_pylist()
        ac, an = wide["allele_count"], wide["allele_number"]
        af = pc.if_else(pc.greater(an, 0), pc.divide(pc.cast(ac, pa.float64()), an), None)
        result = pa.table(
            {
                "chrom": [p[0] for p in pieces],
                "pos": pa.array([int(p[1]) for p in pieces], pa.int64()),
                "ref": [p[2] for p in pieces],
                "alt": [p[3] for p in pieces],
                "population": wide["population"],
                "allele_count": ac,
                "allele_number": an,
                "carriers": wide["carriers"],
                "allele_frequency": af,
            }
        )
        return result.sort_by(
            [
                ("chrom", "ascending"),
                ("pos", "ascending"),
                ("ref", "ascending"),
                ("alt", "ascending"),
                ("population", "ascending"),
            ]
        )


if __name__ == "__main__":  # pragma: no cover - the runnable example
    from flows.beacon import run_genotype_example

    region = {"referenceName": "20", "start": 10019092, "end": 10100000}
    run_genotype_example("allele_frequency", [region, {**region, "by_population": True}])
