"""One federation, one site per store: a local folder, S3 (moto), Azure Blob (Azurite), GCS.

The Eunomia GiBleed CDM is split by person across four sites. The same analysis runs twice:
once with every site reading a local folder, once with three sites reading their tables from
the emulators. The results must be identical, and equal to the pooled answer.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from executors import InProcessSiteTransport, SiteConfig, SiteNode
from executors.errors import CorruptObject, ObjectNotFound, StorageAccessDenied
from fedflow.core.messages import JobState, Request
from fedflow.core.registry import default_registry
from flows import connect, run_analysis
from flows.demo import (
    DemoSite,
    compare_with_pooled,
    pool,
    pooled_answer,
)

pytestmark = pytest.mark.integration

# The tables characterization reads (and nothing else, to keep the copies small).
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "concept_ancestor": "*",
}
SITES = tuple(
    DemoSite(name, jurisdiction, share, 10, ("characterization",), tables=TABLES)
    for name, jurisdiction, share in (
        ("local-site", "EU", 0.30),
        ("s3-site", "US", 0.25),
        ("az-site", "UK", 0.25),
        ("gs-site", "EU", 0.20),
    )
)
STORE_OF = {"s3-site": "s3", "az-site": "az", "gs-site": "gs"}
GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
# Persons with GI bleeding by age band and gender: reads person and condition tables by person
# range on every site's Dask workers, and the vocabulary (concept_ancestor) whole.
ANALYSES = (("characterization", {**GI_BLEED, "age_band_width": 10}),)


def _tables(eunomia: dict[str, Any]) -> dict[str, Any]:
    return {name: eunomia[name] for name in TABLES}


def _run_all(profile: Path) -> dict[str, Any]:
    results = {}
    with connect(profile) as session:
        for name, params in ANALYSES:
            result = run_analysis(name, params, federation=session, min_sites=len(SITES))
            assert set(result.sites_contributing) == {s.name for s in SITES}, result.outcomes
            results[name] = result.result
    return results


def test_same_result_from_a_folder_and_from_each_cloud(
    make_federation: Callable[..., Any],
    eunomia: dict[str, Any],
    get_store: Callable[[str], Any],
    prefect_server: str,
) -> None:
    profile, by_site = make_federation(SITES, tables=_tables(eunomia))
    # Copy three sites' tables into the emulators (site files still name the local folders).
    cloud_urls = {}
    for site, scheme in STORE_OF.items():
        store = get_store(scheme)
        for path in sorted((profile.parent / "sites" / site / "data" / "omop").glob("*.parquet")):
            store.put(f"{site}/omop/{path.name}", path.read_bytes())
        cloud_urls[site] = store.url(f"{site}/omop")
    local = _run_all(profile)

    # Point the three sites at the emulators, with no local copy left to fall back on.
    for site, url in cloud_urls.items():
        home = profile.parent / "sites" / site
        shutil.rmtree(home / "data")
        config = yaml.safe_load((home / "site.yaml").read_text())
        config["datasets"]["omop"]["location"] = url
        (home / "site.yaml").write_text(yaml.safe_dump(config))
    clouds = _run_all(profile)

    pooled = pool(list(by_site.values()))
    for name, params in ANALYSES:
        assert clouds[name].equals(local[name]), name
        verdict = compare_with_pooled(clouds[name], pooled_answer(name, params, pooled))
        assert not verdict["different"], (name, verdict["different"])
        assert verdict["equal"], name


def test_bad_storage_is_named_and_the_site_keeps_serving(
    make_federation: Callable[..., Any],
    eunomia: dict[str, Any],
    get_store: Callable[[str], Any],
) -> None:
    """A site with one healthy dataset in S3 and four broken ones."""
    site = SITES[1]
    profile, _ = make_federation((site,), tables=_tables(eunomia))
    home = profile.parent / "sites" / site.name
    store = get_store("s3")
    prefix = f"keeps-serving-{uuid.uuid4().hex[:8]}"
    for path in sorted((home / "data" / "omop").glob("*.parquet")):
        data = path.read_bytes()
        store.put(f"{prefix}/omop/{path.name}", data)
        if path.name == "condition_occurrence.parquet":
            store.put(f"{prefix}/corrupt/{path.name}", data[: len(data) // 2])
        else:
            store.put(f"{prefix}/corrupt/{path.name}", data)
            store.put(f"{prefix}/partial/{path.name}", data)
    locations = {
        "omop": store.url(f"{prefix}/omop"),
        "nobucket": "s3://no-such-bucket/omop",
        "denied": "s3://restricted/omop",  # the site's IAM policy denies this bucket
        "partial": store.url(f"{prefix}/partial"),
        "corrupt": store.url(f"{prefix}/corrupt"),
    }
    config = yaml.safe_load((home / "site.yaml").read_text())
    config["datasets"] = {name: {"location": url} for name, url in locations.items()}
    (home / "site.yaml").write_text(yaml.safe_dump(config))
    policy = yaml.safe_load((home / "policy.yaml").read_text())
    policy["datasets"] = {name: policy["datasets"]["omop"] for name in locations}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy))

    token = (profile.parent / "researcher.token").read_text().strip()
    analysis = default_registry().get("characterization")
    params = {**GI_BLEED, "age_band_width": 10}

    def request(dataset: str) -> Request:
        return Request(analysis=analysis.ref(), params=params, dataset=dataset, token=token)

    expected = {
        "nobucket": (
            ObjectNotFound,
            r"dataset 'nobucket': .*s3://no-such-bucket/omop: the bucket does not exist",
        ),
        "denied": (
            StorageAccessDenied,
            r"dataset 'denied': .*s3://restricted/omop: access denied \(AccessDenied\)",
        ),
        "partial": (ObjectNotFound, r"dataset 'partial': table 'condition_occurrence'"),
        "corrupt": (CorruptObject, r"dataset 'corrupt': object 'condition_occurrence\.parquet'"),
    }
    transport = InProcessSiteTransport(SiteNode(SiteConfig.load(home / "site.yaml")), owned=True)
    try:
        info = transport.info().datasets
        assert info["nobucket"].startswith("unavailable:")
        assert info["denied"].startswith("unavailable:")
        assert not info["omop"].startswith("unavailable:")
        for dataset, (error, message) in expected.items():
            with pytest.raises(error, match=message):
                transport.check(request(dataset))
            assert transport.check(request("omop")).allowed  # the healthy one still passes
        # ... and is still served, start to finish.
        job = transport.submit(request("omop"))
        assert transport.wait(job, 60).state is JobState.QUARANTINED
    finally:
        transport.close()
