"""Beacon v2 requests and responses over the federation, and genotype sites for trying it.

:func:`query_beacon` takes a Beacon v2 request document (``query.requestParameters`` and
``query.requestedGranularity``), runs :class:`~flows.analyses.beacon.BeaconVariant` over the
federation and returns a Beacon v2 response (``meta.returnedGranularity``,
``responseSummary.exists`` and, at count granularity, ``numTotalResults``), with each site's
outcome under ``info``. :func:`split_by_population` cuts a genotype store
(:mod:`harmonize.vcf`) into site datasets by population label, and :func:`build_genotype_demo`
writes a federation of three 1000 Genomes sites from the shared data (``sample.vcf.gz`` split
by super-population) for the examples and the tests::

    python -m flows.analyses.beacon            # a few Beacon v2 queries
    python -m flows.analyses.allele_frequency  # allele frequencies by super-population
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from fedflow.core import InvalidParameters
from flows.federated import run_analysis
from flows.federation import FederationSession
from flows.outcomes import FederatedResult

__all__ = [
    "API_VERSION",
    "DEMO_GROUPS",
    "GENOTYPE_TABLES",
    "beacon_params",
    "beacon_response",
    "build_genotype_demo",
    "query_beacon",
    "read_genotype_store",
    "run_genotype_example",
    "split_by_population",
]

API_VERSION = "v2.0.0"
BEACON_ANALYSIS = "beacon_variant"
GENOTYPE_TABLES: dict[str, list[str] | str] = {
    "person": ["person_id"],
    "variant": "*",
    "genotype": "*",
    "genotype_sample": ["person_id", "population"],
}
"""The tables (and columns) of a genotype site a policy opens to these analyses."""
DEMO_GROUPS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    ("eur-biobank", ("EUR",)),
    ("eas-biobank", ("EAS",)),
    ("global-cohort", ("AFR", "AMR", "SAS", None)),
)
"""The demo's sites and the super-populations each holds (``None``: samples with no label)."""


def beacon_params(request: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis parameters of a Beacon v2 request document (or of its ``query`` part)."""
    query = request.get("query", request)
    if not isinstance(query, Mapping) or not isinstance(query.get("requestParameters"), Mapping):
        raise InvalidParameters(
            "a Beacon v2 request needs query.requestParameters", reason="invalid_parameters"
        )
    params = dict(query["requestParameters"])
    for key in ("start", "end"):  # Beacon v2 sends coordinates as arrays of one value
        value = params.get(key)
        if isinstance(value, list):
            if len(value) != 1:
                raise InvalidParameters(
                    f"{key}: only a precise coordinate (one value) is supported",
                    reason="invalid_parameters",
                )
            params[key] = value[0]
    params["requestedGranularity"] = query.get("requestedGranularity", "count")
    return params


def beacon_response(result: FederatedResult) -> dict[str, Any]:
    """The Beacon v2 response document of a federated ``beacon_variant`` result."""
    row = result.result.row(0, named=True)
    summary: dict[str, Any] = {"exists": bool(row["exists"])}
    if row["returnedGranularity"] == "count":
        summary["numTotalResults"] = int(row["numTotalResults"])
    request = {k: v for k, v in result.params.items() if k != "requestedGranularity"}
    return {
        "meta": {
            "apiVersion": API_VERSION,
            "returnedGranularity": row["returnedGranularity"],
            "receivedRequestSummary": {
                "apiVersion": API_VERSION,
                "requestedGranularity": row["requestedGranularity"],
                "requestParameters": request,
            },
            "returnedSchemas": [{"entityType": "genomicVariation"}],
        },
        "responseSummary": summary,
        "info": {
            "requestId": result.request_id,
            "sites": [
                {"site": o.site, "status": o.status.value, "reasons": list(o.reasons)}
                for o in result.outcomes
            ],
        },
    }


def query_beacon(
    request: Mapping[str, Any], *, federation: FederationSession | Path | str
) -> dict[str, Any]:
    """Answer a Beacon v2 variant request over ``federation`` (see the module docstring)."""
    return beacon_response(
        run_analysis(BEACON_ANALYSIS, beacon_params(request), federation=federation)
    )


def read_genotype_store(folder: Path) -> dict[str, pa.Table]:
    """The tables of a genotype store written by ``fedflow harmonize vcf``."""
    return {
        name: pq.read_table(folder / f"{name}.parquet")
        for name in ("variant", "genotype", "genotype_sample")
    }


def split_by_population(
    store: Mapping[str, pa.Table], groups: Sequence[Sequence[str | None]]
) -> list[dict[str, pa.Table]]:
    """One site's tables per group of population labels (``None`` stands for no label).

    Each part holds its persons' genotypes and sample links, a ``person`` table of their ids
    (the site catalogue partitions persons by it) and the whole ``variant`` table.
    """
    samples = store["genotype_sample"]
    parts = []
    for labels in groups:
        named = pa.array([x for x in labels if x is not None], pa.string())
        mask = pc.is_in(samples["population"], named)
        if None in labels:
            mask = pc.or_(pc.fill_null(mask, False), pc.is_null(samples["population"]))
        mine = samples.filter(pc.fill_null(mask, False))
        ids = mine["person_id"]
        parts.append(
            {
                "person": pa.table({"person_id": ids}),
                "variant": store["variant"],
                "genotype": store["genotype"].filter(pc.is_in(store["genotype"]["person_id"], ids)),
                "genotype_sample": mine,
            }
        )
    return parts


def build_genotype_demo(
    root: Path,
    data: Path,
    *,
    thresholds: Sequence[int] = (5, 10, 5),
    differencing: bool = True,
) -> Path:
    """Three genotype sites from ``data`` (the shared ``genomics_1000g_vcf`` folder).

    Imports ``sample.vcf.gz`` with ``sample.fam`` and the 1000 Genomes labels, splits it by
    :data:`DEMO_GROUPS` and writes the sites like the OMOP demo (:func:`flows.demo.build_demo`),
    each with its ``min_cell_count`` from ``thresholds`` and the differencing defence on or off.
    Returns the federation profile.
    """
    from flows.demo import DemoSite, build_demo
    from harmonize.vcf import import_vcf

    store = root / "genotype-store"
    import_vcf(
        data / "sample.vcf.gz",
        data / "sample.fam",
        store,
        labels=data / "ancestry-labels-1kg.tsv",
    )
    sites = [
        DemoSite(name, "EU", 1.0, k, (BEACON_ANALYSIS, "allele_frequency"), tables=GENOTYPE_TABLES)
        for (name, _), k in zip(DEMO_GROUPS, thresholds, strict=True)
    ]
    parts = split_by_population(read_genotype_store(store), [g for _, g in DEMO_GROUPS])
    profile = build_demo(root, parts, sites=sites)
    for site in sites:
        path = root / "sites" / site.name / "policy.yaml"
        policy = yaml.safe_load(path.read_text())
        policy["differencing"] = {"enabled": differencing}
        path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return profile


def run_genotype_example(
    analysis: str,
    requests: Sequence[Mapping[str, Any]],
    directory: Path = Path(".fedflow/genomics"),
) -> None:
    """Run ``analysis`` once per parameter set over the genotype demo and print the answers.

    The shared data is found at ``FEDFLOW_SHARED_DATA`` (default ``../shared/data``).
    """
    import json
    import os

    from flows.federation import connect
    from flows.server import prefect_api

    data = Path(os.environ.get("FEDFLOW_SHARED_DATA", "../shared/data")) / "genomics_1000g_vcf"
    with prefect_api(directory / "prefect") as api:
        profile = build_genotype_demo(directory, data)
        with connect(profile) as federation:
            api.wait()
            for request in requests:
                if analysis == BEACON_ANALYSIS:
                    print(json.dumps(query_beacon(request, federation=federation), indent=2))
                else:
                    result = run_analysis(analysis, dict(request), federation=federation)
                    print(result.result)
