"""Cohort count: how many persons have any concept of a concept set? A worked example.

This file is the literate example of how to write a federated analysis. Run it to see it work
on the demo federation built from the OHDSI Eunomia GiBleed data::

    python -m flows.analyses.cohort_count

An analysis is a *mergeable aggregate* (see ``DESIGN.md``). It answers four questions:

1. **What does it read?** ``tables`` names the tables and columns. The site hands ``local``
   only those, and the site's policy decides whether they may be read at all.
2. **What does one partition contribute?** ``local`` runs at the site, next to the data, over
   one partition of persons, and returns a small Arrow table: the *partial*.
3. **How do partials combine?** ``merge`` must be associative and commutative: the site uses it
   to combine its partitions on its Dask cluster, and the orchestrator to combine sites.
4. **What does the researcher see?** ``finalize`` turns the merged partial into the result.

The output kind, here :attr:`OutputKind.FREQUENCY`, tells each site's airlock which disclosure
rules to apply before the partial leaves the site: a count under the site's threshold is
suppressed there, never here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa

from fedflow.core import OutputKind, frequency
from flows.analyses.cohort import CohortAnalysis, CohortParams

__all__ = ["CohortCount", "CohortCountParams"]


# Parameters are a pydantic model: the site validates them before anything runs, and a bad
# request gets an error naming the field, never echoing data.
class CohortCountParams(CohortParams):
    """Persons with any of ``concept_ids`` in ``domain`` (optionally with descendants)."""


class CohortCount(CohortAnalysis):
    """Number of persons in a cohort."""

    # Name and version identify the analysis in requests, policies and the audit trail; the
    # code digest (computed from this module's source) pins exactly which code a site runs.
    name = "cohort_count"
    version = "1.0"
    output = OutputKind.FREQUENCY
    params_model = CohortCountParams

    # ``tables`` comes from CohortAnalysis: person (id, gender, year of birth), the domain
    # table (id, concept, date) and, with descendants, concept_ancestor.

    def local(self, tables: Mapping[str, pa.Table], params: CohortCountParams) -> pa.Table:
        # Build the cohort from this partition's rows, then count persons. A frequency table
        # with no dimension is a single ``count`` cell. Partitions hold disjoint persons, so
        # counts add up exactly.
        cohort = self.cohort(tables, params)
        return frequency.cube(cohort.to_arrow(), dims=[])

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        # Sums are associative and commutative. A count a site suppressed stays suppressed.
        return frequency.merge(partials)

    def finalize(self, partial: pa.Table, params: CohortCountParams) -> pa.Table:
        return partial

    def cell_levels(self, params: CohortCountParams) -> dict[str, list[str]]:
        # The table's cells, known before any data is read: one count, no dimension. Declaring
        # them lets the orchestrator sum the sites' counts securely (masked, see
        # docs/secure-aggregation.md), so it learns only the total.
        return {}


if __name__ == "__main__":  # pragma: no cover - the runnable example
    from flows.demo import run_example

    run_example(
        "cohort_count",
        {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
    )
