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
