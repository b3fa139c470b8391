"""Differencing defence: per project, a site refuses a count of a cohort too close to another.

Two released counts whose cohorts differ by one person disclose that person (count A, count
A minus one, subtract). The site therefore keeps, per (project, dataset), every cohort whose
count it released, in a :class:`DifferencingLedger` (SQLite in its state folder; the ids never
leave the site). At release a count is refused when

* **differencing rule**: ``0 < |A Δ B| < k`` for an earlier released cohort B of the same
  project and dataset (A Δ B: persons in exactly one of the two), or
* **complement rule**: ``0 < N - |A| < k``, N being the persons of the dataset (a count of all
  but a few persons discloses those few against the dataset's size).

``k`` is the policy's ``differencing.k``, else its ``min_cell_count``. Only cohorts whose count
was released enter the ledger: refused ones and suppressed ones do not. Refusal reasons name
the rule and ``k``, never ids or the size of a difference.

Cohorts are stored as their sorted person ids (delta-encoded, zlib-compressed), so symmetric
differences are exact; only stored cohorts whose size is within ``k - 1`` of A's are read.
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from fedflow.core import frequency
from fedflow.core.controls import Control
from fedflow.core.sqlitedb import open_shared
from governance.errors import DifferencingLedgerError

__all__ = [
    "COMPLEMENT_RULE",
    "DIFFERENCING_RULE",
    "Cohort",
    "DifferencingLedger",
    "DifferencingPolicy",
    "total_released",
]

__controls__ = (
    Control(
        "GDPR Art. 25",
        "Per project, a count whose cohort is 1 to k-1 persons from an earlier released cohort, "
        "or from the whole dataset, is refused (differencing defence).",
        tests=(
            "tests/executors/test_node_differencing.py::test_a_differencing_attack_one_person_apart_is_refused_per_project",
            "tests/executors/test_node_differencing.py::test_complement_rule_refuses_a_cohort_of_all_but_a_few",
        ),
    ),
    Control(
        "ISO 27001 A.8.11",
        "Near-identical cohorts are refused so their difference cannot single a person out.",
        tests=(
            "tests/governance/test_differencing.py::test_a_cohort_fewer_than_k_persons_from_a_released_one_is_refused",
        ),
    ),
)

DIFFERENCING_RULE = (
    "differencing rule: the cohort differs from an earlier released cohort of this project "
    "by fewer than {k} persons"
)
COMPLEMENT_RULE = "complement rule: the cohort leaves out fewer than {k} of the dataset's persons"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS released (
    job_id      TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    size        INTEGER NOT NULL,
    persons     BLOB NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS released_by_size ON released (project, dataset, size);
"""


class DifferencingPolicy(BaseModel):
    """The policy's ``differencing`` section: on by default, ``k`` defaults to the threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    k: int | None = Field(default=None, ge=2, le=1000)

    def k_for(self, min_cell_count: int) -> int:
        """The ``k`` in force: the section's own, else the site's frequency threshold."""
        return self.k if self.k is not None else min_cell_count


@dataclass(frozen=True)
class Cohort:
    """The persons a job counted (sorted, distinct int64 ids) and the dataset's person count."""

    persons: np.ndarray = field(repr=False)
    population: int

    def __post_init__(self) -> None:
        persons = np.unique(np.asarray(self.persons, dtype=np.int64))
        object.__setattr__(self, "persons", persons)

    @property
    def size(self) -> int:
        return int(self.persons.size)


def total_released(table: pa.Table | None) -> bool:
    """Whether a released frequency table shows its cohort's total (the all-margins cell)."""
    if table is None or frequency.COUNT not in table.column_names:
        return False
    dims = frequency.dimensions(table)
    for row in table.to_pylist():
        if all(row[d] == frequency.MARGIN for d in dims):
            return row[frequency.COUNT] is not None
    return False


class DifferencingLedger:
    """Released cohorts per (project, dataset), kept at the site.

    ``lock`` serialises a release's check and record, so two concurrent releases cannot both
    pass against a ledger that holds neither.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        try:
            self._db = open_shared(path, _SCHEMA)
        except sqlite3.Error as exc:
            raise DifferencingLedgerError(
                f"cannot open the differencing ledger {path.name}: {exc}"
            ) from None

    def refusal(self, *, project: str, dataset: str, cohort: Cohort, k: int) -> str | None:
        """Why a count of ``cohort`` may not be released to ``project``, or None if it may."""
        if 0 < cohort.population - cohort.size < k:
            return COMPLEMENT_RULE.format(k=k)
        rows = self._query(
            "SELECT persons FROM released WHERE project = ? AND dataset = ? "
            "AND size BETWEEN ? AND ?",
            (project, dataset, cohort.size - k + 1, cohort.size + k - 1),
        )
        for (blob,) in rows:
            earlier = _decode(blob)
            common = np.intersect1d(cohort.persons, earlier, assume_unique=True).size
            if 0 < cohort.size + earlier.size - 2 * common < k:
                return DIFFERENCING_RULE.format(k=k)
        return None

    def record(self, *, project: str, dataset: str, job_id: str, cohort: Cohort) -> None:
        """Add a cohort whose count was released (once per job)."""
        self._query(
            "INSERT OR IGNORE INTO released VALUES (?, ?, ?, ?, ?, ?)",
            (
                job_id,
                project,
                dataset,
                cohort.size,
                _encode(cohort.persons),
                datetime.now(UTC).isoformat(),
            ),
        )

    def count(self, *, project: str, dataset: str) -> int:
        """How many released cohorts the ledger holds for ``project`` and ``dataset``."""
        ((n,),) = self._query(
            "SELECT count(*) FROM released WHERE project = ? AND dataset = ?", (project, dataset)
        )
        return int(n)

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise DifferencingLedgerError(
                    f"the differencing ledger {self.path.name} cannot be used: {exc}"
                ) from None


def _encode(persons: np.ndarray) -> bytes:
    deltas = np.diff(persons, prepend=np.int64(0)).astype("<i8")
    return zlib.compress(deltas.tobytes())


def _decode(blob: bytes) -> np.ndarray:
    return np.cumsum(np.frombuffer(zlib.decompress(blob), dtype="<i8")).astype(np.int64)
