"""Beacon v2 variant discovery: does anyone here carry this allele, and how many persons?

Each site answers from its genotype store (:mod:`harmonize.vcf`): the persons carrying at
least one copy of an alternate allele the query names (:mod:`flows.analyses.variants`). The
partial is a frequency table (the number of carriers is a person count), so the site's
airlock treats it as any count: a count between 1 and the site's ``min_cell_count - 1``
leaves the site suppressed, which still says that carriers exist. A
``requestedGranularity`` of ``boolean`` makes the site compute only whether a carrier exists
(0 or 1 in a one-cell table marked ``boolean``, merged as a logical OR inside the site), so no
count leaves it at all. A site whose policy's ``beacon.granularity`` is ``boolean`` runs a
count query that way too (:mod:`governance.resolution`); merged with other sites' counts,
the federated answer is then boolean (``returnedGranularity`` ≤ ``requestedGranularity``,
as Beacon v2 allows). A count is a single cell without dimension, the cohort's total, so
the differencing ledger records it.

The finalized result is one row in Beacon v2 terms (``exists``, ``numTotalResults``,
``requestedGranularity``, ``returnedGranularity``); :func:`flows.beacon.beacon_response`
wraps it in a Beacon v2 response document. Carriers are also the cohort this analysis counts
(:class:`~fedflow.core.CountsCohort`), so the site's differencing defence sees them. Run it::

    python -m flows.analyses.beacon
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from fedflow.core import Analysis, CountsCohort, OutputKind, TableColumns, frequency
from flows.analyses.variants import VARIANT_COLUMNS, VariantQuery, matching_variants

__all__ = ["BeaconParams", "BeaconVariant"]

BOOLEAN = "boolean"


class BeaconParams(VariantQuery):
    """A Beacon v2 variant query and the granularity asked for."""

    requestedGranularity: Literal["boolean", "count"] = "count"


class BeaconVariant(Analysis[BeaconParams], CountsCohort):
    """Persons carrying an allele (or any allele in a range), Beacon v2 style."""

    name = "beacon_variant"
    version = "1.0"
    output = OutputKind.FREQUENCY
    params_model = BeaconParams

    def tables(self, params: BeaconParams) -> TableColumns:
        return {"variant": VARIANT_COLUMNS, "genotype": ["person_id", "variant_id", "dosage"]}

    def local(self, tables: Mapping[str, pa.Table], params: BeaconParams) -> pa.Table:
        return self.local_members(tables, params)[0]

    def local_members(
        self, tables: Mapping[str, pa.Table], params: BeaconParams
    ) -> tuple[pa.Table, pa.Array]:
        wanted = matching_variants(tables["variant"], params)["variant_id"]
        calls = tables["genotype"]
        carrying = pc.and_(
            pc.is_in(calls["variant_id"], wanted), pc.greater(calls["dosage"], 0)
        )  # a missing call (null dosage) carries nothing known
        carriers = pc.unique(calls.filter(pc.fill_null(carrying, False))["person_id"])
        count = len(carriers)
        if params.requestedGranularity == "count":
            # One count, no dimension: the cohort's total, which the differencing ledger keeps.
            partial = pa.table({frequency.COUNT: pa.array([count], pa.int64())})
        else:
            # Marked boolean, so merges take the logical OR: no count is ever formed.
            partial = pa.table(
                {
                    BOOLEAN: pa.array([BOOLEAN], pa.string()),
                    frequency.COUNT: pa.array([min(count, 1)], pa.int64()),
                }
            )
        return partial, pa.array(carriers, pa.int64())

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        if not any(BOOLEAN in p.column_names for p in partials):
            return frequency.merge(partials)
        # A site whose policy allows only booleans answered a count query with one: then
        # the whole answer is boolean (a count plus a boolean is no count), every count
        # read as whether carriers exist.
        merged = frequency.merge([_as_boolean(p) for p in partials])
        anyone = pc.min_element_wise(merged[frequency.COUNT], 1, skip_nulls=False)
        return merged.set_column(1, frequency.COUNT, pc.cast(anyone, pa.int64()))

    def finalize(self, partial: pa.Table, params: BeaconParams) -> pa.Table:
        count = partial[frequency.COUNT][0].as_py() if partial.num_rows else 0
        # A null count was suppressed by a site's airlock: 1..threshold-1 carriers there.
        exists = count is None or count > 0
        counted = count is not None and BOOLEAN not in partial.column_names
        returned = "count" if params.requestedGranularity == "count" and counted else "boolean"
        return pa.table(
            {
                "exists": pa.array([exists], pa.bool_()),
                "numTotalResults": pa.array([count if returned == "count" else None], pa.int64()),
                "requestedGranularity": pa.array([params.requestedGranularity], pa.string()),
                "returnedGranularity": pa.array([returned], pa.string()),
            }
        )


def _as_boolean(partial: pa.Table) -> pa.Table:
    """A Beacon partial as a boolean one: 0 or 1, a suppressed count staying unknown."""
    if BOOLEAN in partial.column_names:
        return partial
    anyone = pc.min_element_wise(partial[frequency.COUNT], 1, skip_nulls=False)
    return pa.table(
        {
            BOOLEAN: pa.array([BOOLEAN] * partial.num_rows, pa.string()),
            frequency.COUNT: pc.cast(anyone, pa.int64()),
        }
    )


if __name__ == "__main__":  # pragma: no cover - the runnable example
    from flows.beacon import run_genotype_example

    # rs575534 A>G on chromosome 20 (GRCh37), as a Beacon v2 request: 0-based start.
    allele = {"referenceName": "20", "start": [10019092], "referenceBases": "A"}
    run_genotype_example(
        "beacon_variant",
        [
            {"query": {"requestParameters": {**allele, "alternateBases": "G"}}},
            {
                "query": {
                    "requestParameters": {
                        "referenceName": "20",
                        "start": [10019092],
                        "end": [10030000],
                    },
                    "requestedGranularity": "boolean",
                }
            },
        ],
    )
