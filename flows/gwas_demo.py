"""GWAS sites to try the federated GWAS on: the 1000 Genomes EPACTS test set, split by ancestry.

:func:`build_epacts_demo` imports ``regressionLogisticEpacts.vcf`` (2,535 samples, 5 chr22
variants; the set Hail checks its logistic regression against EPACTS with) with its ``.fam``
(sex, case/control) and ``.cov`` (PC1, PC2) into a genotype store and a phenotype table
(:mod:`harmonize.phenotypes`), and splits both into three sites by 1000 Genomes
super-population (:data:`flows.beacon.DEMO_GROUPS`). :func:`build_gwas_sites` writes any such
parts as in-process sites (the simulator's too, :mod:`harmonize.simulate`). Run the example::

    python -m flows.gwas_demo
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from flows.beacon import DEMO_GROUPS, GENOTYPE_TABLES, read_genotype_store, split_by_population

__all__ = [
    "EPACTS_DATA",
    "GWAS_ANALYSES",
    "GWAS_TABLES",
    "build_epacts_demo",
    "build_gwas_sites",
    "epacts_parts",
]

GWAS_ANALYSES = ("gwas_round", "glm_round", "allele_frequency")
GWAS_TABLES: dict[str, list[str] | str] = {**GENOTYPE_TABLES, "phenotype": "*"}
"""The tables a GWAS site's policy opens (the phenotype table whole)."""
EPACTS_DATA: dict[str, object] = {
    "table": "phenotype",
    "columns": {"case": "float", "female": "float", "pc1": "float", "pc2": "float"},
}
"""The ``data`` argument of :func:`flows.gwas.fit_gwas` / ``fit_glm`` for these sites."""


def epacts_parts(data: Path, out: Path) -> tuple[dict[str, pa.Table], list[dict[str, pa.Table]]]:
    """The pooled EPACTS tables and one part per :data:`~flows.beacon.DEMO_GROUPS` site."""
    from harmonize.phenotypes import read_plink_phenotypes
    from harmonize.vcf import import_vcf

    stem = data / "regressionLogisticEpacts"
    import_vcf(
        stem.with_suffix(".vcf"),
        stem.with_suffix(".fam"),
        out,
        labels=data / "ancestry-labels-1kg.tsv",
    )
    store = read_genotype_store(out)
    pooled = {
        **store,
        "phenotype": read_plink_phenotypes(stem.with_suffix(".fam"), stem.with_suffix(".cov")),
    }
    parts = split_by_population(store, [groups for _, groups in DEMO_GROUPS])
    for part in parts:
        mask = pc.is_in(pooled["phenotype"]["person_id"], part["person"]["person_id"])
        part["phenotype"] = pooled["phenotype"].filter(mask)
    return pooled, parts


def build_gwas_sites(
    root: Path,
    parts: Sequence[Mapping[str, pa.Table]],
    names: Sequence[str],
    *,
    thresholds: Sequence[int],
    workers: int = 1,
    threads_per_worker: int = 2,
) -> Path:
    """Write one in-process GWAS site per part (policies allow :data:`GWAS_ANALYSES` over
    :data:`GWAS_TABLES`, differencing off: GWAS rounds are not cohort counts); return the
    federation profile."""
    from flows.demo import DemoSite, build_demo

    sites = [
        DemoSite(name, "EU", 1.0, k, GWAS_ANALYSES, tables=GWAS_TABLES)
        for name, k in zip(names, thresholds, strict=True)
    ]
    profile = build_demo(root, parts, sites=sites)
    for site in sites:
        home = root / "sites" / site.name
        policy = yaml.safe_load((home / "policy.yaml").read_text())
        policy["differencing"] = {"enabled": False}
        (home / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        config = yaml.safe_load((home / "site.yaml").read_text())
        config["dask"] = {"workers": workers, "threads_per_worker": threads_per_worker}
        (home / "site.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return profile


def build_epacts_demo(root: Path, data: Path, *, thresholds: Sequence[int] = (5, 5, 5)) -> Path:
    """Three EPACTS sites from ``data`` (the shared ``genomics_1000g_vcf`` folder); the profile."""
    _, parts = epacts_parts(data, root / "genotype-store")
    return build_gwas_sites(root, parts, [name for name, _ in DEMO_GROUPS], thresholds=thresholds)


if __name__ == "__main__":  # pragma: no cover - the runnable example
    import os

    from flows.federation import connect
    from flows.gwas import fit_gwas
    from flows.server import prefect_api

    directory = Path(".fedflow/gwas")
    shared = Path(os.environ.get("FEDFLOW_SHARED_DATA", "../shared/data")) / "genomics_1000g_vcf"
    with prefect_api(directory / "prefect") as api:
        profile = build_epacts_demo(directory, shared)
        with connect(profile) as federation:
            api.wait()
            result = fit_gwas(
                "case ~ female + pc1 + pc2", "binomial", federation=federation, data=EPACTS_DATA
            )
    print(result.results)
    print(f"lambda = {result.inflation:.3f}")
