"""Read a Synthea v3 CSV export into the staged form, following OHDSI ETL-Synthea.

Which file feeds which CDM table, and with which vocabulary, follows ETL-Synthea / dbt-synthea:
conditions, procedures, devices, supplies and allergies carry SNOMED CT codes, observations LOINC,
medications RxNorm, immunizations CVX; the target table of a coded row is decided later by the
domain of its standard concept (a SNOMED "finding" lands in ``observation``). Allergies always go
to ``observation``. Claims, payers, care plans, imaging studies and supplies are not loaded by
ETL-Synthea's CDM tables either; their rows are counted as rejected ``out_of_scope``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from harmonize.errors import InvalidSource, SourceNotFound
from harmonize.staging import (
    CARE_SITE_SCHEMA,
    EVENT_SCHEMA,
    PERSON_SCHEMA,
    PROVIDER_SCHEMA,
    VISIT_SCHEMA,
    StagedSource,
)

__all__ = ["OUT_OF_SCOPE", "read_synthea"]

_TS = pa.timestamp("s", tz="UTC")
_DATE = pa.date32()
_STR = pa.string()
_F64 = pa.float64()

#: Synthea files not turned into CDM rows here (claims, costs, payers, care plans, imaging).
OUT_OF_SCOPE = (
    "claims",
    "claims_transactions",
    "payers",
    "payer_transitions",
    "careplans",
    "imaging_studies",
    "supplies",
)


@dataclass(frozen=True)
class _EventFile:
    name: str
    start: str
    end: str | None
    vocabulary: str
    default_table: str
    route_by_domain: bool = True
    date_only: bool = False
    value: str | None = None
    unit: str | None = None
    quantity: str | None = None
    identifier: str | None = None
    system: str | None = None


_EVENT_FILES = (
    _EventFile("conditions", "START", "STOP", "SNOMED", "condition_occurrence", date_only=True),
    _EventFile("medications", "START", "STOP", "RxNorm", "drug_exposure", quantity="DISPENSES"),
    _EventFile("immunizations", "DATE", None, "CVX", "drug_exposure"),
    _EventFile("procedures", "START", "STOP", "SNOMED", "procedure_occurrence"),
    _EventFile("observations", "DATE", None, "LOINC", "measurement", value="VALUE", unit="UNITS"),
    _EventFile("allergies", "START", "STOP", "SNOMED", "observation", False, True, system="SYSTEM"),
    _EventFile("devices", "START", "STOP", "SNOMED", "device_exposure", identifier="UDI"),
)

_SYSTEMS = {"SNOMED-CT": "SNOMED", "SNOMED": "SNOMED", "RXNORM": "RxNorm", "LOINC": "LOINC"}


def _path(raw: Path, name: str) -> Path | None:
    for suffix in (".csv", ".csv.gz"):
        if (raw / f"{name}{suffix}").is_file():
            return raw / f"{name}{suffix}"
    return None


def _read(raw: Path, name: str, types: dict[str, pa.DataType]) -> pa.Table | None:
    path = _path(raw, name)
    if path is None:
        return None
    try:
        return pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(types), strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise InvalidSource(f"{path.name} does not have the Synthea v3 layout: {exc}") from None


def _ts(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Any date or UTC timestamp column as naive UTC timestamp[us]."""
    if pa.types.is_timestamp(col.type):
        return col.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    return col.cast(pa.timestamp("us"))


def _nulls(n: int, typ: pa.DataType) -> pa.Array:
    return pa.nulls(n, typ)


def _const(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, _STR), n)


def _numbers(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Values that are plain decimal numbers as float64, others null (ETL-Synthea's rule)."""
    numeric = pc.match_substring_regex(values, r"^[-+]?[0-9]+\.?[0-9]*$")
    kept = pc.if_else(numeric, values, pa.scalar(None, _STR))
    return pc.cast(kept, _F64)


def _rows(n: int) -> pa.Array:
    return pa.array(np.arange(n, dtype=np.int64))


def _persons(raw: Path) -> pa.Table:
    types = {
        "Id": _STR,
        "BIRTHDATE": _DATE,
        "DEATHDATE": _DATE,
        "RACE": _STR,
        "ETHNICITY": _STR,
        "GENDER": _STR,
        "ADDRESS": _STR,
        "CITY": _STR,
        "STATE": _STR,
        "COUNTY": _STR,
        "ZIP": _STR,
        "LAT": _F64,
        "LON": _F64,
    }
    t = _read(raw, "patients", types)
    if t is None:
        raise SourceNotFound(f"patients.csv not found in {raw}")
    n = t.num_rows
    cols = {
        "person_key": t["Id"],
        "source_row": _rows(n),
        "gender": t["GENDER"],
        "birth_date": t["BIRTHDATE"],
        "death_date": t["DEATHDATE"],
        "race": t["RACE"],
        "race_concept_id": _nulls(n, pa.int32()),
        "ethnicity": t["ETHNICITY"],
        "ethnicity_concept_id": _nulls(n, pa.int32()),
        "address_1": t["ADDRESS"],
        "city": t["CITY"],
        "state": t["STATE"],
        "zip": t["ZIP"],
        "county": t["COUNTY"],
        "latitude": t["LAT"],
        "longitude": t["LON"],
    }
    return pa.table(cols, schema=PERSON_SCHEMA)


def _visits(raw: Path) -> pa.Table:
    types = {
        "Id": _STR,
        "START": _TS,
        "STOP": _TS,
        "PATIENT": _STR,
        "ORGANIZATION": _STR,
        "PROVIDER": _STR,
        "ENCOUNTERCLASS": _STR,
    }
    t = _read(raw, "encounters", types)
    if t is None:
        raise SourceNotFound(f"encounters.csv not found in {raw}")
    cols = {
        "visit_key": t["Id"],
        "source_row": _rows(t.num_rows),
        "person_key": t["PATIENT"],
        "start": _ts(t["START"]),
        "end": _ts(t["STOP"]),
        "visit_class": t["ENCOUNTERCLASS"],
        "provider_key": t["PROVIDER"],
        "care_site_key": t["ORGANIZATION"],
    }
    return pa.table(cols, schema=VISIT_SCHEMA)


def _events(raw: Path, spec: _EventFile) -> pa.Table | None:
    start_type = _DATE if spec.date_only else _TS
    types: dict[str, pa.DataType] = {
        spec.start: start_type,
        "PATIENT": _STR,
        "ENCOUNTER": _STR,
        "CODE": _STR,
        "DESCRIPTION": _STR,
    }
    if spec.end:
        types[spec.end] = start_type
    for extra in (spec.value, spec.unit, spec.identifier, spec.system):
        if extra:
            types[extra] = _STR
    if spec.quantity:
        types[spec.quantity] = _F64
    t = _read(raw, spec.name, types)
    if t is None:
        return None
    n = t.num_rows
    if spec.system:
        systems = t[spec.system].to_pylist()
        vocab = pa.array([_SYSTEMS.get((v or "").upper(), spec.vocabulary) for v in systems], _STR)
    else:
        vocab = _const(spec.vocabulary, n)
    value = t[spec.value] if spec.value else _nulls(n, _STR)
    cols = {
        "source_table": _const(spec.name, n),
        "source_row": _rows(n),
        "person_key": t["PATIENT"],
        "visit_key": t["ENCOUNTER"],
        "provider_key": _nulls(n, _STR),
        "start": _ts(t[spec.start]),
        "end": _ts(t[spec.end]) if spec.end else _nulls(n, pa.timestamp("us")),
        "vocabulary_id": vocab,
        "code": t["CODE"],
        "description": t["DESCRIPTION"],
        "value_number": _numbers(value) if spec.value else _nulls(n, _F64),
        "value_string": value,
        "value_vocabulary_id": _nulls(n, _STR),
        "value_code": _nulls(n, _STR),
        "unit": t[spec.unit] if spec.unit else _nulls(n, _STR),
        "quantity": t[spec.quantity] if spec.quantity else _nulls(n, _F64),
        "identifier": t[spec.identifier] if spec.identifier else _nulls(n, _STR),
        "default_table": _const(spec.default_table, n),
        "route_by_domain": pa.array([spec.route_by_domain] * n, pa.bool_()),
    }
    return pa.table(cols, schema=EVENT_SCHEMA)


def _load_events(raw: Path, spec: _EventFile) -> pa.Table:
    return _events(raw, spec) or EVENT_SCHEMA.empty_table()


def _providers(raw: Path) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    counts: dict[str, int] = {}
    p = _read(
        raw,
        "providers",
        {"Id": _STR, "ORGANIZATION": _STR, "NAME": _STR, "GENDER": _STR, "SPECIALITY": _STR},
    )
    providers = PROVIDER_SCHEMA.empty_table()
    if p is not None:
        counts["providers"] = p.num_rows
        providers = pa.table(
            [p["Id"], p["NAME"], p["GENDER"], p["SPECIALITY"], p["ORGANIZATION"]],
            schema=PROVIDER_SCHEMA,
        )
    o = _read(
        raw,
        "organizations",
        {
            "Id": _STR,
            "NAME": _STR,
            "ADDRESS": _STR,
            "CITY": _STR,
            "STATE": _STR,
            "ZIP": _STR,
            "LAT": _F64,
            "LON": _F64,
        },
    )
    sites = CARE_SITE_SCHEMA.empty_table()
    if o is not None:
        counts["organizations"] = o.num_rows
        n = o.num_rows
        sites = pa.table(
            [
                o["Id"],
                o["NAME"],
                o["ADDRESS"],
                o["CITY"],
                o["STATE"],
                o["ZIP"],
                _nulls(n, _STR),
                o["LAT"],
                o["LON"],
            ],
            schema=CARE_SITE_SCHEMA,
        )
    return providers, sites, counts


def _count_rows(path: Path) -> int:
    first = pacsv.open_csv(path).schema.names[0]
    return pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(include_columns=[first])
    ).num_rows


def read_synthea(raw: Path) -> StagedSource:
    """Stage the Synthea CSV export in folder ``raw`` (clinical files are read lazily, one at a
    time, when the builder asks for them)."""
    if not raw.is_dir():
        raise SourceNotFound(f"Synthea export folder not found: {raw}")
    persons = _persons(raw)
    visits = _visits(raw)
    providers, sites, counts = _providers(raw)
    staged = StagedSource(
        persons=persons,
        visits=visits,
        events=EVENT_SCHEMA.empty_table(),
        providers=providers,
        care_sites=sites,
        event_loaders=[
            partial(_load_events, raw, spec) for spec in _EVENT_FILES if _path(raw, spec.name)
        ],
    )
    staged.source_rows = {"patients": persons.num_rows, "encounters": visits.num_rows, **counts}
    for name in OUT_OF_SCOPE:
        path = _path(raw, name)
        if path is not None:
            rows = _count_rows(path)
            staged.source_rows[name] = rows
            staged.reject(name, "out_of_scope", rows)
    return staged
