"""Benchmark the exact federated GWAS against a pooled run of the same model, and its linearity.

Run ``python bench/gwas.py`` (3 sites x 2,000 samples x 100,000 variants, and 25k / 50k for the
linearity check, which runs the score test at every size; ``--variants 20000 --linearity 5000
10000`` for a quick run); it prints the figures and writes ``bench/results/gwas.json``.

For every size, :mod:`harmonize.simulate` writes a seeded cohort (one genotype store and
phenotype table per site, the format ``fedflow harmonize vcf`` writes). Each site is a real
in-process site node (policy, its own Dask cluster of ``--workers`` x ``--threads``, gates,
airlock, audit log, receipts) and the GWAS is :func:`flows.gwas.fit_gwas` through a local
Prefect server, as a user runs it: the logistic model ``case ~ female + pc1 + pc2`` plus each
variant's dosage, by the score test and by Wald (Newton to ``tol`` per variant). In the same
run, on the concatenated data: the same model pooled (the null model by numpy Newton, then
the same vectorised per-variant Newton over all persons at once, no orchestration). Reported:
wall time and variants per second of each, rounds, the ratio federated / pooled, and the
largest difference between federated and pooled estimates and standard errors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from record import machine, save

RESULTS = Path(__file__).parent / "results" / "gwas.json"
SEED = 20261128
FORMULA = "case ~ female + pc1 + pc2"
DATA = {
    "table": "phenotype",
    "columns": {"case": "float", "female": "float", "pc1": "float", "pc2": "float"},
}
CHUNK = 2048


def pooled_gwas(
    x: np.ndarray, y: np.ndarray, dosage: np.ndarray, tol: float = 1e-10
) -> dict[str, np.ndarray]:
    """The same model on pooled data: null model by Newton, then per-variant Newton (numpy)."""
    from flows.analyses.gwas_round import statistics

    beta0 = np.zeros(x.shape[1])
    for _ in range(50):
        mu = 1 / (1 + np.exp(-(x @ beta0)))
        step = np.linalg.solve(x.T @ (x * (mu * (1 - mu))[:, None]), x.T @ (y - mu))
        beta0 += step
        if np.max(np.abs(step)) <= tol * (1 + np.max(np.abs(beta0))):
            break
    m = dosage.shape[1]
    beta, se = np.full(m, np.nan), np.full(m, np.nan)
    for lo in range(0, m, CHUNK):
        hi = min(lo + CHUNK, m)
        block = dosage[:, lo:hi]
        b = np.tile(np.append(beta0, 0.0), (hi - lo, 1))
        for _ in range(25):
            stats = statistics("binomial", x, y, block, b)
            new = np.linalg.solve(stats["xtwx"], stats["xtwz"][..., None])[..., 0]
            moved = np.max(np.abs(new - b), axis=1) <= tol * (1 + np.max(np.abs(b), axis=1))
            cov = np.linalg.inv(stats["xtwx"])
            b = new
            if moved.all():
                break
        beta[lo:hi], se[lo:hi] = b[:, -1], np.sqrt(cov[:, -1, -1])
    return {"beta": beta, "se": se}


def build_sites(root: Path, variants: int, samples: int, sites: int, workers: int, threads: int):  # type: ignore[no-untyped-def]
    """Simulate the cohort and write it as in-process sites; the profile and the cohort."""
    import pyarrow.parquet as pq

    from flows.gwas_demo import build_gwas_sites
    from harmonize.simulate import simulate_cohort

    cohort = simulate_cohort(
        root / "sim", sites=sites, samples=samples, variants=variants, seed=SEED, keep_dosages=True
    )
    parts = [{"person": pq.read_table(folder / "person.parquet")} for folder in cohort.sites]
    names = [f"biobank-{i + 1}" for i in range(sites)]
    profile = build_gwas_sites(
        root, parts, names, thresholds=[5] * sites, workers=workers, threads_per_worker=threads
    )
    for name, folder in zip(names, cohort.sites, strict=True):
        target = root / "sites" / name / "data" / "omop"
        for path in folder.glob("*.parquet"):
            shutil.move(str(path), target / path.name)
    return profile, cohort


def run_size(variants: int, args: argparse.Namespace, work: Path, *, full: bool) -> dict[str, Any]:
    """One cohort size: the score test (every size), and Wald and the pooled run (``full``)."""
    import pyarrow.parquet as pq

    from flows.federation import connect
    from flows.gwas import fit_gwas

    root = work / f"v{variants}"
    started = time.perf_counter()
    profile, cohort = build_sites(
        root, variants, args.samples, args.sites, args.workers, args.threads
    )
    simulate_s = time.perf_counter() - started
    point: dict[str, Any] = {
        "sites": args.sites,
        "samples_per_site": args.samples,
        "variants": variants,
        "simulate_and_write_s": round(simulate_s, 2),
    }
    with connect(profile) as federation:
        for test in args.tests if full else ["score"]:
            started = time.perf_counter()
            result = fit_gwas(FORMULA, "binomial", federation=federation, data=DATA, test=test)
            seconds = time.perf_counter() - started
            point[f"federated_{test}_s"] = round(seconds, 2)
            point[f"federated_{test}_variants_per_s"] = round(variants / seconds, 1)
            point[f"federated_{test}_rounds"] = result.rounds
            point[f"{test}_statuses"] = dict(result.results["status"].value_counts().iter_rows())
            point[f"{test}_inflation"] = round(result.inflation, 4)
            if test == "wald":
                wald = result.results
    if not full:
        shutil.rmtree(root, ignore_errors=True)
        return point
    phenotype = [
        pq.read_table(root / "sites" / f"biobank-{i + 1}" / "data" / "omop" / "phenotype.parquet")
        for i in range(args.sites)
    ]
    x = np.vstack(
        [
            np.column_stack(
                [np.ones(t.num_rows), *(t[c].to_numpy() for c in ("female", "pc1", "pc2"))]
            )
            for t in phenotype
        ]
    )
    y = np.concatenate([t["case"].to_numpy() for t in phenotype])
    dosage = np.vstack(cohort.dosages)
    started = time.perf_counter()
    pooled = pooled_gwas(x, y, dosage)
    seconds = time.perf_counter() - started
    point["pooled_wald_s"] = round(seconds, 2)
    point["pooled_wald_variants_per_s"] = round(variants / seconds, 1)
    if "wald" in args.tests:
        point["federated_over_pooled_wald"] = round(point["federated_wald_s"] / seconds, 2)
        keys = [f"{c}:{p}:{r}:{a}" for c, p, r, a in _variant_keys(root / "sites" / "biobank-1")]
        at = {key: i for i, key in enumerate(keys)}
        rows = np.array([at[v] for v in wald["variant"].to_list()])
        ok = wald["status"].to_numpy() == "ok"
        beta = wald["beta"].to_numpy()[ok] - pooled["beta"][rows[ok]]
        se = wald["std_error"].to_numpy()[ok] - pooled["se"][rows[ok]]
        point["max_abs_beta_difference"] = float(np.max(np.abs(beta), initial=0.0))
        point["max_abs_se_difference"] = float(np.max(np.abs(se), initial=0.0))
    shutil.rmtree(root, ignore_errors=True)
    return point


def _variant_keys(site: Path) -> list[tuple[str, int, str, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(site / "data" / "omop" / "variant.parquet")
    return list(
        zip(
            table["chrom"].to_pylist(),
            table["pos"].to_pylist(),
            table["ref"].to_pylist(),
            table["alt"].to_pylist(),
            strict=True,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--variants", type=int, default=100_000)
    parser.add_argument("--linearity", type=int, nargs="*", default=[25_000, 50_000])
    parser.add_argument("--tests", nargs="+", default=["score", "wald"], choices=["score", "wald"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (JSON)")
    args = parser.parse_args()

    from flows.server import prefect_api

    results: dict[str, Any] = machine()
    sizes = sorted({*args.linearity, args.variants})
    with tempfile.TemporaryDirectory(prefix="fedflow-gwas-") as tmp:
        work = Path(tmp)
        with prefect_api(work / "prefect", timeout=600) as api:
            api.wait()
            results["points"] = []
            for variants in sizes:
                point = run_size(variants, args, work, full=variants == args.variants)
                print(json.dumps(point), flush=True)
                results["points"].append(point)
    points = results["points"]
    for test in args.tests:  # the score test runs at every size, Wald at the main one only
        key = f"federated_{test}_s"
        timed = [p for p in points if key in p]
        per_variant = [p[key] / p["variants"] * 1e6 for p in timed]
        results[f"linearity_{test}_us_per_variant"] = [round(v, 2) for v in per_variant]
        if len(timed) > 1:
            slope, intercept = np.polyfit(
                [p["variants"] for p in timed], [p[key] for p in timed], 1
            )
            results[f"linearity_{test}_fit"] = {
                "seconds_per_100k_variants": round(slope * 1e5, 2),
                "fixed_seconds": round(intercept, 2),
            }
    save(args.output, results)
    print(json.dumps({k: v for k, v in results.items() if k != "points"}, indent=2))


if __name__ == "__main__":
    main()
