"""Beacon v2 variant discovery and allele frequencies over three 1000 Genomes sites.

``sample.vcf.gz`` is imported with its ``.fam`` and the 1000 Genomes super-population labels,
then split into three in-process sites by super-population (EUR; EAS; AFR, AMR, SAS and the
unlabelled). Answers are checked against a pooled computation written independently of the
analyses (numpy over the whole store), and against each site's threshold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from fedflow.core import CountsCohort, InvalidParameters
from fedflow.core.messages import Release
from flows import SiteStatus, connect, run_analysis
from flows.analyses.beacon import BeaconVariant
from flows.beacon import (
    DEMO_GROUPS,
    beacon_params,
    build_genotype_demo,
    query_beacon,
    read_genotype_store,
)
from flows.federation import FederationSession
from harmonize.vcf import import_vcf

pytestmark = pytest.mark.integration

GROUPS = [groups for _, groups in DEMO_GROUPS]
NAMES = [name for name, _ in DEMO_GROUPS]


@pytest.fixture(scope="module")
def store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    data = shared_data / "genomics_1000g_vcf"
    out = tmp_path_factory.mktemp("genotypes")
    import_vcf(
        data / "sample.vcf.gz",
        data / "sample.fam",
        out,
        labels=data / "ancestry-labels-1kg.tsv",
    )
    return read_genotype_store(out)


@pytest.fixture(scope="module")
def open_federation(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: str
) -> Iterator[FederationSession]:
    """Sites that suppress nothing: federated answers must equal pooled ones exactly."""
    root = tmp_path_factory.mktemp("open")
    profile = build_genotype_demo(
        root, shared_data / "genomics_1000g_vcf", thresholds=[1, 1, 1], differencing=False
    )
    with connect(profile) as federation:
        yield federation


@pytest.fixture(scope="module")
def guarded_federation(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, prefect_server: str
) -> Iterator[FederationSession]:
    """Sites with thresholds 5, 10 and 5. The differencing defence is off here: it would
    refuse later queries whose carriers differ from earlier ones by fewer than k persons
    (tests/executors/test_node_differencing.py tests it; test_the_site_keeps_the_carriers_it_counted
    shows Beacon counts feed it)."""
    root = tmp_path_factory.mktemp("guarded")
    profile = build_genotype_demo(
        root, shared_data / "genomics_1000g_vcf", thresholds=[5, 10, 5], differencing=False
    )
    with connect(profile) as federation:
        yield federation


# -- the pooled oracle, independent of the analyses ---------------------------------------------


def _carriers_by_site(store: dict[str, pa.Table], ids: list[int]) -> list[int]:
    """Distinct persons with >= 1 alternate copy of any of ``ids``, per site of GROUPS."""
    calls = store["genotype"]
    dosage = calls["dosage"].to_numpy(zero_copy_only=False)
    hit = np.isin(calls["variant_id"].to_numpy(), ids) & (np.nan_to_num(dosage) > 0)
    carriers = set(calls["person_id"].to_numpy()[hit].tolist())
    samples = store["genotype_sample"].to_pylist()
    return [
        sum(1 for s in samples if s["person_id"] in carriers and s["population"] in group)
        for group in GROUPS
    ]


def _ids(store: dict[str, pa.Table], start: int, end: int | None = None) -> list[int]:
    """Variant ids at 0-based ``start`` (or in ``[start, end)``), by plain Python."""
    rows = store["variant"].to_pylist()
    if end is None:
        return [r["variant_id"] for r in rows if r["pos"] - 1 == start]
    return [r["variant_id"] for r in rows if start <= r["pos"] - 1 < end]


def _queries(store: dict[str, pa.Table]) -> list[dict[str, Any]]:
    """Beacon v2 requests over real records: a common allele (64 carriers: 37, 10 and 17 by
    site), a rare one (2 carriers, all at one site), an absent allele and a range."""
    rows = store["variant"].to_pylist()
    queries: list[dict[str, Any]] = [
        {
            "referenceName": r["chrom"],
            "start": [r["pos"] - 1],
            "referenceBases": r["ref"],
            "alternateBases": r["alt"],
        }
        for r in rows[:2]
    ]
    # The reference allele of a real record asked as an alternate: nobody carries it.
    queries.append(
        {
            "referenceName": "20",
            "start": [rows[0]["pos"] - 1],
            "referenceBases": rows[0]["alt"],
            "alternateBases": rows[0]["ref"],
        }
    )
    queries.append({"referenceName": "chr20", "start": [rows[0]["pos"] - 1], "end": [11_000_000]})
    return [{"query": {"requestParameters": q, "requestedGranularity": "count"}} for q in queries]


def _expected_ids(store: dict[str, pa.Table], request: dict[str, Any]) -> list[int]:
    params = beacon_params(request)
    ids = _ids(store, params["start"], params.get("end"))
    rows = {r["variant_id"]: r for r in store["variant"].to_pylist()}
    return [
        i
        for i in ids
        if params.get("alternateBases") in (None, rows[i]["alt"])
        and params.get("referenceBases") in (None, rows[i]["ref"])
    ]


# -- Beacon -------------------------------------------------------------------------------------


def test_beacon_counts_equal_the_pooled_count(
    store: dict[str, pa.Table], open_federation: FederationSession
) -> None:
    totals = []
    for request in _queries(store):
        response = query_beacon(request, federation=open_federation)
        pooled = sum(_carriers_by_site(store, _expected_ids(store, request)))
        assert response["meta"]["returnedGranularity"] == "count"
        assert response["responseSummary"] == {"exists": pooled > 0, "numTotalResults": pooled}
        assert {s["status"] for s in response["info"]["sites"]} == {"released"}
        totals.append(pooled)
    assert 0 in totals and max(totals) > 50  # an absent allele and a common one were asked


def test_small_counts_are_suppressed_per_site_policy(
    store: dict[str, pa.Table], guarded_federation: FederationSession
) -> None:
    thresholds = [5, 10, 5]
    seen = {"count": 0, "boolean": 0}
    for request in _queries(store):
        per_site = _carriers_by_site(store, _expected_ids(store, request))
        response = query_beacon(request, federation=guarded_federation)
        suppressed = [0 < n < k for n, k in zip(per_site, thresholds, strict=True)]
        statuses = {s["site"]: s["status"] for s in response["info"]["sites"]}
        for name, hidden in zip(NAMES, suppressed, strict=True):
            assert statuses[name] == ("released_with_suppression" if hidden else "released")
        summary = response["responseSummary"]
        if any(suppressed):
            # a site's count of 1..k-1 left it as "some": the answer falls back to boolean
            assert response["meta"]["returnedGranularity"] == "boolean"
            assert summary == {"exists": True}
        else:
            assert summary == {"exists": sum(per_site) > 0, "numTotalResults": sum(per_site)}
        seen[response["meta"]["returnedGranularity"]] += 1
    assert seen["count"] and seen["boolean"]


def test_boolean_granularity_releases_no_count(
    store: dict[str, pa.Table], guarded_federation: FederationSession
) -> None:
    request = _queries(store)[0]
    request["query"]["requestedGranularity"] = "boolean"
    response = query_beacon(request, federation=guarded_federation)
    assert response["meta"]["returnedGranularity"] == "boolean"
    assert response["meta"]["receivedRequestSummary"]["requestedGranularity"] == "boolean"
    assert response["responseSummary"] == {"exists": True}


def test_a_boolean_only_site_answers_a_count_query_as_boolean(
    shared_data: Path, store: dict[str, pa.Table], tmp_path: Path, prefect_server: str
) -> None:
    """eur-biobank's policy allows only booleans: it releases 0/1, so the answer is boolean."""
    profile = build_genotype_demo(
        tmp_path, shared_data / "genomics_1000g_vcf", thresholds=[1, 1, 1], differencing=False
    )
    path = tmp_path / "sites" / "eur-biobank" / "policy.yaml"
    policy = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**policy, "beacon": {"granularity": "boolean"}}))
    request = _queries(store)[0]
    assert _carriers_by_site(store, _expected_ids(store, request)) == [37, 10, 17]
    with connect(profile) as federation:
        response = query_beacon(request, federation=federation)
    assert response["meta"]["receivedRequestSummary"]["requestedGranularity"] == "count"
    assert response["meta"]["returnedGranularity"] == "boolean"
    assert response["responseSummary"] == {"exists": True}
    sites = {s["site"]: s for s in response["info"]["sites"]}
    assert {s["status"] for s in sites.values()} == {"released"}
    # what left eur-biobank is whether a carrier exists, decided so at its gate
    job = _site_job(tmp_path / "sites" / "eur-biobank", response["info"]["requestId"])
    assert job["release"].table().to_pylist() == [{"boolean": "boolean", "count": 1}]
    assert any("answered at boolean granularity" in r for r in job["decision"]["reasons"])


def _site_job(home: Path, request_id: str) -> dict[str, Any]:
    """The quarantined job of ``request_id`` at the site in ``home``: its release and decision."""
    for meta_path in (home / "state" / "quarantine").rglob("*.json"):
        meta = json.loads(meta_path.read_bytes())
        if meta["request"]["request_id"] == request_id:
            return {**meta, "release": Release.model_validate(meta["release"])}
    raise AssertionError(f"no job of {request_id} at {home.name}")


def test_a_range_is_half_open(
    store: dict[str, pa.Table], open_federation: FederationSession
) -> None:
    first = store["variant"].to_pylist()[0]
    pooled = sum(_carriers_by_site(store, [first["variant_id"]]))
    zero_based = first["pos"] - 1
    for start, end, expected in [
        (zero_based, zero_based + 1, pooled),  # [pos-1, pos) holds POS: start is inclusive
        (zero_based - 1, zero_based, 0),  # [pos-2, pos-1) does not: end is exclusive
    ]:
        request = {
            "query": {"requestParameters": {"referenceName": "20", "start": [start], "end": [end]}}
        }
        response = query_beacon(request, federation=open_federation)
        assert response["responseSummary"].get("numTotalResults") == expected


# -- allele frequencies -------------------------------------------------------------------------


def _pooled_frequencies(
    store: dict[str, pa.Table], ids: list[int]
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(variant key, population) -> (AC, AN, carriers), '*' for everybody, by plain Python."""
    label = {
        s["person_id"]: s["population"] or "unlabelled"
        for s in store["genotype_sample"].to_pylist()
    }
    variants = {r["variant_id"]: r for r in store["variant"].to_pylist()}
    out: dict[tuple[str, str], list[int]] = {}
    wanted = set(ids)
    for row in store["genotype"].to_pylist():
        if row["variant_id"] not in wanted or row["dosage"] is None:
            continue
        v = variants[row["variant_id"]]
        key = f"{v['chrom']}:{v['pos']}:{v['ref']}:{v['alt']}"
        for population in ("*", label[row["person_id"]]):
            cell = out.setdefault((key, population), [0, 0, 0])
            cell[0] += row["dosage"]
            cell[1] += 2
            cell[2] += row["dosage"] > 0
    return {k: (a, b, c) for k, (a, b, c) in out.items()}


def test_federated_allele_frequencies_equal_the_pooled_ones(
    store: dict[str, pa.Table], open_federation: FederationSession
) -> None:
    rows = store["variant"].to_pylist()
    params = {
        "referenceName": "20",
        "start": rows[0]["pos"] - 1,
        "end": 11_000_000,
        "by_population": True,
    }
    result = run_analysis("allele_frequency", params, federation=open_federation)
    assert {o.status for o in result.outcomes} == {SiteStatus.RELEASED}
    pooled = _pooled_frequencies(store, _ids(store, params["start"], params["end"]))
    got = {
        (f"{r['chrom']}:{r['pos']}:{r['ref']}:{r['alt']}", r["population"]): r
        for r in result.result.to_dicts()
    }
    assert set(got) == set(pooled) and len({k[0] for k in got}) > 20
    for key, (ac, an, carriers) in pooled.items():
        row = got[key]
        assert (row["allele_count"], row["allele_number"], row["carriers"]) == (ac, an, carriers)
        assert row["allele_frequency"] == ac / an  # exactly: the same integers, one division
    populations = {k[1] for k in got}
    assert populations == {"*", "AFR", "AMR", "EAS", "EUR", "SAS", "unlabelled"}


def test_allele_frequencies_are_suppressed_per_site_policy(
    store: dict[str, pa.Table], guarded_federation: FederationSession
) -> None:
    rows = store["variant"].to_pylist()
    params = {"referenceName": "20", "start": rows[0]["pos"] - 1, "end": 10_200_000}
    result = run_analysis("allele_frequency", params, federation=guarded_federation)
    pooled = _pooled_frequencies(store, _ids(store, params["start"], params["end"]))
    released = [r for r in result.result.to_dicts() if r["allele_frequency"] is not None]
    withheld = [r for r in result.result.to_dicts() if r["allele_frequency"] is None]
    assert released and withheld
    for row in released:
        key = (f"{row['chrom']}:{row['pos']}:{row['ref']}:{row['alt']}", "*")
        assert (row["allele_count"], row["allele_number"]) == pooled[key][:2]
    # every withheld frequency has a site whose allele count lies in 1..threshold-1
    thresholds = [5, 10, 5]
    for row in withheld:
        ids = [
            r["variant_id"]
            for r in rows
            if (r["pos"], r["ref"], r["alt"]) == (row["pos"], row["ref"], row["alt"])
        ]
        per_site = _site_allele_counts(store, ids)
        assert any(0 < n < k for n, k in zip(per_site, thresholds, strict=True))


def _site_allele_counts(store: dict[str, pa.Table], ids: list[int]) -> list[int]:
    label = {s["person_id"]: s["population"] for s in store["genotype_sample"].to_pylist()}
    calls = store["genotype"].filter(pc.is_in(store["genotype"]["variant_id"], pa.array(ids)))
    counts = [0, 0, 0]
    for row in calls.to_pylist():
        for i, group in enumerate(GROUPS):
            if label[row["person_id"]] in group and row["dosage"]:
                counts[i] += row["dosage"]
    return counts


def test_the_site_keeps_the_carriers_it_counted(store: dict[str, pa.Table]) -> None:
    """Carriers are the cohort the count stands for, so the differencing defence sees them."""
    analysis = BeaconVariant()
    assert isinstance(analysis, CountsCohort)
    params = analysis.parse_params(beacon_params(_queries(store)[0]))
    partial, members = analysis.local_members(store, params)
    calls = store["genotype"].filter(pc.equal(store["genotype"]["variant_id"], 1))
    carriers = calls.filter(pc.greater(calls["dosage"], 0))["person_id"].to_pylist()
    assert sorted(members.to_pylist()) == sorted(carriers)
    assert partial["count"].to_pylist() == [len(carriers)] == [64]


def test_a_range_must_not_be_empty() -> None:
    with pytest.raises(InvalidParameters, match="end must be greater than start"):
        BeaconVariant().parse_params({"referenceName": "20", "start": 10, "end": 10})
    with pytest.raises(InvalidParameters, match="alternateBases"):
        BeaconVariant().parse_params({"referenceName": "20", "start": 10})


def test_the_differencing_defence_refuses_a_neighbouring_beacon_count(
    shared_data: Path, store: dict[str, pa.Table], tmp_path: Path, prefect_server: str
) -> None:
    """rs575534 and the 21st variant: at eas-biobank (k = 10) their carriers differ by 8."""
    profile = build_genotype_demo(tmp_path, shared_data / "genomics_1000g_vcf")
    rows = store["variant"].to_pylist()
    first, second = rows[0], rows[20]
    ids = [[first["variant_id"]], [second["variant_id"]]]
    assert _carriers_by_site(store, ids[0]) == [37, 10, 17]
    assert _carriers_by_site(store, ids[1]) == [8, 10, 9]
    with connect(profile) as federation:
        statuses = []
        for row in (first, second):
            request = {
                "query": {
                    "requestParameters": {
                        "referenceName": "20",
                        "start": [row["pos"] - 1],
                        "referenceBases": row["ref"],
                        "alternateBases": row["alt"],
                    }
                }
            }
            response = query_beacon(request, federation=federation)
            statuses.append({s["site"]: s for s in response["info"]["sites"]})
    assert {s["status"] for s in statuses[0].values()} == {"released"}
    refused = statuses[1]["eas-biobank"]
    assert refused["status"] == "refused"
    assert any("differencing rule" in reason for reason in refused["reasons"])
    assert statuses[1]["eur-biobank"]["status"] == statuses[1]["global-cohort"]["status"]
    assert statuses[1]["eur-biobank"]["status"] == "released"
    # what the answer then counts: the two sites that released
    assert response["responseSummary"] == {"exists": True, "numTotalResults": 8 + 9}


def test_boolean_partials_merge_as_or(store: dict[str, pa.Table]) -> None:
    """Two partitions that both hold carriers make 1, not 2; a suppressed site stays unknown."""
    analysis = BeaconVariant()
    request = _queries(store)[0]
    request["query"]["requestedGranularity"] = "boolean"
    params = analysis.parse_params(beacon_params(request))
    one = analysis.local(store, params)
    assert one["count"].to_pylist() == [1]
    assert analysis.merge([one, one])["count"].to_pylist() == [1]
    suppressed = one.set_column(1, "count", pa.array([None], pa.int64()))
    assert analysis.merge([one, suppressed])["count"].to_pylist() == [None]
    final = analysis.finalize(analysis.merge([one, suppressed]), params).to_pylist()
    assert final == [
        {
            "exists": True,
            "numTotalResults": None,
            "requestedGranularity": "boolean",
            "returnedGranularity": "boolean",
        }
    ]


def test_a_boolean_partial_makes_the_whole_answer_boolean(store: dict[str, pa.Table]) -> None:
    """A count query where one site answered boolean: counts read as whether carriers exist."""
    analysis = BeaconVariant()
    request = _queries(store)[0]
    counted = analysis.parse_params(beacon_params(request))
    request["query"]["requestedGranularity"] = "boolean"
    boolean = analysis.local(store, analysis.parse_params(beacon_params(request)))
    count = analysis.local(store, counted)
    assert count["count"].to_pylist() == [64] and "boolean" not in count.column_names
    for partials in ([count, boolean], [boolean, count]):
        assert analysis.merge(partials).to_pylist() == [{"boolean": "boolean", "count": 1}]
        final = analysis.finalize(analysis.merge(partials), counted).to_pylist()
        assert final == [
            {
                "exists": True,
                "numTotalResults": None,
                "requestedGranularity": "count",
                "returnedGranularity": "boolean",
            }
        ]
    nobody = count.set_column(0, "count", pa.array([0], pa.int64()))
    none_here = boolean.set_column(1, "count", pa.array([0], pa.int64()))
    final = analysis.finalize(analysis.merge([nobody, none_here]), counted).to_pylist()
    assert final[0]["exists"] is False and final[0]["returnedGranularity"] == "boolean"
    suppressed = count.set_column(0, "count", pa.array([None], pa.int64()))
    assert analysis.merge([suppressed, none_here])["count"].to_pylist() == [None]
