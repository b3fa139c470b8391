"""Map staged clinical events to standard concepts and route them to CDM tables by domain.

Each distinct (vocabulary, code) pair is looked up once in the vocabulary store; a code that
maps to several standard concepts yields one CDM row per concept (as ETL-Synthea's joins do). A
row goes to the table of its standard concept's domain (Condition -> condition_occurrence, Drug
-> drug_exposure, Procedure, Measurement, Observation, Device), or to its source's default table
when the domain has no table or the code is unmapped (concept 0, source value kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harmonize.accounting import SourceAccount, TableCoverage, UnmappedCodeCount
from harmonize.conform import as_date, conform
from harmonize.entities import EHR, Ids
from harmonize.spec import CdmSpec
from harmonize.vocabulary import VocabularyStore

__all__ = ["DOMAIN_TABLE", "EVENT_TABLES", "EventBuild", "build_events"]

DOMAIN_TABLE = {
    "Condition": "condition_occurrence",
    "Drug": "drug_exposure",
    "Procedure": "procedure_occurrence",
    "Measurement": "measurement",
    "Observation": "observation",
    "Device": "device_exposure",
}
EVENT_TABLES = tuple(DOMAIN_TABLE.values())

Col: TypeAlias = pa.Array | pa.ChunkedArray
_Builder = Callable[[dict[str, Col], int], dict[str, Col]]


def _type(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(EHR, pa.int32()), n)


def _text_only(g: dict[str, Col]) -> Col:
    return pc.if_else(
        pc.is_null(g["value_number"]), g["value_string"], pa.scalar(None, pa.string())
    )


_TABLES: dict[str, _Builder] = {
    "condition_occurrence": lambda g, n: {
        "condition_concept_id": g["concept_id"],
        "condition_start_date": as_date(g["start"]),
        "condition_start_datetime": g["start"],
        "condition_end_date": as_date(g["end"]),
        "condition_end_datetime": g["end"],
        "condition_type_concept_id": _type(n),
        "condition_source_value": g["code"],
        "condition_source_concept_id": g["source_concept_id"],
    },
    "drug_exposure": lambda g, n: {
        "drug_concept_id": g["concept_id"],
        "drug_exposure_start_date": as_date(g["start"]),
        "drug_exposure_start_datetime": g["start"],
        "drug_exposure_end_date": as_date(pc.coalesce(g["end"], g["start"])),
        "drug_exposure_end_datetime": pc.coalesce(g["end"], g["start"]),
        "verbatim_end_date": as_date(g["end"]),
        "drug_type_concept_id": _type(n),
        "quantity": g["quantity"],
        "lot_number": g["identifier"],
        "drug_source_value": g["code"],
        "drug_source_concept_id": g["source_concept_id"],
    },
    "procedure_occurrence": lambda g, n: {
        "procedure_concept_id": g["concept_id"],
        "procedure_date": as_date(g["start"]),
        "procedure_datetime": g["start"],
        "procedure_end_date": as_date(g["end"]),
        "procedure_end_datetime": g["end"],
        "procedure_type_concept_id": _type(n),
        "quantity": pc.cast(g["quantity"], pa.int32(), safe=False),
        "procedure_source_value": g["code"],
        "procedure_source_concept_id": g["source_concept_id"],
    },
    "measurement": lambda g, n: {
        "measurement_concept_id": g["concept_id"],
        "measurement_date": as_date(g["start"]),
        "measurement_datetime": g["start"],
        "measurement_type_concept_id": _type(n),
        "value_as_number": g["value_number"],
        "value_as_concept_id": g["value_concept_id"],
        "unit_concept_id": g["unit_concept_id"],
        "measurement_source_value": g["code"],
        "measurement_source_concept_id": g["source_concept_id"],
        "unit_source_value": g["unit"],
        "value_source_value": g["value_string"],
    },
    "observation": lambda g, n: {
        "observation_concept_id": g["concept_id"],
        "observation_date": as_date(g["start"]),
        "observation_datetime": g["start"],
        "observation_type_concept_id": _type(n),
        "value_as_number": g["value_number"],
        "value_as_string": _text_only(g),
        "value_as_concept_id": g["value_concept_id"],
        "unit_concept_id": g["unit_concept_id"],
        "observation_source_value": g["code"],
        "observation_source_concept_id": g["source_concept_id"],
        "unit_source_value": g["unit"],
        "value_source_value": g["value_string"],
    },
    "device_exposure": lambda g, n: {
        "device_concept_id": g["concept_id"],
        "device_exposure_start_date": as_date(g["start"]),
        "device_exposure_start_datetime": g["start"],
        "device_exposure_end_date": as_date(g["end"]),
        "device_exposure_end_datetime": g["end"],
        "device_type_concept_id": _type(n),
        "unique_device_id": g["identifier"],
        "quantity": pc.cast(g["quantity"], pa.int32(), safe=False),
        "device_source_value": g["code"],
        "device_source_concept_id": g["source_concept_id"],
    },
}


@dataclass
class EventBuild:
    """The event tables, the per-source accounting and the per-table coverage."""

    tables: dict[str, pa.Table] = field(default_factory=dict)
    accounts: dict[str, SourceAccount] = field(default_factory=dict)
    coverage: dict[str, TableCoverage] = field(default_factory=dict)


def _counts_by_source(source: Col, mask: Col) -> dict[str, int]:
    picked = pc.filter(source, mask)
    return {d["values"]: d["counts"] for d in pc.value_counts(picked).to_pylist()}


def _value_concepts(vocabularies: Col, codes: Col, vocab: VocabularyStore) -> Col:
    """Standard concepts of coded values (null where the value is not coded, 0 if unmapped)."""
    key = pc.binary_join_element_wise(vocabularies, codes, "\x1f")
    distinct = pc.unique(key).drop_null()
    ids = [vocab.lookup(*k.split("\x1f", 1)).targets[0][0] for k in distinct.to_pylist()]
    return pc.take(pa.array(ids, pa.int32()), pc.index_in(key, value_set=distinct))


def _units(units: Col, vocab: VocabularyStore) -> pa.Array:
    distinct = pc.unique(units).drop_null()
    ids: list[int] = []
    for unit in distinct.to_pylist():
        mapping = vocab.lookup("UCUM", unit)
        if not mapping.mapped:
            mapping = vocab.lookup("Synthea units", unit)
        ids.append(mapping.targets[0][0])
    return pc.take(pa.array(ids, pa.int32()), pc.index_in(units, value_set=distinct))


def _map_part(
    events: pa.Table,
    persons: Ids,
    visits: Ids,
    visit_providers: pa.Array,
    vocab: VocabularyStore,
    out: EventBuild,
) -> tuple[pa.Table, pa.Table]:
    """Map one staged part: compact rows (ids, concepts, target table) and its unmapped rows.

    The source keys (UUID strings) are dropped here, so only compact columns stay in memory.
    """
    source = events["source_table"]
    for name, count in _counts_by_source(source, pc.is_valid(source)).items():
        out.accounts.setdefault(name, SourceAccount(source_table=name)).read += count
    person_id = persons.lookup(events["person_key"])
    unknown = pc.is_null(person_id)
    no_start = pc.and_(pc.invert(unknown), pc.is_null(events["start"]))
    no_code = pc.and_(pc.invert(pc.or_(unknown, no_start)), pc.is_null(events["code"]))
    keep = pc.invert(pc.or_(pc.or_(unknown, no_start), no_code))
    for reason, mask in (
        ("unknown_person", unknown),
        ("missing_start_date", no_start),
        ("missing_code", no_code),
    ):
        for name, count in _counts_by_source(source, mask).items():
            account = out.accounts.setdefault(name, SourceAccount(source_table=name))
            account.rejected[reason] = account.rejected.get(reason, 0) + count
    if pc.all(keep).as_py():
        e = events.append_column("person_id", person_id)  # the usual case: no copy
    else:
        e = events.filter(keep).append_column("person_id", person_id.filter(keep))

    key = pc.binary_join_element_wise(e["vocabulary_id"], e["code"], "\x1f")
    uniq = pc.unique(key)
    key_idx = pc.index_in(key, value_set=uniq).to_numpy(zero_copy_only=False)
    mappings = [vocab.lookup(*k.split("\x1f", 1)) for k in uniq.to_pylist()]
    counts = np.array([len(m.targets) for m in mappings], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    flat_target = np.array([t for m in mappings for t, _ in m.targets], dtype=np.int32)
    flat_domain = pa.array([d for m in mappings for _, d in m.targets], pa.string())
    flat_source = np.repeat(np.array([m.source_concept_id for m in mappings], np.int32), counts)
    mapped = np.array([m.mapped for m in mappings], dtype=bool)[key_idx]
    for name, count in _counts_by_source(e["source_table"], pa.array(~mapped)).items():
        out.accounts.setdefault(name, SourceAccount(source_table=name)).concept_0 += count
    for name, count in _counts_by_source(e["source_table"], pa.array(mapped)).items():
        out.accounts.setdefault(name, SourceAccount(source_table=name)).written += count

    row_counts = counts[key_idx]
    rows = np.repeat(np.arange(len(key_idx)), row_counts)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(row_counts) - row_counts, row_counts)
    flat_idx = offsets[key_idx[rows]] + within
    x = e if len(rows) == e.num_rows else e.take(pa.array(rows))  # 1:n maps to: repeat rows
    domain = pc.take(flat_domain, pa.array(flat_idx))
    # Target table as a small integer (position in EVENT_TABLES): cheap to sort on.
    routed = pc.index_in(domain, pa.array(list(DOMAIN_TABLE)))
    default = pc.index_in(x["default_table"], pa.array(list(EVENT_TABLES)))
    target = pc.if_else(pc.and_(x["route_by_domain"], pc.is_valid(routed)), routed, default)
    visit_id = visits.lookup(x["visit_key"])
    concept = pa.array(flat_target[flat_idx])
    compact = pa.table(
        {
            "target": pc.cast(target, pa.int8()),
            "person_id": pc.cast(x["person_id"], pa.int32()),
            "visit_occurrence_id": pc.cast(visit_id, pa.int32()),
            "provider_id": pc.take(visit_providers, pc.subtract(visit_id, 1))
            if len(visit_providers)
            else pa.nulls(x.num_rows, pa.int32()),
            "start": x["start"],
            "end": x["end"],
            "concept_id": concept,
            "source_concept_id": pa.array(flat_source[flat_idx]),
            "code": x["code"],
            "value_number": x["value_number"],
            "value_string": x["value_string"],
            "value_concept_id": _value_concepts(x["value_vocabulary_id"], x["value_code"], vocab),
            "unit": x["unit"],
            "unit_concept_id": _units(x["unit"], vocab),
            "quantity": x["quantity"],
            "identifier": x["identifier"],
        }
    )
    zero = pc.equal(concept, 0)
    unmapped = x.select(["vocabulary_id", "code", "description", "source_row"]).filter(zero)
    return compact, unmapped.append_column("target", pc.cast(pc.filter(target, zero), pa.int8()))


def build_events(
    parts: Iterable[pa.Table],
    persons: Ids,
    visits: Ids,
    visit_providers: pa.Array,
    vocab: VocabularyStore,
    spec: CdmSpec,
) -> EventBuild:
    """Map, route and build the event tables from staged ``parts`` (one at a time, so that a
    reader can load them lazily); account for every staged event row."""
    out = EventBuild()
    compact_parts: list[pa.Table] = []
    unmapped_parts: list[pa.Table] = []
    for part in parts:
        if part.num_rows:
            compact, unmapped = _map_part(part, persons, visits, visit_providers, vocab, out)
            compact_parts.append(compact)
            unmapped_parts.append(unmapped)
        del part
    if not compact_parts:
        for table in _TABLES:
            out.tables[table] = conform(table, {}, spec, num_rows=0)
            out.coverage[table] = TableCoverage(table=table)
        return out
    x = pa.concat_tables(compact_parts)
    zero_rows = pa.concat_tables(unmapped_parts)
    del compact_parts, unmapped_parts
    target = x["target"]
    g: dict[str, Col] = {name: x[name] for name in x.column_names if name != "target"}
    # One sort by (table, person, start) instead of a filter per table: each table is then a
    # zero-copy slice that is already in the order conform() wants.
    order = pc.sort_indices(
        pa.table({"t": target, "p": x["person_id"], "s": x["start"]}),
        sort_keys=[("t", "ascending"), ("p", "ascending"), ("s", "ascending")],
    )
    g = {k: pc.take(v, order) for k, v in g.items()}
    del x
    sorted_target = pc.take(target, order)
    zero = pc.equal(g["concept_id"], 0)
    local = pc.and_(zero, pc.equal(g["source_concept_id"], 0))
    zero_target = zero_rows["target"]
    per_table = {d["values"]: d["counts"] for d in pc.value_counts(sorted_target).to_pylist()}
    start = 0
    for position, table in enumerate(EVENT_TABLES):
        n = per_table.get(position, 0)
        part = {k: v.slice(start, n) for k, v in g.items()}
        columns = {
            "person_id": part["person_id"],
            "provider_id": part["provider_id"],
            "visit_occurrence_id": part["visit_occurrence_id"],
            **_TABLES[table](part, n),
        }
        out.tables[table] = conform(table, columns, spec, num_rows=n, presorted=True)
        out.coverage[table] = _coverage(
            table,
            n,
            zero_rows.filter(pc.equal(zero_target, position)),
            pc.sum(local.slice(start, n)).as_py() or 0,
        )
        start += n
    return out


def _coverage(table: str, coded: int, zero_rows: pa.Table, local_rows: int) -> TableCoverage:
    """Coverage of one table: ``zero_rows`` are its rows left at concept 0."""
    unmapped = (
        zero_rows.group_by(["vocabulary_id", "code", "description"])
        .aggregate([("source_row", "count")])
        .sort_by([("source_row_count", "descending"), ("code", "ascending")])
    )
    return TableCoverage(
        table=table,
        coded_rows=coded,
        mapped_rows=coded - zero_rows.num_rows,
        local_code_rows=local_rows,
        unmapped=[
            UnmappedCodeCount(
                vocabulary_id=r["vocabulary_id"],
                code=r["code"],
                description=r["description"],
                rows=r["source_row_count"],
            )
            for r in unmapped.to_pylist()
        ],
    )
