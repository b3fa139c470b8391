"""The site's catalogue of datasets: OMOP CDM tables as parquet, with a snapshot digest.

A dataset is a location holding one ``<table>.parquet`` per table. Tables with a ``person_id``
column are *person tables*: a job splits them into partitions of disjoint person-id ranges,
read with column projection and a range filter (so each worker reads only its rows and the
declared columns). Other tables (the vocabulary) are read whole, once per job.

A table's schema (its parquet footer) and the person count are kept per file and read again
only when the file's size or modification time changed (as the workers' prepared designs are,
:mod:`executors.cluster`): the pre-gate checks the requested columns twice per request at
every site, and reading footers was a third of its cost. A stale schema could only wrongly
pass or refuse the column check; the read itself checks the columns again.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from executors.config import DatasetConfig
from executors.errors import DatasetNotFound, ObjectNotFound, StorageError
from executors.storage import Location, open_location, read_parquet, read_schema
from fedflow.core import InvalidRequest, TableColumns, digest_json

__all__ = ["Catalogue", "Dataset", "PersonRange"]

PERSON_ID = "person_id"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

PersonRange = tuple[int, int]
"""Half-open range ``[low, high)`` of person ids."""


class Dataset:
    """One dataset of a site."""

    def __init__(self, name: str, location: Location) -> None:
        self.name = name
        self.location = location
        self._schemas: dict[str, tuple[tuple[int, int], pa.Schema]] = {}
        self._counts: dict[str, tuple[tuple[int, int], int]] = {}
        self._lock = threading.Lock()

    @cached_property
    def snapshot_digest(self) -> str:
        """Digest of every file's fingerprint: changes whenever any table's content changes."""
        with self._named():
            return digest_json(self.location.fingerprints())

    @cached_property
    def table_names(self) -> frozenset[str]:
        return frozenset(
            path.removesuffix(".parquet")
            for path in self.location.names()
            if path.endswith(".parquet") and "/" not in path
        )

    def schema(self, table: str) -> pa.Schema:
        """The schema of ``table`` (read from the parquet footer only)."""
        self._require(table)
        with self._named():
            stamp = self._stamp(table)
            with self._lock:
                kept = self._schemas.get(table)
            if stamp is not None and kept is not None and kept[0] == stamp:
                return kept[1]
            schema = read_schema(self.location, table)
            if stamp is not None:
                with self._lock:
                    self._schemas[table] = (stamp, schema)
            return schema

    def _stamp(self, table: str) -> tuple[int, int] | None:
        """The table file's (size, modification time in ns); None when either is unknown."""
        info = self.location.filesystem.get_file_info(self.location.path(f"{table}.parquet"))
        if info.type != pafs.FileType.File or info.size is None or info.mtime_ns is None:
            return None
        return int(info.size), int(info.mtime_ns)

    def is_person_table(self, table: str) -> bool:
        return PERSON_ID in self.schema(table).names

    def check_columns(self, tables: TableColumns) -> None:
        """Raise a clear error if a declared table or column does not exist (names only)."""
        for table, columns in tables.items():
            names = set(self.schema(table).names)
            missing = [c for c in columns if c not in names]
            if missing:
                raise InvalidRequest(
                    f"dataset {self.name!r} table {table!r} has no column(s) {', '.join(missing)}"
                )

    def read(
        self, table: str, columns: Sequence[str], persons: PersonRange | None = None
    ) -> pa.Table:
        """Read ``columns`` of ``table``; a person table only for ``persons`` when given."""
        self._require(table)
        filters = None
        if persons is not None:
            filters = [(PERSON_ID, ">=", persons[0]), (PERSON_ID, "<", persons[1])]
        with self._named():
            return read_parquet(self.location, table, list(columns), filters)

    def person_count(self) -> int:
        """How many distinct persons the ``person`` table holds (kept as schemas are)."""
        self._require("person")
        with self._named():
            stamp = self._stamp("person")
        with self._lock:
            kept = self._counts.get("person")
        if stamp is not None and kept is not None and kept[0] == stamp:
            return kept[1]
        ids = pc.drop_null(self.read("person", [PERSON_ID])[PERSON_ID])
        count = int(pc.count_distinct(ids).as_py())
        if stamp is not None:
            with self._lock:
                self._counts["person"] = (stamp, count)
        return count

    def partitions(self, count: int) -> list[PersonRange]:
        """Split the persons into ``count`` ranges of about equal size (fewer if few persons)."""
        ordered = np.unique(pc.drop_null(self.read("person", [PERSON_ID])[PERSON_ID]).to_numpy())
        cuts = ordered[np.linspace(0, len(ordered), count, endpoint=False).astype(int)]
        # The outer ranges are open-ended, so rows of persons missing from ``person`` still count.
        bounds = [_INT64_MIN, *sorted({int(c) for c in cuts[1:]}), _INT64_MAX]
        return list(itertools.pairwise(bounds))

    def _require(self, table: str) -> None:
        with self._named():
            known = self.table_names
        if table not in known:
            raise ObjectNotFound(f"dataset {self.name!r}: table {table!r} does not exist")

    @contextmanager
    def _named(self) -> Iterator[None]:
        """Put the dataset's name in front of storage errors (they name location and object)."""
        try:
            yield
        except StorageError as exc:
            if exc.message.startswith(f"dataset {self.name!r}"):
                raise
            raise type(exc)(f"dataset {self.name!r}: {exc.message}") from exc


class Catalogue:
    """The datasets a site offers, by name."""

    def __init__(self, datasets: Mapping[str, DatasetConfig]) -> None:
        self._datasets = {
            name: Dataset(name, open_location(cfg.location)) for name, cfg in datasets.items()
        }

    def get(self, name: str) -> Dataset:
        dataset = self._datasets.get(name)
        if dataset is None:
            raise DatasetNotFound(f"this site has no dataset {name!r}")
        return dataset

    def snapshots(self) -> dict[str, str]:
        """Dataset name to snapshot digest; a dataset that cannot be read is reported, not fatal."""
        out: dict[str, str] = {}
        for name, dataset in self._datasets.items():
            try:
                out[name] = dataset.snapshot_digest
            except StorageError as exc:
                out[name] = f"unavailable: {exc.message}"
        return out

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self._datasets.values())
