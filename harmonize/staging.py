"""The staged form every reader produces and the CDM builder consumes.

A reader (Synthea CSV, FHIR bundles, ...) turns its source into five Arrow tables with the
schemas below, keyed by the source's own identifiers (``*_key``). The builder assigns CDM ids,
maps codes, routes events to tables by domain and keeps the accounting, so each reader only
says what its source means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

__all__ = [
    "CARE_SITE_SCHEMA",
    "EVENT_SCHEMA",
    "PERSON_SCHEMA",
    "PROVIDER_SCHEMA",
    "VISIT_SCHEMA",
    "StagedSource",
    "empty",
]

_ADDRESS = [
    ("address_1", pa.string()),
    ("city", pa.string()),
    ("state", pa.string()),
    ("zip", pa.string()),
    ("county", pa.string()),
    ("latitude", pa.float64()),
    ("longitude", pa.float64()),
]

PERSON_SCHEMA = pa.schema(
    [
        ("person_key", pa.string()),
        ("source_row", pa.int64()),
        ("gender", pa.string()),  # M / F / male / female / other
        ("birth_date", pa.date32()),
        ("death_date", pa.date32()),
        ("race", pa.string()),  # source value
        ("race_concept_id", pa.int32()),  # when the reader already knows it (FHIR OMB code)
        ("ethnicity", pa.string()),
        ("ethnicity_concept_id", pa.int32()),
        *_ADDRESS,
    ]
)

VISIT_SCHEMA = pa.schema(
    [
        ("visit_key", pa.string()),
        ("source_row", pa.int64()),
        ("person_key", pa.string()),
        ("start", pa.timestamp("us")),
        ("end", pa.timestamp("us")),
        ("visit_class", pa.string()),  # ambulatory, wellness, inpatient, AMB, EMER, IMP ...
        ("provider_key", pa.string()),
        ("care_site_key", pa.string()),
    ]
)

EVENT_SCHEMA = pa.schema(
    [
        ("source_table", pa.string()),
        ("source_row", pa.int64()),
        ("person_key", pa.string()),
        ("visit_key", pa.string()),
        ("provider_key", pa.string()),
        ("start", pa.timestamp("us")),
        ("end", pa.timestamp("us")),
        ("vocabulary_id", pa.string()),
        ("code", pa.string()),
        ("description", pa.string()),
        ("value_number", pa.float64()),
        ("value_string", pa.string()),
        ("value_vocabulary_id", pa.string()),  # a coded value (FHIR valueCodeableConcept)
        ("value_code", pa.string()),
        ("unit", pa.string()),
        ("quantity", pa.float64()),
        ("identifier", pa.string()),  # device UDI, lot number
        ("default_table", pa.string()),  # where the row goes when its code has no domain
        ("route_by_domain", pa.bool_()),  # False: always default_table (e.g. allergies)
    ]
)

PROVIDER_SCHEMA = pa.schema(
    [
        ("provider_key", pa.string()),
        ("name", pa.string()),
        ("gender", pa.string()),
        ("specialty", pa.string()),
        ("care_site_key", pa.string()),
    ]
)

CARE_SITE_SCHEMA = pa.schema([("care_site_key", pa.string()), ("name", pa.string()), *_ADDRESS])


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()


@dataclass
class StagedSource:
    """What a reader hands the builder, plus the rows it could not stage.

    ``source_rows`` counts the rows read per source table; ``rejected`` counts, per source table
    and reason, the rows the reader itself refused (malformed FHIR resources, tables out of scope).
    ``issues`` lists those problems with ids (never values) for the report. ``names`` gives the
    source table behind persons, visits, providers and care sites (for the accounting).
    ``event_loaders`` load further event parts on demand, one at a time, so that the builder
    holds only one part's source keys in memory.
    """

    persons: pa.Table
    visits: pa.Table
    events: pa.Table
    providers: pa.Table = field(default_factory=lambda: empty(PROVIDER_SCHEMA))
    care_sites: pa.Table = field(default_factory=lambda: empty(CARE_SITE_SCHEMA))
    names: dict[str, str] = field(
        default_factory=lambda: {
            "persons": "patients",
            "visits": "encounters",
            "providers": "providers",
            "care_sites": "organizations",
        }
    )
    source_rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    issues: list[dict[str, str]] = field(default_factory=list)

    event_loaders: list[Callable[[], pa.Table]] = field(default_factory=list)

    def iter_events(self) -> Iterator[pa.Table]:
        """``events``, then each lazily loaded part (a reader may defer big files to here)."""
        yield self.events
        for load in self.event_loaders:
            yield load()

    def reject(self, table: str, reason: str, count: int = 1) -> None:
        """Count ``count`` rows of ``table`` as refused for ``reason``."""
        by_reason = self.rejected.setdefault(table, {})
        by_reason[reason] = by_reason.get(reason, 0) + count
