"""Prepared partitions: a fit's design is kept, keyed and evicted, by the node (in-process
workers) or by the site's worker processes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from executors.catalogue import Dataset
from executors.cluster import SiteCluster
from executors.config import DaskConfig
from executors.importer import write_dataset
from executors.storage import open_location
from fedflow.core import InvalidRequest, regression
from fedflow.core.registry import default_registry
from flows.analyses.glm_round import design_columns

pytestmark = pytest.mark.integration

COLUMNS = ["y", "x1", "x2"]


def _table(seed: int, rows: int = 3000) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    y = (rng.random(rows) < 1 / (1 + np.exp(-(0.3 + x @ [0.5, -0.4])))).astype(float)
    ids = np.arange(1, rows + 1, dtype=np.int64)
    return pa.table({"person_id": ids, "y": y, "x1": x[:, 0], "x2": x[:, 1]})


def _write(root: Path, table: pa.Table) -> Dataset:
    write_dataset({"analysis": table, "person": table.select(["person_id"])}, root)
    return Dataset("sim", open_location(str(root)))


def _params(
    fit_id: str | None, beta: list[float] | None = None, formula: str = "y ~ x1 + x2"
) -> Any:
    analysis = default_registry().get("glm_round")
    raw: dict[str, Any] = {
        "formula": formula,
        "family": "binomial",
        "data": {"table": "analysis", "columns": dict.fromkeys(COLUMNS, "float")},
    }
    raw["columns"] = design_columns(analysis.parse_params(raw))
    return analysis.parse_params(raw | {"fit_id": fit_id, "beta": beta})


def _direct(table: pa.Table, beta: list[float] | None) -> np.ndarray:
    """XᵀWX of the whole table computed here, without the cluster (the oracle)."""
    analysis = default_registry().get("glm_round")
    return regression.matrices(analysis.local({"analysis": table}, _params(None, beta)))[0]


@pytest.fixture(scope="module", params=["in-process", "processes"])
def cluster(request: pytest.FixtureRequest) -> Any:
    processes = request.param == "processes"
    config = DaskConfig(partitions=3, processes=processes, threads_per_worker=1)
    # Short enough for the eviction test to see entries go; long enough that a loaded machine
    # does not evict them between two runs of another test (1 s did, once in CI).
    site = SiteCluster(config, name="prepared", prepared_ttl=3.0)
    # In-process workers share the node's memory: the node keeps the partitions itself.
    assert ("node" in site.prepared_stats()) is not processes
    yield site
    site.close()


def _totals(cluster: SiteCluster) -> dict[str, int]:
    stats = list(cluster.prepared_stats().values())
    return {k: sum(s[k] for s in stats) for k in ("entries", "hits", "misses")}


def test_rounds_and_later_fits_reuse_the_design_and_equal_the_direct_statistics(
    cluster: SiteCluster, tmp_path: Path
) -> None:
    table = _table(1)
    dataset = _write(tmp_path / "sim", table)
    analysis = default_registry().get("glm_round")
    fit = uuid.uuid4().hex
    before = _totals(cluster)
    beta = None
    for _ in range(3):
        params = _params(fit, beta)
        partial = cluster.run(analysis, params, dataset, analysis.tables(params))
        xtwx, xtwz = regression.matrices(partial)
        np.testing.assert_allclose(xtwx, _direct(table, beta), rtol=1e-12)
        beta = np.linalg.solve(xtwx, xtwz).tolist()
    after = _totals(cluster)
    # Three partitions: prepared in the first round, reused in the next two.
    assert after["misses"] - before["misses"] == 3
    assert after["hits"] - before["hits"] == 6
    # Without a fit id nothing is kept.
    params = _params(None, beta)
    cluster.run(analysis, params, dataset, analysis.tables(params))
    assert _totals(cluster)["misses"] == after["misses"]
    # A later fit of the same model on the same data starts from the kept design.
    params = _params(uuid.uuid4().hex, None)
    partial = cluster.run(analysis, params, dataset, analysis.tables(params))
    np.testing.assert_allclose(regression.matrices(partial)[0], _direct(table, None), rtol=1e-12)
    assert _totals(cluster)["misses"] == after["misses"]
    assert _totals(cluster)["hits"] == after["hits"] + 3


def test_a_changed_dataset_does_not_reuse_the_design_and_idle_ones_are_evicted(
    cluster: SiteCluster, tmp_path: Path
) -> None:
    analysis = default_registry().get("glm_round")
    fit = uuid.uuid4().hex
    dataset = _write(tmp_path / "sim", _table(2))
    beta = [0.1, 0.2, -0.3]
    params = _params(fit, beta)
    cluster.run(analysis, params, dataset, analysis.tables(params))
    misses = _totals(cluster)["misses"]
    # The custodian replaces the data between two rounds of the same fit.
    changed = _table(3)
    time.sleep(0.01)  # a distinct modification time even on coarse clocks
    dataset = _write(tmp_path / "sim", changed)
    partial = cluster.run(analysis, params, dataset, analysis.tables(params))
    assert _totals(cluster)["misses"] == misses + 3
    np.testing.assert_allclose(regression.matrices(partial)[0], _direct(changed, beta), rtol=1e-12)
    # Unused for longer than the time to live (3 s here): the workers drop every entry.
    deadline = time.monotonic() + 15
    while _totals(cluster)["entries"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _totals(cluster)["entries"] == 0


def test_a_design_that_cannot_be_built_is_a_clear_error_and_nothing_is_kept(
    cluster: SiteCluster, tmp_path: Path
) -> None:
    # A binomial model of a continuous column: every partition's design is refused.
    analysis = default_registry().get("glm_round")
    table = _table(4)
    dataset = _write(tmp_path / "sim", table)
    params = _params(uuid.uuid4().hex, formula="x1 ~ x2")
    before = _totals(cluster)
    with pytest.raises(InvalidRequest, match="a binomial outcome must be 0 or 1") as raised:
        cluster.run(analysis, params, dataset, analysis.tables(params))
    assert f"{table['x1'][0].as_py()}" not in str(raised.value)  # no row value in the message
    after = _totals(cluster)
    assert after["entries"] == before["entries"]
    # The same data under a valid model still runs (the refusal left nothing behind).
    good = _params(uuid.uuid4().hex, formula="y ~ x1 + x2")
    partial = cluster.run(analysis, good, dataset, analysis.tables(good))
    np.testing.assert_allclose(regression.matrices(partial)[0], _direct(table, None), rtol=1e-12)


def test_blas_stays_at_one_thread_until_the_last_in_process_cluster_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process rounds run in many threads at once (the node's, and every site's in an
    # in-process federation). BLAS's thread count is process-wide: the first round sets it to
    # one, once, whichever thread it runs in; the last in-process cluster to close restores
    # it (restoring it from round threads after every round slowed later BLAS calls).
    import threading

    import executors.cluster as cluster

    calls: list[str] = []

    class Limit:
        def restore_original_limits(self) -> None:
            calls.append("restore")

    class Controller:
        def limit(self, *, limits: int, user_api: str) -> Limit:
            calls.append(f"{user_api}={limits}")
            return Limit()

    monkeypatch.setattr(cluster, "_blas_controller", Controller)
    monkeypatch.setattr(cluster, "_in_process_open", 0)
    monkeypatch.setattr(cluster, "_blas_limit", None)
    cluster._in_process_cluster(opened=True)
    cluster._in_process_cluster(opened=True)
    rounds = [threading.Thread(target=cluster._one_blas_thread) for _ in range(4)]
    for thread in rounds:
        thread.start()
    for thread in rounds:
        thread.join(10)
    cluster._one_blas_thread()
    assert calls == ["blas=1"]
    cluster._in_process_cluster(opened=False)
    assert calls == ["blas=1"]  # another in-process cluster is still open
    cluster._in_process_cluster(opened=False)
    assert calls == ["blas=1", "restore"]
    cluster._in_process_cluster(opened=True)
    cluster._in_process_cluster(opened=False)
    assert calls == ["blas=1", "restore"]  # no round ran: nothing to restore


def test_an_in_process_site_splits_its_rounds_only_when_alone_in_its_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # In-process sites share the process's cores: alone (a site service), a site splits a
    # kept round over its threads; beside other in-process sites, whose rounds run at the same
    # time, it computes the round as one partition. The statistics are the same either way.
    import executors.cluster as cluster

    monkeypatch.setattr(cluster, "_in_process_open", 0)  # the other tests' clusters aside
    table = _table(2)
    dataset = _write(tmp_path / "sim", table)
    analysis = default_registry().get("glm_round")
    config = DaskConfig(threads_per_worker=2)

    def kept_after_a_round(site: SiteCluster) -> int:
        params = _params(uuid.uuid4().hex)
        partial = site.run(analysis, params, dataset, analysis.tables(params))
        np.testing.assert_allclose(
            regression.matrices(partial)[0], _direct(table, None), rtol=1e-12
        )
        return site.prepared_stats()["node"]["entries"]

    alone = SiteCluster(config, name="alone")
    try:
        assert kept_after_a_round(alone) == 2  # one partition per thread
        beside = SiteCluster(config, name="beside")
        try:
            assert kept_after_a_round(alone) == 2 + 1  # one more: the whole site at once
        finally:
            beside.close()
    finally:
        alone.close()
