"""The site's Dask cluster: the tree merge gives the same partial however data is partitioned."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from executors.catalogue import Dataset
from executors.cluster import SiteCluster
from executors.config import DaskConfig
from executors.importer import write_dataset
from executors.storage import open_location
from fedflow.core.registry import default_registry

pytestmark = pytest.mark.integration


def test_partials_do_not_depend_on_partitioning(tmp_path: Path, eunomia) -> None:  # type: ignore[no-untyped-def]
    write_dataset(eunomia, tmp_path / "omop")
    dataset = Dataset("omop", open_location(str(tmp_path / "omop")))
    analysis = default_registry().get("characterization")
    params = analysis.parse_params(
        {"domain": "condition", "concept_ids": [81151], "age_band_width": 10}
    )
    tables = analysis.tables(params)
    results = []
    for partitions in (1, 3, 9):
        cluster = SiteCluster(DaskConfig(partitions=partitions), name=f"p{partitions}")
        try:
            results.append(cluster.run(analysis, params, dataset, tables))
        finally:
            cluster.close()
    assert results[0].equals(results[1]) and results[1].equals(results[2])


def test_cohort_members_are_the_cohort_whatever_the_partitioning(tmp_path: Path, eunomia) -> None:  # type: ignore[no-untyped-def]
    write_dataset(eunomia, tmp_path / "omop")
    dataset = Dataset("omop", open_location(str(tmp_path / "omop")))
    analysis = default_registry().get("cohort_count")
    params = analysis.parse_params(
        {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
    )
    pooled = analysis.cohort(eunomia, params)["person_id"].sort().to_list()  # type: ignore[attr-defined]
    for partitions in (1, 5):
        cluster = SiteCluster(DaskConfig(partitions=partitions), name=f"m{partitions}")
        try:
            partial, members = cluster.run_with_members(
                analysis, params, dataset, analysis.tables(params)
            )
        finally:
            cluster.close()
        assert members.tolist() == pooled
        assert partial.to_pylist() == [{"count": len(pooled)}]
    cluster = SiteCluster(DaskConfig(), name="m0")
    try:
        with pytest.raises(TypeError, match="does not count a cohort"):
            summary = default_registry().get("numeric_summary")
            cluster.run_with_members(summary, None, dataset, {})
    finally:
        cluster.close()


def test_site_cluster_listens_on_loopback_only() -> None:
    cluster = SiteCluster(DaskConfig(), name="quiet")
    try:
        listening = [
            c.laddr.ip
            for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(ip in ("127.0.0.1", "::1") for ip in listening)
    finally:
        cluster.close()


def test_a_site_can_use_an_existing_multi_process_scheduler(tmp_path: Path, eunomia) -> None:  # type: ignore[no-untyped-def]
    """The site config's scheduler_address: work runs in separate worker processes."""
    from distributed import LocalCluster

    write_dataset(eunomia, tmp_path / "omop")
    dataset = Dataset("omop", open_location(str(tmp_path / "omop")))
    analysis = default_registry().get("cohort_count")
    params = analysis.parse_params({"domain": "condition", "concept_ids": [192671]})
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as existing:
        remote = SiteCluster(
            DaskConfig(scheduler_address=existing.scheduler_address), name="remote"
        )
        try:
            assert remote.address == existing.scheduler_address
            assert remote.threads == 2
            partial = remote.run(analysis, params, dataset, analysis.tables(params))
        finally:
            remote.close()
    local = SiteCluster(DaskConfig(), name="local")
    try:
        assert partial.equals(local.run(analysis, params, dataset, analysis.tables(params)))
    finally:
        local.close()


def test_loading_the_analysis_library_imports_no_orchestration_code() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from fedflow.core.registry import default_registry\n"
        "list(default_registry())\n"
        "import executors.node\n"
        "names = ('prefect', 'flows.federated', 'flows.federation')\n"
        "bad = [m for m in names if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
