"""Read FHIR R4 bundles into the staged form, following the HL7 FHIR-to-OMOP conventions.

Each resource is validated with the ``fhir.resources`` models (its ``R4B`` package: R4B changed
none of the resources read here); a resource that fails is reported by type and id and skipped.
Collection and transaction bundles are both read; references may be ``urn:uuid:``, relative
(``Patient/123``) or conditional (``Practitioner?identifier=...``, left unresolved).

Patient -> person (+ death, location; US Core race / ethnicity OMB codes), Encounter -> visit,
Practitioner -> provider, Organization -> care_site, Condition, Observation (each component
staged as its own row), MedicationRequest, MedicationStatement, Procedure and Immunization ->
clinical events routed by the domain of their standard concept. Other resource types are
counted as ``out_of_scope``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from harmonize.errors import InvalidSource, MalformedResource, SourceNotFound
from harmonize.staging import (
    CARE_SITE_SCHEMA,
    EVENT_SCHEMA,
    PERSON_SCHEMA,
    PROVIDER_SCHEMA,
    VISIT_SCHEMA,
    StagedSource,
)

__all__ = ["SYSTEMS", "iter_resources", "read_fhir"]

log = logging.getLogger(__name__)

#: FHIR code system URI -> OMOP vocabulary_id.
SYSTEMS = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://unitsofmeasure.org": "UCUM",
}
_RACE = {"2106-3": 8527, "2054-5": 8516, "2028-9": 8515, "1002-5": 8657, "2076-8": 8557}
_ETHNICITY = {"2135-2": 38003563, "2186-5": 38003564}
_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-"
_EVENTS = {
    "Condition": "condition_occurrence",
    "Observation": "measurement",
    "MedicationRequest": "drug_exposure",
    "MedicationStatement": "drug_exposure",
    "Procedure": "procedure_occurrence",
    "Immunization": "drug_exposure",
}
_ENTITIES = ("Patient", "Encounter", "Practitioner", "Organization")


def _bundles(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.glob("*.json"))
    raise SourceNotFound(f"FHIR bundle file or folder not found: {path}")


def iter_resources(path: Path) -> Iterator[dict[str, Any]]:
    """The raw resources of every bundle under ``path`` (a bundle file or a folder)."""
    for file in _bundles(path):
        try:
            bundle = json.loads(file.read_bytes())
        except json.JSONDecodeError as exc:
            raise InvalidSource(f"{file.name} is not JSON (line {exc.lineno})") from None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InvalidSource(f"{file.name} is not a FHIR Bundle")
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                yield resource


def _validate(resource: dict[str, Any]) -> Any:
    kind = str(resource.get("resourceType"))
    try:
        return get_fhir_model_class(kind).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedResource(
            f"{kind}/{resource.get('id')} does not validate as FHIR R4: {first['type']} at {where}",
            resource_type=kind,
            resource_id=str(resource.get("id")),
            reason=f"{first['type']} at {where}",
        ) from None


def _ref(reference: Any) -> str | None:
    """The key a reference points at (``urn:uuid:x`` / ``Type/x`` -> ``x``)."""
    ref = getattr(reference, "reference", None)
    if not ref:
        return None
    if ref.startswith("urn:uuid:"):
        return ref[9:]
    return ref.split("/", 1)[1] if "/" in ref and "?" not in ref else ref


def _when(value: Any) -> dt.datetime | None:
    """A FHIR date or dateTime as the naive local time it was recorded in.

    OMOP dates are the dates of the care setting: converting ``+10:00`` times to UTC would move
    early-morning events (a birth encounter) to the day before the birth date.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value)
    return dt.datetime(int(text[:4]), int(text[5:7] or 1), 1) if len(text) >= 4 else None


def _coding(concept: Any) -> tuple[str | None, str | None, str | None]:
    """(vocabulary_id, code, display) of the first coding with a known system."""
    codings = list(getattr(concept, "coding", None) or [])
    chosen = next((c for c in codings if c.system in SYSTEMS), codings[0] if codings else None)
    if chosen is None:
        return None, None, getattr(concept, "text", None)
    vocab = SYSTEMS.get(chosen.system or "", chosen.system)
    return vocab, chosen.code, chosen.display or getattr(concept, "text", None)


def _value(obs: Any) -> dict[str, Any]:
    """Value columns of an Observation or component: number, text, coded value and unit."""
    q = getattr(obs, "valueQuantity", None)
    if q is not None:
        number = float(q.value) if q.value is not None else None
        return {
            "value_number": number,
            "value_string": None if number is None else str(q.value),
            "unit": q.code or q.unit,
        }
    cc = getattr(obs, "valueCodeableConcept", None)
    if cc is not None:
        vocab, code, display = _coding(cc)
        return {"value_string": display, "value_vocabulary_id": vocab, "value_code": code}
    return {"value_string": getattr(obs, "valueString", None)}


def _ext(items: Any, url: str) -> Any:
    return next((e for e in items or [] if e.url == url), None)


def _person(p: Any, row: int) -> dict[str, Any]:
    record: dict[str, Any] = {"person_key": p.id, "source_row": row}
    record["gender"] = p.gender
    record["birth_date"] = p.birthDate if isinstance(p.birthDate, dt.date) else None
    death = _when(p.deceasedDateTime)
    record["death_date"] = death.date() if death else None
    for kind, table in (("race", _RACE), ("ethnicity", _ETHNICITY)):
        ext = _ext(p.extension, f"{_US_CORE}{kind}")
        omb = _ext(getattr(ext, "extension", None), "ombCategory")
        text = _ext(getattr(ext, "extension", None), "text")
        code = omb.valueCoding.code if omb is not None and omb.valueCoding else None
        record[kind] = (text.valueString if text is not None else None) or code
        record[f"{kind}_concept_id"] = table.get(code or "", 0)
    address = (p.address or [None])[0]
    if address is not None:
        record.update(
            address_1=(address.line or [None])[0],
            city=address.city,
            state=address.state,
            zip=address.postalCode,
            county=address.district,
        )
        geo = _ext(address.extension, "http://hl7.org/fhir/StructureDefinition/geolocation")
        for axis in ("latitude", "longitude"):
            point = _ext(getattr(geo, "extension", None), axis)
            record[axis] = float(point.valueDecimal) if point is not None else None
    return record


def _visit(e: Any, row: int) -> dict[str, Any]:
    period = e.period
    participant = (e.participant or [None])[0]
    return {
        "visit_key": e.id,
        "source_row": row,
        "person_key": _ref(e.subject),
        "start": _when(period.start) if period else None,
        "end": _when(period.end) if period else None,
        "visit_class": e.class_fhir.code if getattr(e, "class_fhir", None) else None,
        "provider_key": _ref(participant.individual) if participant else None,
        "care_site_key": _ref(e.serviceProvider),
    }


def _event(kind: str, r: Any, row: int) -> list[dict[str, Any]]:
    base = {
        "source_table": kind,
        "source_row": row,
        "person_key": _ref(r.subject if hasattr(r, "subject") else r.patient),
    }
    base["visit_key"] = _ref(getattr(r, "encounter", None) or getattr(r, "context", None))
    base["default_table"] = _EVENTS[kind]
    base["route_by_domain"] = True
    start = end = None
    concept = None
    if kind == "Condition":
        start, end = _when(r.onsetDateTime or r.recordedDate), _when(r.abatementDateTime)
        concept = r.code
    elif kind == "Observation":
        start = _when(
            r.effectiveDateTime
            or (r.effectivePeriod.start if r.effectivePeriod else None)
            or r.issued
        )
        concept = r.code
    elif kind in ("MedicationRequest", "MedicationStatement"):
        when = (
            r.authoredOn
            if kind == "MedicationRequest"
            else (r.effectiveDateTime or (r.effectivePeriod.start if r.effectivePeriod else None))
        )
        start = _when(when)
        concept = r.medicationCodeableConcept
    elif kind == "Procedure":
        period = r.performedPeriod
        start = _when(r.performedDateTime or (period.start if period else None))
        end = _when(period.end) if period else None
        concept = r.code
    elif kind == "Immunization":
        start = _when(r.occurrenceDateTime)
        concept = r.vaccineCode
        base["identifier"] = r.lotNumber
    vocab, code, display = _coding(concept)
    base.update(start=start, end=end, vocabulary_id=vocab, code=code, description=display)
    if kind != "Observation":
        return [base]
    rows = [{**base, **_value(r)}]
    for component in r.component or []:
        cvocab, ccode, cdisplay = _coding(component.code)
        rows.append(
            {
                **base,
                "source_table": "Observation.component",
                "vocabulary_id": cvocab,
                "code": ccode,
                "description": cdisplay,
                **_value(component),
            }
        )
    return rows


@dataclass
class _Parsed:
    """What one bundle file yields, merged by :func:`read_fhir`."""

    persons: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    providers: list[dict[str, Any]] = field(default_factory=list)
    sites: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    issues: list[dict[str, str]] = field(default_factory=list)


def _practitioner(r: Any) -> dict[str, Any]:
    name = (r.name or [None])[0]
    full = " ".join([*(name.given or []), name.family or ""]).strip() if name else None
    return {"provider_key": r.id, "name": full, "gender": r.gender}


def _organization(r: Any) -> dict[str, Any]:
    address = (r.address or [None])[0]
    return {
        "care_site_key": r.id,
        "name": r.name,
        "address_1": (address.line or [None])[0] if address else None,
        "city": address.city if address else None,
        "state": address.state if address else None,
        "zip": address.postalCode if address else None,
    }


def _read_bundle(file: Path) -> _Parsed:
    out = _Parsed()
    for resource in iter_resources(file):
        kind = str(resource.get("resourceType"))
        row = out.rows.get(kind, 0)
        out.rows[kind] = row + 1
        if kind not in _EVENTS and kind not in _ENTITIES:
            out.rejected.append((kind, "out_of_scope"))
            continue
        try:
            r = _validate(resource)
        except MalformedResource as exc:
            out.rejected.append((kind, "malformed_resource"))
            out.issues.append({"resource": f"{kind}/{exc.resource_id}", "reason": str(exc.reason)})
            log.warning("skipped %s", exc)
            continue
        if kind == "Patient":
            out.persons.append(_person(r, row))
        elif kind == "Encounter":
            out.visits.append(_visit(r, row))
        elif kind == "Practitioner":
            out.providers.append(_practitioner(r))
        elif kind == "Organization":
            out.sites.append(_organization(r))
        else:
            out.events.extend(_event(kind, r, row))
    return out


def read_fhir(path: Path) -> StagedSource:
    """Stage every bundle under ``path``; malformed resources are reported and skipped."""
    parsed = [_read_bundle(f) for f in _bundles(path)]
    staged = StagedSource(
        persons=pa.Table.from_pylist([x for p in parsed for x in p.persons], schema=PERSON_SCHEMA),
        visits=pa.Table.from_pylist([x for p in parsed for x in p.visits], schema=VISIT_SCHEMA),
        events=pa.Table.from_pylist([x for p in parsed for x in p.events], schema=EVENT_SCHEMA),
        providers=pa.Table.from_pylist(
            [x for p in parsed for x in p.providers], schema=PROVIDER_SCHEMA
        ),
        care_sites=pa.Table.from_pylist(
            [x for p in parsed for x in p.sites], schema=CARE_SITE_SCHEMA
        ),
        names={
            "persons": "Patient",
            "visits": "Encounter",
            "providers": "Practitioner",
            "care_sites": "Organization",
        },
    )
    rows: dict[str, int] = {}
    for p in parsed:
        for kind, count in p.rows.items():
            rows[kind] = rows.get(kind, 0) + count
        for kind, reason in p.rejected:
            staged.reject(kind, reason)
        staged.issues.extend(p.issues)
    components = pc.sum(pc.equal(staged.events["source_table"], "Observation.component")).as_py()
    staged.source_rows = {**rows, "Observation.component": components or 0}
    for kind in (*_EVENTS, *_ENTITIES):
        staged.source_rows.setdefault(kind, 0)
    return staged
