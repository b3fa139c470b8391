"""The site's own Dask cluster, and how a job runs on it.

A job reads the shared (non-person) tables once, runs ``local`` on every person partition on
the workers, and merges the partials in a tree on the workers; only the merged partial comes
back to the site node. The dashboard is off: a site exposes nothing it does not need.

For an analysis that counts a cohort (:class:`~fedflow.core.CountsCohort`),
:meth:`SiteCluster.run_with_members` also brings back the sorted person ids of the cohort the
job counted: each partition returns its partial and its ids, the tree merges partials as usual
and concatenates the ids. The ids stay at the site (the node keeps them in quarantine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask
import numpy as np
import pyarrow as pa
from distributed import Client, Future, LocalCluster

from executors.catalogue import Dataset, PersonRange
from executors.config import DaskConfig
from executors.storage import open_location
from fedflow.core import Analysis, CountsCohort, TableColumns

__all__ = ["SiteCluster"]

log = logging.getLogger(__name__)

MERGE_FAN_IN = 4
LOOPBACK_ANY_PORT = "127.0.0.1:0"
# The statistical profiler only feeds the dashboard, which is off. It also calls
# sys._current_frames() every 10 ms from each worker's event loop; with several in-process
# clusters (the demo, the tests) two such calls can meet a garbage-collector callback and
# deadlock the interpreter on CPython before 3.11.9 (cpython#106883): every thread then waits
# for the GIL.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


class SiteCluster:
    """A Dask client to the site's LocalCluster (started here) or to an existing scheduler."""

    def __init__(self, config: DaskConfig, *, name: str) -> None:
        self.config = config
        self._cluster: LocalCluster | None = None
        if config.scheduler_address:
            self.client = Client(config.scheduler_address, set_as_default=False)
        else:
            # In-process workers talk over inproc:// and open no port; worker processes listen
            # on loopback only. The scheduler and workers still serve HTTP (health, metrics):
            # bound to loopback, with the dashboard off, so a site exposes nothing by default.
            network = {"host": "127.0.0.1"} if config.processes else {}
            with dask.config.set(WORKER_CONFIG):
                self._cluster = LocalCluster(
                    n_workers=config.workers,
                    threads_per_worker=config.threads_per_worker,
                    processes=config.processes,
                    dashboard_address=LOOPBACK_ANY_PORT,
                    worker_dashboard_address=LOOPBACK_ANY_PORT,
                    scheduler_kwargs={"dashboard": False},
                    name=name,
                    **network,
                )
            self.client = Client(self._cluster, set_as_default=False)
        log.info("site %s uses Dask scheduler %s", name, self.address)

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    @property
    def threads(self) -> int:
        return sum(self.client.nthreads().values()) or 1

    def run(
        self,
        analysis: Analysis[Any],
        params: Any,
        dataset: Dataset,
        tables: TableColumns,
    ) -> pa.Table:
        """Run ``analysis`` over every partition of ``dataset`` and return the merged partial."""
        result: pa.Table = self._submit(
            _run_partition, _merge, analysis, params, dataset, tables
        ).result()
        return result

    def run_with_members(
        self,
        analysis: Analysis[Any],
        params: Any,
        dataset: Dataset,
        tables: TableColumns,
    ) -> tuple[pa.Table, np.ndarray]:
        """Like :meth:`run`, and the sorted, distinct person ids of the cohort it counted."""
        if not isinstance(analysis, CountsCohort):
            raise TypeError(f"{analysis.name} does not count a cohort")
        partial, members = self._submit(
            _run_partition_members, _merge_members, analysis, params, dataset, tables
        ).result()
        return partial, np.unique(members)

    def _submit(
        self,
        run: Callable[..., Any],
        merge: Callable[..., Any],
        analysis: Analysis[Any],
        params: Any,
        dataset: Dataset,
        tables: TableColumns,
    ) -> Future:
        person_tables = {t: list(c) for t, c in tables.items() if dataset.is_person_table(t)}
        shared_tables = {t: list(c) for t, c in tables.items() if t not in person_tables}
        url = dataset.location.url
        shared = self.client.submit(_read_shared, url, dataset.name, shared_tables, pure=False)
        count = self.config.partitions or 2 * self.threads
        ranges = dataset.partitions(count) if person_tables else [None]
        futures: list[Future] = [
            self.client.submit(
                run, analysis, params, url, dataset.name, person_tables, rng, shared, pure=False
            )
            for rng in ranges
        ]
        while len(futures) > 1:
            futures = [
                self.client.submit(merge, analysis, *futures[i : i + MERGE_FAN_IN], pure=False)
                for i in range(0, len(futures), MERGE_FAN_IN)
            ]
        return futures[0]

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


# -- functions that run on the workers ---------------------------------------------------------


def _dataset(url: str, name: str) -> Dataset:
    return Dataset(name, open_location(url))


def _read_shared(url: str, name: str, tables: Mapping[str, Sequence[str]]) -> dict[str, pa.Table]:
    dataset = _dataset(url, name)
    return {t: dataset.read(t, c) for t, c in tables.items()}


def _read_partition(
    url: str,
    name: str,
    tables: Mapping[str, Sequence[str]],
    persons: PersonRange | None,
    shared: Mapping[str, pa.Table],
) -> dict[str, pa.Table]:
    """The shared tables and the person tables' rows of one partition."""
    dataset = _dataset(url, name)
    return {**shared, **{t: dataset.read(t, c, persons) for t, c in tables.items()}}


def _run_partition(
    analysis: Analysis[Any],
    params: Any,
    url: str,
    name: str,
    tables: Mapping[str, Sequence[str]],
    persons: PersonRange | None,
    shared: Mapping[str, pa.Table],
) -> pa.Table:
    return analysis.local(_read_partition(url, name, tables, persons, shared), params)


def _merge(analysis: Analysis[Any], *partials: pa.Table) -> pa.Table:
    return analysis.merge(list(partials))


def _run_partition_members(
    analysis: Analysis[Any],
    params: Any,
    url: str,
    name: str,
    tables: Mapping[str, Sequence[str]],
    persons: PersonRange | None,
    shared: Mapping[str, pa.Table],
) -> tuple[pa.Table, np.ndarray]:
    assert isinstance(analysis, CountsCohort)
    data = _read_partition(url, name, tables, persons, shared)
    partial, members = analysis.local_members(data, params)
    ids = np.asarray(members.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    return partial, np.unique(ids)


def _merge_members(
    analysis: Analysis[Any], *parts: tuple[pa.Table, np.ndarray]
) -> tuple[pa.Table, np.ndarray]:
    merged = analysis.merge([partial for partial, _ in parts])
    return merged, np.concatenate([ids for _, ids in parts])
