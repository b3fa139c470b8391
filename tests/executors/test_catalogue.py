"""The site catalogue: snapshot digests, person partitions, clear storage errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from executors import CorruptObject, DatasetNotFound, ObjectNotFound
from executors.catalogue import Catalogue, Dataset
from executors.config import DatasetConfig
from executors.importer import write_dataset
from executors.storage import open_location
from fedflow.core import InvalidRequest


@pytest.fixture
def dataset(tmp_path: Path, eunomia) -> Dataset:  # type: ignore[no-untyped-def]
    write_dataset(
        {k: eunomia[k] for k in ("person", "condition_occurrence", "concept")}, tmp_path / "omop"
    )
    return Dataset("omop", open_location(str(tmp_path / "omop")))


def test_snapshot_digest_is_stable_and_tracks_content(dataset: Dataset, tmp_path: Path) -> None:
    again = Dataset("omop", open_location(str(tmp_path / "omop")))
    assert dataset.snapshot_digest == again.snapshot_digest
    (tmp_path / "omop" / "concept.parquet").write_bytes(b"changed")
    assert (
        Dataset("omop", open_location(str(tmp_path / "omop"))).snapshot_digest
        != dataset.snapshot_digest
    )


@pytest.mark.parametrize("count", [1, 2, 7, 64])
def test_partitions_cover_every_row_once(dataset: Dataset, count: int) -> None:
    ranges = dataset.partitions(count)
    assert 1 <= len(ranges) <= count
    rows = [dataset.read("condition_occurrence", ["person_id"], r).num_rows for r in ranges]
    assert sum(rows) == dataset.read("condition_occurrence", ["person_id"]).num_rows
    persons = pa.concat_tables(dataset.read("person", ["person_id"], r) for r in ranges)
    assert pc.count_distinct(persons["person_id"]).as_py() == persons.num_rows == 2694


def test_reads_only_declared_columns(dataset: Dataset) -> None:
    table = dataset.read("person", ["person_id", "year_of_birth"])
    assert table.column_names == ["person_id", "year_of_birth"]
    assert dataset.is_person_table("person") and not dataset.is_person_table("concept")


def test_storage_errors_name_dataset_and_object(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="dataset 'omop': table 'drug_era' does not exist"):
        dataset.read("drug_era", ["person_id"])
    with pytest.raises(InvalidRequest, match="table 'person' has no column"):
        dataset.check_columns({"person": ["person_id", "no_such_column"]})
    (tmp_path / "omop" / "concept.parquet").write_bytes(b"PAR1 not really parquet")
    broken = Dataset("omop", open_location(str(tmp_path / "omop")))
    with pytest.raises(CorruptObject, match=r"dataset 'omop': object 'concept\.parquet'"):
        broken.read("concept", ["concept_id"])
    assert broken.read("person", ["person_id"]).num_rows == 2694  # other tables still serve


def test_catalogue_reports_missing_datasets(tmp_path: Path, dataset: Dataset) -> None:
    catalogue = Catalogue(
        {
            "omop": DatasetConfig(location=str(tmp_path / "omop")),
            "gone": DatasetConfig(location=str(tmp_path / "gone")),
        }
    )
    with pytest.raises(DatasetNotFound):
        catalogue.get("other")
    snapshots = catalogue.snapshots()
    assert snapshots["omop"].startswith("sha256:")
    assert snapshots["gone"].startswith("unavailable:")


def test_schemas_are_read_again_when_a_table_file_changes(dataset: Dataset, tmp_path: Path) -> None:
    import os

    assert "gender_concept_id" in dataset.schema("person").names
    assert dataset.person_count() == dataset.person_count() > 2
    dataset.check_columns({"person": ["person_id", "gender_concept_id"]})
    path = tmp_path / "omop" / "person.parquet"
    stat = path.stat()
    pa.parquet.write_table(pa.table({"person_id": [1, 2]}), path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert dataset.schema("person").names == ["person_id"]
    assert dataset.person_count() == 2
    with pytest.raises(InvalidRequest, match="gender_concept_id"):
        dataset.check_columns({"person": ["person_id", "gender_concept_id"]})


def test_listing_and_reading_tables_hash_no_file(
    dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job opens the dataset afresh on a worker at every run: it must not read every file
    # to learn the table names (only the snapshot digest hashes contents).
    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path.name} was hashed")

    monkeypatch.setattr("executors.storage.local.digest_file", no_hashing)
    fresh = Dataset("omop", open_location(str(tmp_path / "omop")))
    assert fresh.table_names == {"person", "condition_occurrence", "concept"}
    assert fresh.read("person", ["person_id"]).num_rows == dataset.person_count()
    with pytest.raises(AssertionError, match="was hashed"):
        _ = fresh.snapshot_digest
