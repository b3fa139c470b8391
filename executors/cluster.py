"""The site's own Dask cluster, and how a job runs on it.

A job reads the shared (non-person) tables once, runs ``local`` on every person partition on
the workers, and merges the partials in a tree on the workers; only the merged partial comes
back to the site node. The dashboard is off: a site exposes nothing it does not need.

For an analysis that counts a cohort (:class:`~fedflow.core.CountsCohort`),
:meth:`SiteCluster.run_with_members` also brings back the sorted person ids of the cohort the
job counted: each partition returns its partial and its ids, the tree merges partials as usual
and concatenates the ids. The ids stay at the site (the node keeps them in quarantine).

An iterative method (the exact GLM, the GWAS) runs the same analysis on the same data round
after round with new coefficients. An analysis that implements :class:`PreparedAnalysis` splits
``local`` into ``prepare`` (read and derive the partition, build the design: the costly part)
and ``local_prepared`` (the round's arithmetic). Each prepared partition is kept
(:class:`PreparedCache`) under a key made of the analysis and its code digest, the analysis's
``prepared_key`` (every parameter that shapes the design), the dataset's snapshot digest and a
fresh listing of its files (size and modification time, read at every job, so a changed
dataset never reuses a stale design) and the partition's person range. An entry is dropped
when it has not been used for ``prepared_ttl`` seconds, and the least recently used entries go
first when the entries exceed ``prepared_bytes``. The gates still run on every job (the node
re-checks every request before it reaches here).

Where the prepared partitions are kept depends on where the workers are:

- **In-process workers** (a LocalCluster without ``processes``, the default): the node and
  the workers share one memory, so the node keeps the partitions the workers prepared and
  computes each later round itself, in its own threads. A round then costs its arithmetic,
  not a Dask round trip per partition (tasks, scheduler transitions and a merge tree for
  about 10 ms of arithmetic on 100,000 rows).
- **Worker processes or an existing scheduler**: each worker keeps its partitions (a worker
  plugin), each partition goes to the same worker every round, and only the merged partial
  comes back. What is kept never leaves the site's workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, Protocol, runtime_checkable

import dask
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from distributed import Client, Future, LocalCluster, WorkerPlugin, get_worker
from threadpoolctl import ThreadpoolController

from executors.catalogue import Dataset, PersonRange
from executors.config import DaskConfig
from executors.storage import open_location
from fedflow.core import Analysis, CountsCohort, TableColumns, digest_json

__all__ = ["PreparedAnalysis", "PreparedCache", "SiteCluster"]

log = logging.getLogger(__name__)

MERGE_FAN_IN = 4
LOOPBACK_ANY_PORT = "127.0.0.1:0"
# The statistical profiler only feeds the dashboard, which is off. It also calls
# sys._current_frames() every 10 ms from each worker's event loop; with several in-process
# clusters (the demo, the tests) two such calls can meet a garbage-collector callback and
# deadlock the interpreter on CPython before 3.11.9 (cpython#106883): every thread then waits
# for the GIL.
# The other periodic callbacks of a scheduler and its workers (tick every 20 ms, system
# monitor every 500 ms, memory monitor every 100 ms, work stealing every 100 ms) feed
# diagnostics a site does not serve; at their defaults ten idle in-process site clusters
# burn 27% of a core, with these intervals 5.5% (measured on 2 cores).
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.work-stealing-interval": "1s",
}
PREPARED_TTL = 120.0
"""Seconds an unused prepared partition stays in a worker's memory."""
PREPARED_BYTES = 4 << 30
"""Bytes of prepared partitions one worker keeps at most (least recently used go first)."""


@runtime_checkable
class PreparedAnalysis(Protocol):
    """Optional extension of the analysis contract: a partition prepared once, used each round.

    ``local(tables, params)`` must equal ``local_prepared(prepare(tables, params), params)``.
    ``prepared_key`` names what ``prepare`` depends on among the parameters (None: keep
    nothing for these parameters); the prepared value needs an ``nbytes`` attribute.
    """

    def prepared_key(self, params: Any) -> str | None: ...

    def prepare(self, tables: Mapping[str, pa.Table], params: Any) -> Any: ...

    def local_prepared(self, prepared: Any, params: Any) -> pa.Table: ...


class PreparedCache(WorkerPlugin):
    """Prepared partitions, dropped after ``ttl`` idle s and beyond ``max_bytes``.

    A worker plugin on worker processes; the node's own store with in-process workers
    (:meth:`start` and :meth:`stop` then stand for ``setup`` and ``teardown``).
    """

    name = "fedflow-prepared"

    def __init__(self, ttl: float = PREPARED_TTL, max_bytes: int = PREPARED_BYTES) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Any, int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.hits = self.misses = self.evictions = 0

    def __getstate__(self) -> dict[str, Any]:
        """Only the settings travel to the workers; each builds its own entries and lock."""
        return {"ttl": self.ttl, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ttl"], state["max_bytes"])  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        self.start()

    def teardown(self, worker: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Sweep idle entries every quarter of ``ttl`` (at least every 50 ms), in a thread."""
        threading.Thread(
            target=self._sweep_until_stopped, name="prepared-sweeper", daemon=True
        ).start()

    def stop(self) -> None:
        """Stop sweeping and drop every entry."""
        self._stopped.set()
        with self._lock:
            self._entries.clear()

    def _sweep_until_stopped(self) -> None:
        while not self._stopped.wait(max(self.ttl / 4, 0.05)):
            self.sweep()

    def get(self, key: str) -> Any:
        """The prepared value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or time.monotonic() - entry[2] > self.ttl:
                self.misses += 1
                return None
            self._entries[key] = (entry[0], entry[1], time.monotonic())
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: str, value: Any) -> None:
        size = int(getattr(value, "nbytes", 0))
        with self._lock:
            self._entries[key] = (value, size, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self._total() > self.max_bytes:
                self._entries.popitem(last=False)
                self.evictions += 1
        self.sweep()

    def sweep(self) -> None:
        """Drop the entries not used for ``ttl`` seconds."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, (_, _, used) in self._entries.items() if now - used > self.ttl]:
                del self._entries[key]
                self.evictions += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._total(),
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }

    def _total(self) -> int:
        return sum(size for _, size, _ in self._entries.values())


class SiteCluster:
    """A Dask client to the site's LocalCluster (started here) or to an existing scheduler."""

    def __init__(
        self,
        config: DaskConfig,
        *,
        name: str,
        prepared_ttl: float = PREPARED_TTL,
        prepared_bytes: int = PREPARED_BYTES,
    ) -> None:
        self.config = config
        self._cluster: LocalCluster | None = None
        self._ranges: dict[tuple[str, str, int], list[PersonRange]] = {}
        self._kinds: dict[tuple[str, str], dict[str, bool]] = {}
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
        self._kept: PreparedCache | None = None
        self._kept_threads: ThreadPoolExecutor | None = None
        if self._cluster is not None and not config.processes:
            self._kept = PreparedCache(prepared_ttl, prepared_bytes)
            self._kept.start()
            self._kept_threads = ThreadPoolExecutor(
                config.threads, thread_name_prefix=f"{name}-round"
            )
            _in_process_cluster(opened=True)
        else:
            self.client.register_plugin(PreparedCache(prepared_ttl, prepared_bytes))
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
        if isinstance(analysis, PreparedAnalysis):
            key = analysis.prepared_key(params)
            if key is not None and self._kept is not None:
                return self._run_kept(analysis, params, key, dataset, tables)
            if key is not None:
                prepared: pa.Table = self._submit_prepared(
                    analysis, params, key, dataset, tables
                ).result()
                return prepared
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
        ranges: list[PersonRange | None] = (
            list(self._partitions(dataset, _listing(dataset), count)) if person_tables else [None]
        )
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

    def prepared_stats(self) -> dict[str, dict[str, int]]:
        """Prepared partitions kept (entries, bytes), hits, misses and evictions: per worker,
        or the node's (key ``"node"``) with in-process workers."""
        if self._kept is not None:
            return {"node": self._kept.stats()}
        stats: dict[str, dict[str, int]] = self.client.run(_prepared_stats)
        return stats

    def _prepared_keys(
        self, analysis: Any, key: str, dataset: Dataset, tables: TableColumns, count: int
    ) -> tuple[dict[str, list[str]], dict[str, list[str]], list[PersonRange | None], list[str]]:
        """Person and shared tables, the person ranges and each range's key in the store."""
        url = dataset.location.url
        files = _listing(dataset)
        kinds = self._person_tables(dataset, files, tables)
        person_tables = {t: list(c) for t, c in tables.items() if kinds[t]}
        shared_tables = {t: list(c) for t, c in tables.items() if t not in person_tables}
        ranges: list[PersonRange | None] = (
            list(self._partitions(dataset, files, count)) if person_tables else [None]
        )
        base = {
            "analysis": [analysis.name, analysis.version, analysis.ref().code_digest],
            "params": key,
            "dataset": [dataset.name, url, dataset.snapshot_digest, files],
            "tables": {t: sorted(c) for t, c in tables.items()},
        }
        keys = [digest_json({**base, "persons": rng}) for rng in ranges]
        return person_tables, shared_tables, ranges, keys

    def _run_kept(
        self, analysis: Any, params: Any, key: str, dataset: Dataset, tables: TableColumns
    ) -> pa.Table:
        """A prepared analysis with in-process workers: the workers prepare the partitions the
        node does not hold yet, the node keeps them and computes the round in its threads."""
        assert self._kept is not None and self._kept_threads is not None
        count = self.config.partitions or _kept_partitions(self.config.threads)
        person_tables, shared_tables, ranges, keys = self._prepared_keys(
            analysis, key, dataset, tables, count
        )
        prepared = [self._kept.get(k) for k in keys]
        missing = [i for i, value in enumerate(prepared) if value is None]
        if missing:
            url = dataset.location.url
            futures = [
                self.client.submit(
                    _prepare,
                    analysis,
                    params,
                    url,
                    dataset.name,
                    person_tables,
                    shared_tables,
                    ranges[i],
                    pure=False,
                )
                for i in missing
            ]
            for i, value in zip(missing, self.client.gather(futures), strict=True):
                self._kept.put(keys[i], value)
                prepared[i] = value
        _one_blas_thread()
        if len(prepared) == 1:  # one partition (a site among others in this process): no
            # hand-off to a round thread and back, and nothing to merge, as over Dask
            alone: pa.Table = _on_a_core(analysis, prepared[0], params)
            return alone
        partials = list(
            self._kept_threads.map(lambda value: _on_a_core(analysis, value, params), prepared)
        )
        merged: pa.Table = analysis.merge(partials)
        return merged

    def _submit_prepared(
        self,
        analysis: Any,
        params: Any,
        key: str,
        dataset: Dataset,
        tables: TableColumns,
    ) -> Future:
        """Submit a prepared analysis: one task per partition, on the same worker every round."""
        url = dataset.location.url
        threads = self.client.nthreads()
        workers = sorted(threads)
        count = self.config.partitions or 2 * (sum(threads.values()) or 1)
        person_tables, shared_tables, ranges, keys = self._prepared_keys(
            analysis, key, dataset, tables, count
        )
        futures: list[Future] = [
            self.client.submit(
                _run_prepared,
                analysis,
                params,
                keys[i],
                url,
                dataset.name,
                person_tables,
                shared_tables,
                rng,
                pure=False,
                workers=[workers[i % len(workers)]],
                allow_other_workers=True,
            )
            for i, rng in enumerate(ranges)
        ]
        while len(futures) > 1:
            futures = [
                self.client.submit(_merge, analysis, *futures[i : i + MERGE_FAN_IN], pure=False)
                for i in range(0, len(futures), MERGE_FAN_IN)
            ]
        return futures[0]

    def _person_tables(self, dataset: Dataset, files: str, tables: TableColumns) -> dict[str, bool]:
        """Which tables have a person_id column, read from their footers once per listing."""
        known = self._kinds.setdefault((dataset.location.url, files), {})
        if len(self._kinds) > 16:
            self._kinds.clear()
            known = self._kinds.setdefault((dataset.location.url, files), {})
        for table in tables:
            if table not in known:
                known[table] = dataset.is_person_table(table)
        return {table: known[table] for table in tables}

    def _partitions(self, dataset: Dataset, files: str, count: int) -> list[PersonRange]:
        """The dataset's person ranges, read once per listing of its files."""
        key = (dataset.location.url, files, count)
        if key not in self._ranges:
            if len(self._ranges) >= 16:
                self._ranges.clear()
            self._ranges[key] = dataset.partitions(count)
        return self._ranges[key]

    def close(self) -> None:
        if self._kept is not None and self._kept_threads is not None:
            self._kept_threads.shutdown()
            self._kept.stop()
            _in_process_cluster(opened=False)
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


# -- the node's own round threads --------------------------------------------------------------


_CORES = threading.BoundedSemaphore(len(os.sched_getaffinity(0)) or 1)
"""One permit per core this process may run on, shared by every in-process site's rounds."""


def _on_a_core(analysis: Any, prepared: Any, params: Any) -> pa.Table:
    """A prepared partition's round, computed while holding one of the process's cores.

    The in-process sites of a federation compute their rounds at once, two or more threads
    each. Numpy releases the GIL inside each operation and takes it back after, so many more
    computing threads than cores queue for the GIL after every operation, each waiting out
    Python's switch interval: ten sites of two threads on two cores took four times as long
    per round as one site after another (``BENCHMARKS.md``). With a permit per core they
    compute as fast as the cores allow, in turn.
    """
    with _CORES:
        table: pa.Table = analysis.local_prepared(prepared, params)
    return table


_in_process_lock = threading.Lock()
_in_process_open = 0
_blas_limit: Any = None


def _one_blas_thread() -> None:
    """BLAS on one thread from the first in-process round until the last in-process site
    cluster closes (:func:`_in_process_cluster`).

    The node's round threads, and the other sites' in an in-process federation, are the
    parallelism, as Dask's worker threads are (Dask starts its worker processes with one BLAS
    thread for the same reason); a multi-threaded BLAS under them only spins. The limit is
    process-wide and set once: restoring it after every round, from the round's thread,
    left every thread that had done so making later BLAS calls slow (OpenBLAS 0.3.31): two
    threads computing ten sites' rounds took 60-84 ms instead of 36.
    """
    global _blas_limit
    with _in_process_lock:
        if _blas_limit is None:
            _blas_limit = _blas_controller().limit(limits=1, user_api="blas")


def _in_process_cluster(opened: bool) -> None:
    """Count the open in-process site clusters; the last to close restores BLAS's threads."""
    global _in_process_open, _blas_limit
    with _in_process_lock:
        _in_process_open += 1 if opened else -1
        if _in_process_open == 0 and _blas_limit is not None:
            _blas_limit.restore_original_limits()
            _blas_limit = None


def _kept_partitions(threads: int) -> int:
    """How many partitions an in-process site splits a prepared analysis into by default: one
    per thread when it is the process's only in-process site, else one.

    In-process sites share the process's cores. In a federation of them, their rounds already
    run side by side (the session's site threads); splitting each site's round as well only
    queues its partitions for the same cores and adds a merge and two thread handoffs a round
    (ten sites of 100k rows: 117-119 ms a step round in two partitions each, 101-103 ms in
    one). A site alone in its process (a site service) splits over its threads.
    """
    with _in_process_lock:
        alone = _in_process_open <= 1
    return threads if alone else 1


@cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


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


def _listing(dataset: Dataset) -> str:
    """Digest of the dataset's files by path, size and modification time (no content read)."""
    location = dataset.location
    selector = pafs.FileSelector(location.root, recursive=True)
    infos = location.filesystem.get_file_info(selector)
    return digest_json(
        sorted((i.path, i.size, i.mtime_ns) for i in infos if i.type == pafs.FileType.File)
    )


def _cache() -> PreparedCache | None:
    try:
        plugin = get_worker().plugins.get(PreparedCache.name)
    except ValueError:  # not on a worker
        return None
    return plugin if isinstance(plugin, PreparedCache) else None


def _prepared_stats(dask_worker: Any) -> dict[str, int]:
    plugin = dask_worker.plugins.get(PreparedCache.name)
    return plugin.stats() if isinstance(plugin, PreparedCache) else {}


def _prepare(
    analysis: Any,
    params: Any,
    url: str,
    name: str,
    tables: Mapping[str, Sequence[str]],
    shared_tables: Mapping[str, Sequence[str]],
    persons: PersonRange | None,
) -> Any:
    """The partition read and prepared, on a worker: kept there, or by the node (in-process)."""
    shared = _read_shared(url, name, shared_tables)
    return analysis.prepare(_read_partition(url, name, tables, persons, shared), params)


def _run_prepared(
    analysis: Any,
    params: Any,
    key: str,
    url: str,
    name: str,
    tables: Mapping[str, Sequence[str]],
    shared_tables: Mapping[str, Sequence[str]],
    persons: PersonRange | None,
) -> pa.Table:
    """The partition's partial from its prepared value, prepared (and kept) on a miss."""
    cache = _cache()
    prepared = None if cache is None else cache.get(key)
    if prepared is None:
        prepared = _prepare(analysis, params, url, name, tables, shared_tables, persons)
        if cache is not None:
            cache.put(key, prepared)
    result: pa.Table = analysis.local_prepared(prepared, params)
    return result


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
