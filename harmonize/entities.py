"""Person, location, care site, provider, visit, observation period and death tables.

Conventions (ETL-Synthea and the FHIR-to-OMOP IG agree on them): gender M/male -> 8507,
F/female -> 8532, rows with another gender or no birth date are rejected; race white 8527,
black 8516, asian 8515, native 8657, hawaiian 8557, else 0; ethnicity hispanic 38003563,
nonhispanic 38003564, else 0; visit class ambulatory / wellness / outpatient -> 9202 (outpatient),
emergency / urgentcare -> 9203 (ER), inpatient stays -> 9201; encounters are grouped into visits
as ETL-Synthea does (``harmonize.visits``); type concept 32817 (EHR); an observation period spans
each person's first to last recorded date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harmonize.conform import as_date, conform
from harmonize.spec import CdmSpec
from harmonize.visits import canonical_classes, group_encounters

__all__ = [
    "EHR",
    "Ids",
    "build_care_sites",
    "build_death",
    "build_observation_period",
    "build_persons",
    "build_providers",
    "build_visits",
    "index_of",
    "map_values",
]

EHR = 32817
_GENDER = {"M": 8507, "MALE": 8507, "F": 8532, "FEMALE": 8532}
_RACE = {"white": 8527, "black": 8516, "asian": 8515, "native": 8657, "hawaiian": 8557}
_ETHNICITY = {"hispanic": 38003563, "nonhispanic": 38003564}
_VISIT = {
    "ambulatory": 9202,
    "wellness": 9202,
    "outpatient": 9202,
    "amb": 9202,
    "emergency": 9203,
    "urgentcare": 9203,
    "emer": 9203,
    "inpatient": 9201,
    "imp": 9201,
    "acute": 9201,
}


@dataclass
class Ids:
    """Source keys and their CDM ids: ``ids[i]`` for ``keys[i]``, or ``i + 1`` without ids."""

    keys: pa.Array
    ids: pa.Array | None = None

    def lookup(self, values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """CDM ids (int32) of ``values``; null where a key is unknown."""
        position = index_of(values, self.keys)
        if self.ids is not None:
            return pc.take(self.ids, position)
        return pc.add(position, 1)


def index_of(values: pa.Array | pa.ChunkedArray, keys: pa.Array) -> pa.Array | pa.ChunkedArray:
    """Position of each value in ``keys`` (null where absent)."""
    return pc.index_in(values, value_set=keys)


def map_values(
    values: pa.Array | pa.ChunkedArray, table: dict[str, int], *, lower: bool, default: int | None
) -> pa.Array:
    """Map strings through ``table`` (case-folded if ``lower``), ``default`` when absent."""
    folded = pc.utf8_lower(values) if lower else pc.utf8_upper(values)
    keys = pa.array(list(table))
    idx = pc.index_in(folded, value_set=keys)
    mapped = pc.take(pa.array(list(table.values()), pa.int32()), idx)
    return pc.fill_null(mapped, default) if default is not None else mapped


def _location_key(t: pa.Table) -> pa.Array | pa.ChunkedArray:
    parts = [pc.cast(t[c], pa.string()) for c in ("address_1", "city", "state", "zip", "county")]
    return pc.binary_join_element_wise(*parts, "|", null_handling="replace", null_replacement="")


def build_locations(persons: pa.Table, sites: pa.Table, spec: CdmSpec) -> tuple[pa.Table, Ids]:
    """Distinct addresses of persons and care sites as ``location``."""
    cols = ["address_1", "city", "state", "zip", "county", "latitude", "longitude"]
    both = pa.concat_tables([persons.select(cols), sites.select(cols)])
    keys = _location_key(both)
    first = np.unique(keys.to_numpy(zero_copy_only=False), return_index=True)[1]
    distinct = both.take(pa.array(np.sort(first)))
    dkeys = pc.take(keys, pa.array(np.sort(first))).combine_chunks()
    state = distinct["state"]
    short = pc.less_equal(pc.utf8_length(state), 2)
    columns = {
        "location_id": pa.array(np.arange(1, distinct.num_rows + 1, dtype=np.int32)),
        "address_1": distinct["address_1"],
        "city": distinct["city"],
        "state": pc.if_else(short, state, pa.scalar(None, pa.string())),
        "zip": distinct["zip"],
        "county": distinct["county"],
        "location_source_value": dkeys,
        "latitude": distinct["latitude"],
        "longitude": distinct["longitude"],
    }
    table = conform("location", columns, spec, num_rows=distinct.num_rows)
    return table, Ids(dkeys)


def build_persons(
    staged: pa.Table, locations: Ids, spec: CdmSpec
) -> tuple[pa.Table, Ids, dict[str, int]]:
    """``person`` from staged persons; returns the table, its ids and rejected counts."""
    has_key = pc.is_valid(staged["person_key"])
    missing_key = staged.num_rows - (pc.sum(has_key).as_py() or 0)
    staged = staged.filter(has_key)
    gender = map_values(staged["gender"], _GENDER, lower=False, default=None)
    rejected = {
        "missing_person_id": missing_key,
        "missing_gender": pc.sum(pc.is_null(gender)).as_py() or 0,
        "missing_birth_date": pc.sum(
            pc.and_(pc.is_valid(gender), pc.is_null(staged["birth_date"]))
        ).as_py()
        or 0,
    }
    keep = pc.and_(pc.is_valid(gender), pc.is_valid(staged["birth_date"]))
    _, first = np.unique(staged["person_key"].to_numpy(zero_copy_only=False), return_index=True)
    unique = np.zeros(staged.num_rows, dtype=bool)
    unique[first] = True
    rejected["duplicate_person"] = int((~unique & keep.to_numpy(zero_copy_only=False)).sum())
    keep = pc.and_(keep, pa.array(unique))
    t = staged.filter(keep).append_column("gender_concept_id", gender.filter(keep))
    t = t.take(pc.sort_indices(t, sort_keys=[("person_key", "ascending")]))
    birth = t["birth_date"]
    race = pc.coalesce(t["race_concept_id"], map_values(t["race"], _RACE, lower=True, default=0))
    eth = pc.coalesce(
        t["ethnicity_concept_id"], map_values(t["ethnicity"], _ETHNICITY, lower=True, default=0)
    )
    n = t.num_rows
    columns = {
        "person_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "gender_concept_id": t["gender_concept_id"],
        "year_of_birth": pc.year(birth),
        "month_of_birth": pc.month(birth),
        "day_of_birth": pc.day(birth),
        "birth_datetime": pc.cast(birth, pa.timestamp("us")),
        "race_concept_id": race,
        "ethnicity_concept_id": eth,
        "location_id": locations.lookup(_location_key(t)),
        "person_source_value": t["person_key"],
        "gender_source_value": t["gender"],
        "gender_source_concept_id": pa.repeat(pa.scalar(0, pa.int32()), n),
        "race_source_value": t["race"],
        "race_source_concept_id": pa.repeat(pa.scalar(0, pa.int32()), n),
        "ethnicity_source_value": t["ethnicity"],
        "ethnicity_source_concept_id": pa.repeat(pa.scalar(0, pa.int32()), n),
    }
    person = conform("person", columns, spec, num_rows=n)
    return person, Ids(t["person_key"].combine_chunks()), rejected


def build_death(staged: pa.Table, persons: Ids, spec: CdmSpec) -> pa.Table:
    """``death`` for the persons with a death date."""
    t = staged.filter(pc.is_valid(staged["death_date"]))
    ids = persons.lookup(t["person_key"])
    t = t.filter(pc.is_valid(ids))
    ids = ids.filter(pc.is_valid(ids))
    columns = {
        "person_id": ids,
        "death_date": t["death_date"],
        "death_datetime": pc.cast(t["death_date"], pa.timestamp("us")),
        "death_type_concept_id": pa.repeat(pa.scalar(EHR, pa.int32()), t.num_rows),
    }
    return conform("death", columns, spec, num_rows=t.num_rows)


def build_care_sites(sites: pa.Table, locations: Ids, spec: CdmSpec) -> tuple[pa.Table, Ids]:
    """``care_site`` from staged organizations."""
    n = sites.num_rows
    columns = {
        "care_site_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "care_site_name": sites["name"],
        "place_of_service_concept_id": pa.repeat(pa.scalar(0, pa.int32()), n),
        "location_id": locations.lookup(_location_key(sites)),
        "care_site_source_value": sites["care_site_key"],
    }
    return conform("care_site", columns, spec, num_rows=n), Ids(
        sites["care_site_key"].combine_chunks()
    )


def build_providers(providers: pa.Table, sites: Ids, spec: CdmSpec) -> tuple[pa.Table, Ids]:
    """``provider`` from staged practitioners."""
    n = providers.num_rows
    columns = {
        "provider_id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "provider_name": providers["name"],
        "specialty_concept_id": pa.repeat(pa.scalar(0, pa.int32()), n),
        "care_site_id": sites.lookup(providers["care_site_key"]),
        "gender_concept_id": map_values(providers["gender"], _GENDER, lower=False, default=0),
        "provider_source_value": providers["provider_key"],
        "specialty_source_value": providers["specialty"],
        "gender_source_value": providers["gender"],
    }
    return conform("provider", columns, spec, num_rows=n), Ids(
        providers["provider_key"].combine_chunks()
    )


def build_visits(
    staged: pa.Table, persons: Ids, providers: Ids, sites: Ids, spec: CdmSpec, *, merge: bool = True
) -> tuple[pa.Table, Ids, pa.Array, dict[str, int], int]:
    """``visit_occurrence`` from encounters (grouped the ETL-Synthea way when ``merge``).

    Returns the table, the visit id of each encounter key, the provider id per visit (in id
    order), the rejections, and how many kept encounters have visit concept 0.
    """
    person_id = persons.lookup(staged["person_key"])
    rejected = {
        "unknown_person": pc.sum(pc.is_null(person_id)).as_py() or 0,
        "missing_start_date": pc.sum(
            pc.and_(pc.is_valid(person_id), pc.is_null(staged["start"]))
        ).as_py()
        or 0,
    }
    keep = pc.and_(pc.is_valid(person_id), pc.is_valid(staged["start"]))
    t = staged.filter(keep).append_column("person_id", person_id.filter(keep))
    t = t.take(pc.sort_indices(t, sort_keys=[("person_id", "ascending"), ("start", "ascending")]))
    end = pc.coalesce(t["end"], t["start"])
    start_us = pc.cast(t["start"], pa.int64()).to_numpy()
    end_us = pc.cast(end, pa.int64()).to_numpy()
    day = 86_400_000_000
    classes = canonical_classes(t["visit_class"])
    groups = group_encounters(
        t["person_id"].to_numpy(),
        start_us // day,
        end_us // day,
        start_us,
        classes,
        merge=merge,
    )
    n = len(groups.inpatient)
    # the first encounter (in time) of each visit gives its person, class, provider and site
    first = np.full(n, t.num_rows, dtype=np.int64)
    np.minimum.at(first, groups.group, np.arange(t.num_rows))
    last_end = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_end, groups.group, end_us)
    head = t.take(pa.array(first))
    stay = pc.if_else(pa.array(groups.er_start), "er+ip", "inpatient")
    source_value = pc.if_else(pa.array(groups.inpatient), stay, pc.take(classes, pa.array(first)))
    concept = map_values(source_value, _VISIT, lower=True, default=0)
    concept = pc.if_else(pa.array(groups.inpatient), pa.scalar(9201, pa.int32()), concept)
    visit_end = pa.array(np.maximum(last_end, start_us[first]), pa.int64()).cast(pa.timestamp("us"))
    pid = head["person_id"].to_numpy()
    order = np.lexsort((start_us[first], pid))
    rank = np.empty(n, dtype=np.int32)
    rank[order] = np.arange(1, n + 1, dtype=np.int32)
    sorted_pid = pid[order]
    ids = np.arange(1, n + 1, dtype=np.int32)
    preceding = np.where(np.r_[False, sorted_pid[1:] == sorted_pid[:-1]], ids - 1, 0)
    take = pa.array(order)
    provider_id = pc.take(providers.lookup(head["provider_key"]), take)
    columns = {
        "visit_occurrence_id": pa.array(ids),
        "person_id": pa.array(sorted_pid),
        "visit_concept_id": pc.take(concept, take),
        "visit_start_date": as_date(pc.take(head["start"], take)),
        "visit_start_datetime": pc.take(head["start"], take),
        "visit_end_date": as_date(pc.take(visit_end, take)),
        "visit_end_datetime": pc.take(visit_end, take),
        "visit_type_concept_id": pa.repeat(pa.scalar(EHR, pa.int32()), n),
        "provider_id": provider_id,
        "care_site_id": pc.take(sites.lookup(head["care_site_key"]), take),
        "visit_source_value": pc.take(source_value, take),
        "visit_source_concept_id": pa.repeat(pa.scalar(0, pa.int32()), n),
        "preceding_visit_occurrence_id": pa.array(preceding, mask=preceding == 0),
    }
    visit = conform("visit_occurrence", columns, spec, num_rows=n, presorted=True)
    provider_array = pc.cast(provider_id, pa.int32())
    if isinstance(provider_array, pa.ChunkedArray):
        provider_array = provider_array.combine_chunks()
    encounter_visit = pa.array(rank[groups.group])
    zero_concept = pc.take(pc.equal(concept, 0), pa.array(groups.group))
    concept_0 = pc.sum(zero_concept).as_py() or 0
    ids_of = Ids(t["visit_key"].combine_chunks(), encounter_visit)
    return visit, ids_of, provider_array, rejected, concept_0


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]


def build_observation_period(
    dates: list[tuple[pa.Array | pa.ChunkedArray, pa.Array | pa.ChunkedArray]], spec: CdmSpec
) -> pa.Table:
    """One ``observation_period`` per person from the first to the last recorded date."""
    pids = pa.chunked_array([c for p, _ in dates for c in _chunks(pc.cast(p, pa.int32()))])
    days = pa.chunked_array([c for _, d in dates for c in _chunks(as_date(d))], pa.date32())
    t = pa.table({"person_id": pids, "day": days}).filter(pc.is_valid(days))
    grouped = t.group_by("person_id").aggregate([("day", "min"), ("day", "max")])
    n = grouped.num_rows
    columns = {
        "person_id": grouped["person_id"],
        "observation_period_start_date": grouped["day_min"],
        "observation_period_end_date": grouped["day_max"],
        "period_type_concept_id": pa.repeat(pa.scalar(EHR, pa.int32()), n),
    }
    return conform("observation_period", columns, spec, num_rows=n)
