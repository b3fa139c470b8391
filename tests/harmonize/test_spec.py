"""The CDM specification read from the OHDSI field-level CSV."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from harmonize import SourceNotFound, load_spec
from harmonize.spec import CdmSpec, arrow_type


def test_person_schema_follows_the_spec(spec: CdmSpec) -> None:
    schema = spec.schema("person")
    assert schema.names[:3] == ["person_id", "gender_concept_id", "year_of_birth"]
    assert schema.field("person_id").type == pa.int32()
    assert schema.field("birth_datetime").type == pa.timestamp("us")
    assert spec.primary_key("person") == "person_id"
    assert spec.primary_key("death") is None
    strict = spec.schema("person", strict=True)
    assert not strict.field("person_id").nullable
    assert strict.field("location_id").nullable


def test_foreign_keys_and_domains_are_read(spec: CdmSpec) -> None:
    fields = {f.name: f for f in spec["measurement"]}
    assert fields["person_id"].fk_table == "person"
    assert fields["measurement_concept_id"].fk_domain == "Measurement"
    assert fields["measurement_source_value"].max_length == 50


def test_types_and_missing_file() -> None:
    assert arrow_type("varchar(MAX)") == pa.string()
    with pytest.raises(ValueError):
        arrow_type("blob")
    with pytest.raises(SourceNotFound):
        load_spec(Path("/nonexistent/spec.csv"))
