"""Reading Eunomia tables from a local folder and the S3, Azure Blob and GCS emulators."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from executors.errors import CorruptObject, ObjectNotFound
from executors.storage import Location, open_location, read_parquet
from executors.storage.objectstore import ObjectStoreLocation
from fedflow.core.errors import InvalidRequest

pytestmark = pytest.mark.integration

CLOUDS = ("s3", "az", "gs")
ALL = ("local", *CLOUDS)
COLUMNS = ["person_id", "condition_concept_id", "condition_start_date"]
TABLES = ("person", "condition_occurrence", "concept", "observation_period")
FILTERS = [("person_id", ">=", 500), ("person_id", "<", 1500)]


@pytest.mark.parametrize("kind", ALL)
def test_projection_and_filter_give_the_local_table(
    kind: str,
    eunomia_urls: dict[str, str],
    locate: Callable[[str, str], Location],
    eunomia_parquet: Path,
) -> None:
    expected = pq.read_table(
        eunomia_parquet / "omop" / "condition_occurrence.parquet", columns=COLUMNS, filters=FILTERS
    )
    got = read_parquet(open_location(eunomia_urls[kind]), "condition_occurrence", COLUMNS, FILTERS)
    assert expected.num_rows > 1000  # the filter keeps a real slice of the table
    assert got.schema.names == COLUMNS
    assert got.sort_by("person_id").equals(expected.sort_by("person_id"))
    people = read_parquet(locate(kind, "omop"), "person", ["person_id", "year_of_birth"])
    assert people.num_rows == 2694


@pytest.mark.parametrize("kind", CLOUDS)
def test_reads_are_ranged_and_projected(
    kind: str, locate: Callable[[str, str], Location], eunomia_parquet: Path
) -> None:
    location = locate(kind, "omop")
    assert isinstance(location, ObjectStoreLocation)
    local = eunomia_parquet / "omop" / "condition_occurrence.parquet"
    size, row_groups = local.stat().st_size, pq.ParquetFile(local).metadata.num_row_groups
    read_parquet(location, "condition_occurrence", ["person_id"])
    one_column = location.stats.bytes
    assert 0 < one_column < size / 4, (one_column, size)
    # The footer (once to learn the schema, once to read) and one column chunk per row group.
    assert location.stats.requests <= row_groups + 2
    read_parquet(location, "condition_occurrence")
    assert location.stats.bytes - one_column >= size * 0.9  # the whole table costs the file


@pytest.mark.parametrize("kind", CLOUDS)
def test_filesystem_lists_folders_and_is_read_only(
    kind: str, locate: Callable[[str, str], Location]
) -> None:
    location = locate(kind, "omop")
    fs = location.filesystem
    assert fs.get_file_info(location.root).type == pafs.FileType.Directory
    listed = fs.get_file_info(pafs.FileSelector(location.root, recursive=True))
    names = {info.path.removeprefix(location.root + "/") for info in listed}
    assert names == set(location.fingerprints()) == {f"{t}.parquet" for t in TABLES}
    # pyarrow's own dataset discovery works over the location.
    found = pads.dataset(location.root, filesystem=fs, format="parquet").files
    assert sorted(found) == sorted(location.path(f"{t}.parquet") for t in TABLES)
    with pytest.raises(PermissionError, match="read-only"):
        fs.delete_file(location.path("person.parquet"))
    assert read_parquet(location, "person", ["person_id"]).num_rows == 2694
    # Both pickle (to Dask worker processes) and reopen the store from the URL.
    copy = pickle.loads(pickle.dumps(location))
    assert copy.url == location.url and copy.fingerprints() == location.fingerprints()
    fs_copy = pickle.loads(pickle.dumps(fs))
    assert pq.read_table(location.path("person.parquet"), filesystem=fs_copy).num_rows == 2694


@pytest.mark.parametrize("kind", CLOUDS)
def test_cache_downloads_each_object_once(
    kind: str, locate: Callable[[str, str], Location], tmp_path: Path, eunomia_parquet: Path
) -> None:
    location = locate(kind, "omop")
    assert isinstance(location, ObjectStoreLocation)
    location.cache_dir = tmp_path
    first = read_parquet(location, "person", ["person_id"])
    after_first = location.stats.bytes
    second = read_parquet(location, "person", ["person_id"])
    assert first.equals(second)
    assert after_first == (eunomia_parquet / "omop" / "person.parquet").stat().st_size
    assert location.stats.bytes == after_first  # the second read came from the cache
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("kind", ALL)
def test_fingerprints_are_stable_and_follow_content(
    kind: str,
    get_store: Callable[[str], Any],
    locate: Callable[[str, str], Location],
    eunomia_parquet: Path,
) -> None:
    prefix = f"scratch-{uuid.uuid4().hex[:8]}"
    person = (eunomia_parquet / "omop" / "person.parquet").read_bytes()
    concept = (eunomia_parquet / "omop" / "concept.parquet").read_bytes()
    if kind == "local":
        folder = eunomia_parquet / prefix
        folder.mkdir()

        def put(name: str, data: bytes) -> None:
            (folder / name).write_bytes(data)
    else:
        store = get_store(kind)

        def put(name: str, data: bytes) -> None:
            store.put(f"{prefix}/{name}", data)

    put("person.parquet", person)
    put("concept.parquet", concept)
    location = locate(kind, prefix)
    before = location.fingerprints()
    assert set(before) == {"person.parquet", "concept.parquet"}
    assert locate(kind, prefix).fingerprints() == before
    put("person.parquet", concept)
    after = locate(kind, prefix).fingerprints()
    assert after["person.parquet"] != before["person.parquet"]
    assert after["concept.parquet"] == before["concept.parquet"]


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("bad", ["broken", "notparquet"])
def test_corrupt_object_is_named_and_others_still_read(
    kind: str, bad: str, locate: Callable[[str, str], Location]
) -> None:
    location = locate(kind, "faulty")
    with pytest.raises(CorruptObject) as caught:
        read_parquet(location, bad, ["person_id"])
    assert f"'{bad}.parquet'" in str(caught.value)
    assert location.url in str(caught.value)
    assert "person_source_value" not in str(caught.value)  # no contents in the message
    assert read_parquet(location, "person", ["person_id"]).num_rows == 2694


@pytest.mark.parametrize("kind", ALL)
def test_missing_object_is_named_and_others_still_read(
    kind: str, locate: Callable[[str, str], Location]
) -> None:
    location = locate(kind, "omop")
    with pytest.raises(ObjectNotFound, match=r"'drug_exposure\.parquet' of dataset location"):
        read_parquet(location, "drug_exposure")
    with pytest.raises(InvalidRequest, match="no column"):
        read_parquet(location, "person", ["person_id", "shoe_size"])
    assert read_parquet(location, "person", ["person_id"]).num_rows == 2694


@pytest.mark.parametrize("kind", CLOUDS)
def test_missing_bucket_is_named(kind: str, locate: Callable[[str, str], Location]) -> None:
    store_name = "container" if kind == "az" else "bucket"
    healthy = locate(kind, "omop")  # also applies the store's environment
    missing = open_location(f"{kind}://no-such-{store_name}/omop")
    with pytest.raises(ObjectNotFound, match=f"the {store_name} does not exist") as caught:
        read_parquet(missing, "person", ["person_id"])
    assert f"{kind}://no-such-{store_name}/omop" in str(caught.value)
    with pytest.raises(ObjectNotFound, match=f"the {store_name} does not exist"):
        missing.fingerprints()
    assert read_parquet(healthy, "person", ["person_id"]).num_rows == 2694


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="does not exist"):
        open_location(str(tmp_path / "absent")).fingerprints()
