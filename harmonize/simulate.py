"""A seeded GWAS cohort simulator: site genotype stores in the format ``fedflow harmonize vcf``
writes, with a phenotype table, for benchmarks and larger trials than the shared test data.

:func:`simulate_cohort` writes one folder per site holding ``person``, ``variant``,
``genotype``, ``genotype_sample`` (:mod:`harmonize.vcf`'s schemas) and ``phenotype``
(:mod:`harmonize.phenotypes`: ``female``, ``pc1``, ``pc2``, a binary ``case`` and a
quantitative ``trait``). Every site holds the same variants (biallelic SNVs on chromosomes 1-22,
``spacing`` bp apart, in 1 Mb region bins); each site's allele frequencies drift a little from
the cohort's (a site is a population), and PC1/PC2 are shifted per site. A few ``causal``
variants affect ``case`` (log-odds) and ``trait``; ``missing`` is the share of missing calls
(null dosage). Genotype rows are written region by region and, inside a region, in blocks of
``block`` persons (one row group each), so a site's partition reads only its persons' row groups.

Everything follows from ``seed``: the same arguments write the same stores. The dosages can
also be returned as one persons-by-variants int8 matrix per site (-1: missing), for a pooled
computation beside the federated one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmonize.vcf import DEFAULT_BIN_SIZE, GENOTYPE_SCHEMA, SAMPLE_SCHEMA, VARIANT_SCHEMA

__all__ = ["SimulatedCohort", "simulate_cohort"]

_BASES = np.array(["A", "C", "G", "T"])


@dataclass(frozen=True)
class SimulatedCohort:
    """What :func:`simulate_cohort` wrote: one store per site, and the truth."""

    sites: list[Path]
    variants: int
    samples: list[int]
    causal: list[str]
    """Keys (``chrom:pos:ref:alt``) of the causal variants."""
    dosages: list[np.ndarray] = field(default_factory=list, repr=False)
    """Per site, persons by variants int8 dosages (-1 missing), when asked for."""


def simulate_cohort(
    out: Path,
    *,
    sites: int = 3,
    samples: int = 2000,
    variants: int = 100_000,
    seed: int = 20261128,
    causal: int = 10,
    effect: float = 0.35,
    missing: float = 0.002,
    spacing: int = 400,
    block: int = 500,
    keep_dosages: bool = False,
) -> SimulatedCohort:
    """Write ``sites`` genotype stores of ``samples`` persons x ``variants`` under ``out``."""
    if sites < 1 or samples < 1 or variants < 1 or block < 1:
        raise ValueError("sites, samples, variants and block must be positive")
    rng = np.random.default_rng(seed)
    variant = _variants(variants, spacing, rng)
    frequency = rng.uniform(0.02, 0.5, variants)
    chosen = np.sort(rng.choice(variants, size=min(causal, variants), replace=False))
    keys = [
        f"{variant['chrom'][i]}:{variant['pos'][i]}:{variant['ref'][i]}:{variant['alt'][i]}"
        for i in chosen
    ]
    folders, matrices = [], []
    for s in range(sites):
        folder = out / f"site-{s + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        persons = np.arange(s * samples + 1, (s + 1) * samples + 1, dtype=np.int64)
        drift = np.clip(frequency + rng.normal(0, 0.02, variants), 0.005, 0.995)
        dosage = _dosages(rng, drift, samples, missing)  # persons x variants, int8
        pq.write_table(pa.table(variant, schema=VARIANT_SCHEMA), folder / "variant.parquet")
        _write_genotypes(folder / "genotype.parquet", persons, variant, dosage, block)
        pq.write_table(pa.table({"person_id": persons}), folder / "person.parquet")
        sheet = {
            "sample_id": [f"S{p:07d}" for p in persons],
            "person_id": persons,
            "population": [f"site-{s + 1}"] * samples,
        }
        pq.write_table(pa.table(sheet, schema=SAMPLE_SCHEMA), folder / "genotype_sample.parquet")
        pq.write_table(
            _phenotypes(rng, persons, dosage[:, chosen], s, effect), folder / "phenotype.parquet"
        )
        folders.append(folder)
        if keep_dosages:
            matrices.append(dosage)
    return SimulatedCohort(folders, variants, [samples] * sites, keys, matrices)


def _variants(count: int, spacing: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    per_chrom = -(-count // 22)
    index = np.arange(count)
    chrom = (index // per_chrom + 1).astype(str)
    pos = (index % per_chrom + 1) * spacing + 10_000
    ref = rng.integers(0, 4, count)
    alt = (ref + rng.integers(1, 4, count)) % 4
    return {
        "variant_id": index + 1,
        "chrom": chrom,
        "pos": pos.astype(np.int64),
        "ref": _BASES[ref],
        "alt": _BASES[alt],
        "id": np.array([None] * count, dtype=object),
        "bin": ((pos - 1) // DEFAULT_BIN_SIZE).astype(np.int32),
    }


def _dosages(
    rng: np.random.Generator, frequency: np.ndarray, samples: int, missing: float
) -> np.ndarray:
    out = np.empty((samples, len(frequency)), dtype=np.int8)
    for lo in range(0, samples, 250):  # in slices: the uniform draws stay small
        hi = min(lo + 250, samples)
        draws = rng.random((2, hi - lo, len(frequency)), dtype=np.float32)
        out[lo:hi] = (draws[0] < frequency) + (draws[1] < frequency)
        out[lo:hi][rng.random((hi - lo, len(frequency)), dtype=np.float32) < missing] = -1
    return out


def _write_genotypes(
    path: Path,
    persons: np.ndarray,
    variant: dict[str, np.ndarray],
    dosage: np.ndarray,
    block: int,
) -> None:
    chrom, bins = variant["chrom"], variant["bin"]
    region_key = np.char.add(np.char.add(chrom, ":"), bins.astype(str))
    starts = np.flatnonzero(np.r_[True, region_key[1:] != region_key[:-1]])
    ends = np.r_[starts[1:], len(chrom)]
    with pq.ParquetWriter(path, GENOTYPE_SCHEMA) as writer:
        for lo_v, hi_v in zip(starts, ends, strict=True):
            ids = variant["variant_id"][lo_v:hi_v]
            for lo_p in range(0, len(persons), block):
                who = persons[lo_p : lo_p + block]
                values = dosage[lo_p : lo_p + block, lo_v:hi_v].T.reshape(-1)  # variant-major
                rows = len(values)
                names = pa.DictionaryArray.from_arrays(
                    pa.array(np.zeros(rows, dtype=np.int8)), pa.array([chrom[lo_v]])
                )
                table = pa.table(
                    {
                        "person_id": np.tile(who, len(ids)),
                        "variant_id": np.repeat(ids, len(who)),
                        "chrom": names.cast(pa.string()),
                        "bin": np.full(rows, bins[lo_v], dtype=np.int32),
                        "dosage": pa.array(values, pa.int8(), mask=values < 0),
                    },
                    schema=GENOTYPE_SCHEMA,
                )
                writer.write_table(table, row_group_size=rows)


def _phenotypes(
    rng: np.random.Generator, persons: np.ndarray, causal: np.ndarray, site: int, effect: float
) -> pa.Table:
    n = len(persons)
    female = rng.integers(0, 2, n).astype(np.float64)
    pc1 = rng.normal(0.5 * site, 1.0, n)
    pc2 = rng.normal(-0.3 * site, 1.0, n)
    g = np.where(causal < 0, 0, causal).astype(np.float64)
    signal = g.sum(axis=1) * effect if g.size else np.zeros(n)
    eta = -0.5 + 0.2 * female + 0.1 * pc1 - 0.1 * pc2 + signal - signal.mean()
    case = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.float64)
    trait = 1.0 + 0.3 * female + 0.2 * pc1 + signal + rng.normal(0, 1.0, n)
    return pa.table(
        {
            "person_id": persons,
            "female": female,
            "pc1": pc1,
            "pc2": pc2,
            "case": case,
            "trait": trait,
        }
    )
