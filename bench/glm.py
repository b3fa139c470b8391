"""Benchmark the exact federated GLM against pooled fits.

Run ``python bench/glm.py [--sites 3 10] [--repeats 3]``; it prints the figures and writes
``bench/results/glm.json``.

1. **Federated on Eunomia.** The GI-bleeding logistic model (``flows.glm_example``) over 3 and
   10 in-process sites (each a site node with its own Dask cluster, gates and airlock; Prefect
   server on SQLite): wall time, rounds, seconds per round, bytes one site releases per round,
   and the pooled fits (statsmodels ``GLM`` and a numpy Newton loop) on the same analysis table.
2. **Arithmetic at scale.** 1M rows x 10 covariates split over 10 sites, without orchestration:
   the sites' IRLS statistics (``irls_statistics``, what ``glm_round`` computes) summed and
   solved round by round, against a pooled numpy Newton fit and statsmodels on the concatenated
   data. This is the floor the orchestration sits on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "glm.json"


def newton_numpy(x: np.ndarray, y: np.ndarray, tol: float = 1e-10) -> tuple[np.ndarray, int]:
    """A pooled logistic Newton fit written with numpy: the baseline of the issue's target."""
    beta = np.zeros(x.shape[1])
    for rounds in range(1, 50):
        mu = 1 / (1 + np.exp(-(x @ beta)))
        w = mu * (1 - mu)
        step = np.linalg.solve(x.T @ (x * w[:, None]), x.T @ (y - mu))
        beta += step
        if np.max(np.abs(step)) <= tol * (1 + np.max(np.abs(beta))):
            return beta, rounds
    raise RuntimeError("no convergence")


def federated_eunomia(sites: int, repeats: int) -> dict[str, Any]:
    import statsmodels.api as sm
    from formulaic import model_matrix

    from flows import connect, prefect_api
    from flows.analyses.glm_round import GlmRound, used_columns
    from flows.analyses.glm_table import derive
    from flows.demo import ALL, DemoSite, build_demo, eunomia_tables, split_by_person
    from flows.glm import fit_glm
    from flows.glm_example import DATA, FORMULA, TABLES

    tables = eunomia_tables()
    allowed = (*ALL, "glm_round")
    specs = [DemoSite(f"site-{i}", "EU", 1.0, 10, allowed, tables=TABLES) for i in range(sites)]
    with tempfile.TemporaryDirectory() as tmp:
        parts = split_by_person(tables, [1.0] * sites)
        profile = build_demo(Path(tmp), parts, sites=specs)
        with prefect_api(Path(tmp) / "prefect") as api:
            api.wait()
            with connect(profile) as federation:
                fit_glm(FORMULA, "binomial", data=DATA, federation=federation)  # warm-up
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    fit = fit_glm(FORMULA, "binomial", data=DATA, federation=federation)
                    times.append(time.perf_counter() - started)
                outcome = fit.outcomes[0]
                release = federation.transports[outcome.site].release(outcome.job_id or "")
                released_bytes = len(release.partial or b"")

    params = GlmRound().parse_params({"formula": FORMULA, "family": "binomial", "data": DATA})
    used = used_columns(params)
    frame = derive(tables, params.data, used).dropna(subset=sorted(used))
    matrices = model_matrix(FORMULA, frame)
    x, y = np.asarray(matrices.rhs, dtype=float), np.asarray(matrices.lhs, dtype=float)[:, 0]
    pooled_sm = _median_time(lambda: sm.GLM(y, x, family=sm.families.Binomial()).fit(), repeats)
    pooled_np = _median_time(lambda: newton_numpy(x, y), repeats)
    wall = statistics.median(times)
    return {
        "sites": sites,
        "persons": int(y.size),
        "rounds": fit.rounds,
        "federated_fit_s": round(wall, 3),
        "seconds_per_round": round(wall / fit.rounds, 3),
        "released_bytes_per_site_round": released_bytes,
        "pooled_statsmodels_s": round(pooled_sm, 4),
        "pooled_numpy_newton_s": round(pooled_np, 4),
    }


def arithmetic_at_scale(rows: int, covariates: int, sites: int) -> dict[str, Any]:
    import statsmodels.api as sm

    from fedflow.core import regression, to_ipc
    from flows.analyses.glm_round import irls_statistics

    rng = np.random.default_rng(20261128)
    x = np.column_stack([np.ones(rows), rng.normal(size=(rows, covariates - 1))])
    true = rng.normal(scale=0.3, size=covariates)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ true)))).astype(float)
    columns = [f"x{j}" for j in range(covariates)]
    pieces = np.array_split(np.arange(rows), sites)
    zeros, ones = np.zeros(rows), np.ones(rows)

    def federated() -> tuple[np.ndarray, int, int]:
        beta: np.ndarray | None = None
        for rounds in range(1, 50):
            partials = [
                irls_statistics("binomial", columns, x[i], y[i], zeros[i], ones[i], beta)
                for i in pieces
            ]
            xtwx, xtwz = regression.matrices(regression.merge(partials))
            new = np.linalg.solve(xtwx, xtwz)
            if beta is not None and np.max(np.abs(new - beta)) <= 1e-10 * (
                1 + np.max(np.abs(beta))
            ):
                return beta, rounds, len(to_ipc(partials[0]))
            beta = new
        raise RuntimeError("no convergence")

    started = time.perf_counter()
    beta_fed, rounds, size = federated()
    fed_s = time.perf_counter() - started
    started = time.perf_counter()
    beta_np, np_rounds = newton_numpy(x, y)
    np_s = time.perf_counter() - started
    started = time.perf_counter()
    sm_fit = sm.GLM(y, x, family=sm.families.Binomial()).fit(tol=1e-12)
    sm_s = time.perf_counter() - started
    return {
        "rows": rows,
        "covariates": covariates,
        "sites": sites,
        "rounds": rounds,
        "sites_statistics_s": round(fed_s, 3),
        "pooled_numpy_newton_s": round(np_s, 3),
        "pooled_numpy_rounds": np_rounds,
        "pooled_statsmodels_s": round(sm_s, 3),
        "ratio_to_numpy": round(fed_s / np_s, 2),
        "ratio_to_statsmodels": round(fed_s / sm_s, 2),
        "max_abs_coefficient_difference_vs_statsmodels": float(
            np.max(np.abs(beta_fed - sm_fit.params))
        ),
        "max_abs_coefficient_difference_vs_numpy": float(np.max(np.abs(beta_fed - beta_np))),
        "partial_bytes": size,
    }


def _median_time(work: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    results: dict[str, Any] = {"load_average_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    parser = argparse.ArgumentParser(description="Benchmark the exact federated GLM.")
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results["eunomia"] = [federated_eunomia(n, repeats=args.repeats) for n in args.sites]
    results["arithmetic"] = [arithmetic_at_scale(1_000_000, 10, 10)]
    results["load_average_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
