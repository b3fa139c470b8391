"""Benchmark the exact federated GLM against pooled fits, at scale and on Eunomia.

Run ``python bench/glm.py`` (the grid below; ``--sites 3 10 --rows 100000`` for a part,
``--eunomia`` to add the Eunomia fit); it prints the figures and writes
``bench/results/glm.json``.

1. **Grid.** A seeded simulated logistic model, ``rows`` persons x 10 design columns (intercept
   and 9 standard normal covariates), split into ``sites`` equal sites (``--rows-per-site``:
   ``rows`` persons at each site, ``sites x rows`` in all). Each site is a real
   in-process site node (its own parquet dataset holding the analysis table, policy, Dask
   cluster, gates, airlock, audit log and signed receipts) and the fit is
   :func:`flows.glm.fit_glm` through a local Prefect server, exactly as a user runs it. In the
   same run, on the concatenated data: a pooled Newton fit written with numpy (the issue's
   baseline) and statsmodels' ``GLM``. Reported: rounds, wall time (median of ``--repeats``),
   bytes exchanged (every request sent and every statistic released, all rounds and sites),
   the ratios to both pooled fits and the largest coefficient difference to statsmodels.
2. **Arithmetic.** The sites' statistics alone (``GlmRound.local_prepared`` over prepared
   designs, the first round with the fit's local start, summed and solved round by round, no
   orchestration) against the same pooled fits:
   the floor the orchestration sits on.
3. **Stages** (``--stages``): one fit's rounds driven straight through the site transports,
   site after site, without Prefect: the seconds each site spends per round in the pre-gate
   (``check``), in ``submit`` (which runs the gate again and queues the job), waiting for the
   job (Dask and the arithmetic) and in ``release`` (airlock, receipt), then in the ``step``
   that replaces the four in a fit's later rounds (the same round again, gated once per fit).
   Where a round's time goes.
4. **Orchestration** (``--orchestration``): one fit's rounds as the ordinary federated step
   (every round through the whole protocol, no steps) inside one flow, with the sites' stages
   in threads or as a Prefect task run each, with secure aggregation on (the default) or
   off: the median seconds per round of each.
5. **Eunomia** (``--eunomia``): the GI-bleeding model over 3 and 10 OMOP sites.
6. **Floor** (``--floor``, writes ``--output`` on its own): alternating fits with the sites'
   round statistics computed, replayed from earlier fits (the orchestration alone), and
   replayed after a wait as long as the computation takes alone (the arithmetic as latency
   that holds no core): what the fit would cost if its arithmetic were free, or were done
   elsewhere; and the CPU seconds each kind of fit takes, in the fit's process and in the
   Prefect server.
7. **Local start** (``--local-start``, writes ``--output`` on its own): fits with and without
   round 1's local start (:func:`flows.glm.fit_glm`'s ``local_start``), alternating in one
   process: rounds, median seconds, and how far apart their coefficients are.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from quiet import quiet_logs
from record import machine, save

if TYPE_CHECKING:
    import pyarrow as pa

    from fedflow.core import Analysis

T = TypeVar("T")
RESULTS = Path(__file__).parent / "results" / "glm.json"
SEED = 20261128
GRID_SITES = (3, 10, 30)
GRID_ROWS = (100_000, 1_000_000)
COVARIATES = 10


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


def simulate_arrays(
    rows: int, covariates: int = COVARIATES, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded logistic model: design (intercept first, then N(0, 1) covariates), outcome."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, covariates - 1))
    true = rng.normal(scale=0.3, size=covariates)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(true[0] + x @ true[1:])))).astype(float)
    return np.column_stack([np.ones(rows), x]), y


def simulate(rows: int, covariates: int = COVARIATES, seed: int = SEED) -> pa.Table:
    """The analysis table: person_id, a 0/1 outcome y and covariates x1..x{covariates - 1}."""
    import pyarrow as pa

    x, y = simulate_arrays(rows, covariates, seed)
    columns: dict[str, Any] = {"person_id": np.arange(1, rows + 1, dtype=np.int64), "y": y}
    columns |= {f"x{j}": x[:, j] for j in range(1, covariates)}
    return pa.table(columns)


def model(covariates: int = COVARIATES) -> tuple[str, dict[str, Any]]:
    """The formula and the plain analysis table (``data``) of the simulated model."""
    names = [f"x{j + 1}" for j in range(covariates - 1)]
    data = {"table": "analysis", "columns": dict.fromkeys(["y", *names], "float")}
    return "y ~ " + " + ".join(names), data


def round_params(*, fit_id: bool = True) -> tuple[Analysis[Any], dict[str, Any]]:
    """The ``glm_round`` analysis and the raw parameters of the simulated model's rounds, as the
    fitting flow sends them: design columns set and (``fit_id``) a fresh fit id; no ``beta``."""
    from fedflow.core.registry import default_registry
    from flows.analyses.glm_round import design_columns

    formula, data = model()
    analysis = default_registry().get("glm_round")
    first = analysis.parse_params({"formula": formula, "family": "binomial", "data": data})
    raw = first.model_dump(mode="json") | {"columns": design_columns(first)}
    if fit_id:
        raw["fit_id"] = uuid.uuid4().hex
    return analysis, raw


def design(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The pooled design matrix (intercept first) and outcome of the analysis table."""
    names = [c for c in table.column_names if c.startswith("x")]
    x = np.column_stack([np.ones(table.num_rows), *(table[c].to_numpy() for c in names)])
    return x, table["y"].to_numpy()


def build_sites(root: Path, table: pa.Table, sites: int) -> Path:
    """One in-process site per equal share of ``table``; returns the federation profile."""
    from flows.demo import DemoSite, build_demo

    bounds = np.linspace(0, table.num_rows, sites + 1).astype(int)
    parts = []
    for low, high in itertools.pairwise(bounds):
        share = table.slice(low, high - low)
        parts.append({"analysis": share, "person": share.select(["person_id"])})
    policy_tables: dict[str, Any] = {"analysis": "*", "person": "*"}
    specs = [
        DemoSite(f"site-{i:02d}", "EU", 1.0, 10, ("glm_round",), tables=policy_tables)
        for i in range(sites)
    ]
    return build_demo(root, parts, sites=specs)


def statsmodels_fit(rows: int, repeats: int) -> tuple[float, np.ndarray]:
    """The median seconds of statsmodels' pooled ``GLM`` fit of :func:`simulate_arrays` data.

    Run in a child process by :func:`pooled_fits`: the fit peaks at about 1.1 GB per million
    rows (10.7 GB at 10M), which fits on the benchmark machine only without the sites' and the
    parent's copies of the data beside it.
    """
    import statsmodels.api as sm

    x, y = simulate_arrays(rows)
    times, params = [], np.empty(0)
    for _ in range(repeats):
        model = sm.GLM(y, x, family=sm.families.Binomial())
        started = time.perf_counter()
        params = np.asarray(model.fit(tol=1e-12).params)
        times.append(time.perf_counter() - started)
        del model  # the fit's arrays go before the next one's are made
    return statistics.median(times), params


def pooled_fits(table: pa.Table, repeats: int) -> dict[str, Any]:
    """The pooled numpy Newton fit, and statsmodels' in a fresh child process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    numpy_s, (beta_np, np_rounds) = _numpy_fit(table, repeats)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as child:
        sm_s, beta_sm = child.submit(statsmodels_fit, table.num_rows, repeats).result()
    return {
        "numpy_s": numpy_s,
        "numpy_rounds": np_rounds,
        "beta_numpy": beta_np,
        "statsmodels_s": sm_s,
        "beta_statsmodels": beta_sm,
    }


def _numpy_fit(table: pa.Table, repeats: int) -> tuple[float, tuple[np.ndarray, int]]:
    """The median seconds of the pooled numpy Newton fit, and its (coefficients, rounds); the
    design is free again when this returns."""
    x, y = design(table)
    return _median_time(lambda: newton_numpy(x, y), repeats)


def federated_grid_point(sites: int, rows: int, repeats: int) -> dict[str, Any]:
    from flows import connect
    from flows.glm import fit_glm

    table = simulate(rows)
    formula, data = model()
    # The pooled fits first: their memory is free again before the sites load theirs.
    pooled = pooled_fits(table, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        profile = build_sites(Path(tmp), table, sites)
        with connect(profile) as federation:
            times, fit = [], None
            for _ in range(repeats + 1):  # the first fit warms imports and the sites' caches
                started = time.perf_counter()
                fit = fit_glm(formula, "binomial", data=data, federation=federation)
                times.append(time.perf_counter() - started)
            assert fit is not None
            exchanged = _bytes_exchanged(federation, fit, formula, data)
    wall = statistics.median(times[1:])
    beta = fit.coefficients["estimate"].to_numpy()
    sm_s, beta_sm = pooled["statsmodels_s"], pooled["beta_statsmodels"]
    return {
        "sites": sites,
        "rows": rows,
        "rows_per_site": rows // sites,
        "covariates": COVARIATES,
        "rounds": fit.rounds,
        "federated_fit_s": round(wall, 3),
        "first_fit_s": round(times[0], 3),
        "seconds_per_round": round(wall / fit.rounds, 3),
        "bytes_exchanged": exchanged,
        "pooled_numpy_newton_s": round(pooled["numpy_s"], 3),
        "pooled_numpy_rounds": pooled["numpy_rounds"],
        "pooled_statsmodels_s": round(sm_s, 3),
        "ratio_to_numpy": round(wall / pooled["numpy_s"], 2),
        "ratio_to_statsmodels": round(wall / sm_s, 2),
        "max_abs_coefficient_difference_vs_numpy": float(
            np.max(np.abs(beta - pooled["beta_numpy"]))
        ),
        "max_abs_coefficient_difference_vs_statsmodels": float(np.max(np.abs(beta - beta_sm))),
    }


def _bytes_exchanged(federation: Any, fit: Any, formula: str, data: dict[str, Any]) -> int:
    """Requests sent (the pre-gate and the submit of round 1, then one step a round, carry one
    each) and statistics released."""
    from fedflow.core.messages import Request

    analysis, raw = round_params()
    raw["beta"] = [0.123456789012345678] * len(raw["columns"])
    request = Request(analysis=analysis.ref(), params=raw, dataset="omop", token=federation.token)
    request_bytes = len(request.model_dump_json())
    released = 0
    for outcome in fit.outcomes:
        release = federation.transports[outcome.site].release(outcome.job_id or "")
        released += len(release.model_dump_json())
    return len(fit.outcomes) * (fit.rounds + 1) * request_bytes + fit.rounds * released


def arithmetic(rows: int, sites: int) -> dict[str, Any]:
    """The sites' statistics over prepared designs, summed and solved, no orchestration."""
    from executors.cluster import PreparedAnalysis
    from fedflow.core import regression

    table = simulate(rows)
    analysis, raw = round_params(fit_id=False)
    assert isinstance(analysis, PreparedAnalysis)
    base = analysis.parse_params(raw)
    bounds = np.linspace(0, rows, sites + 1).astype(int)
    designs = [
        analysis.prepare({"analysis": table.slice(lo, hi - lo)}, base)
        for lo, hi in itertools.pairwise(bounds)
    ]

    def fit() -> tuple[np.ndarray, int]:
        beta: np.ndarray | None = None
        for rounds in range(1, 50):
            point = {"beta": None if beta is None else beta.tolist(), "local_step": beta is None}
            params = analysis.parse_params(raw | point)  # round 1 as the fit: a local start
            partials = [analysis.local_prepared(d, params) for d in designs]
            xtwx, xtwz = regression.matrices(regression.merge(partials))
            new = np.linalg.solve(xtwx, xtwz)
            if beta is not None and np.max(np.abs(new - beta)) <= 1e-10 * (
                1 + np.max(np.abs(beta))
            ):
                return beta, rounds
            beta = new
        raise RuntimeError("no convergence")

    started = time.perf_counter()
    beta, rounds = fit()
    fed_s = time.perf_counter() - started
    pooled = pooled_fits(table, 1)
    return {
        "rows": rows,
        "covariates": COVARIATES,
        "sites": sites,
        "rounds": rounds,
        "sites_statistics_s": round(fed_s, 3),
        "pooled_numpy_newton_s": round(pooled["numpy_s"], 3),
        "pooled_statsmodels_s": round(pooled["statsmodels_s"], 3),
        "ratio_to_numpy": round(fed_s / pooled["numpy_s"], 2),
        "max_abs_coefficient_difference_vs_statsmodels": float(
            np.max(np.abs(beta - pooled["beta_statsmodels"]))
        ),
    }


def stages(sites: int, rows: int, rounds: int = 5) -> dict[str, Any]:
    """Per site and round: seconds in check, submit, the job and release, and in the one call
    that replaces them in a fit's later rounds, ``step`` (median over rounds)."""
    from fedflow.core import regression
    from fedflow.core.messages import Request
    from flows import connect

    analysis, raw = round_params()
    spent: dict[str, list[float]] = {
        "check": [],
        "submit": [],
        "job": [],
        "release": [],
        "step": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        profile = build_sites(Path(tmp), simulate(rows), sites)
        with connect(profile) as federation:
            beta = None
            for round_no in range(rounds):
                totals = dict.fromkeys(spent, 0.0)
                partials = []
                for transport in federation.transports.values():
                    params = analysis.parse_params(raw | {"beta": beta})
                    request = Request(
                        analysis=analysis.ref(),
                        params=params.model_dump(mode="json"),
                        dataset="omop",
                        token=federation.token,
                    )
                    t0 = time.perf_counter()
                    transport.check(request)
                    t1 = time.perf_counter()
                    job = transport.submit(request)
                    t2 = time.perf_counter()
                    transport.wait(job, 600)
                    t3 = time.perf_counter()
                    partials.append(transport.release(job).table())
                    t4 = time.perf_counter()
                    fresh = {"request_id": uuid.uuid4().hex, "nonce": uuid.uuid4().hex}
                    transport.step(request.model_copy(update=fresh))
                    t5 = time.perf_counter()
                    took = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
                    for key, seconds in zip(spent, took, strict=True):
                        totals[key] += seconds
                if round_no > 0:  # the first round also prepares the designs
                    for key in spent:
                        spent[key].append(totals[key] / sites)
                xtwx, xtwz = regression.matrices(regression.merge(partials))
                beta = np.linalg.solve(xtwx, xtwz).tolist()
    per_site = {f"{key}_ms": round(1000 * statistics.median(v), 1) for key, v in spent.items()}
    return {"sites": sites, "rows": rows, "per_site_and_round": per_site}


def orchestration(sites: int, rows: int, rounds: int = 5) -> dict[str, Any]:
    """Median seconds per round: stages in threads or as task runs, secure aggregation or not."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect import flow

    from fedflow.core import regression
    from flows import connect
    from flows.federated import _federated_step
    from flows.federation import open_session

    @flow(name="glm-bench-rounds")
    def fit(profile: str, secure: bool | None, threads: bool) -> list[float]:
        _, raw = round_params()
        took, beta = [], None
        with open_session(profile) as session, ThreadPoolExecutor(sites) as pool:
            for _ in range(rounds):
                started = time.perf_counter()
                step = _federated_step(
                    session,
                    "glm_round",
                    raw | {"beta": beta},
                    None,
                    None,
                    1,
                    600.0,
                    secure=secure,
                    pool=pool if threads else None,
                )
                took.append(time.perf_counter() - started)
                xtwx, xtwz = regression.matrices(step.result.to_arrow())
                beta = np.linalg.solve(xtwx, xtwz).tolist()
        return took

    modes = {
        "threads_secure": (None, True),
        "threads_clear": (False, True),
        "task_runs_secure": (None, False),
    }
    out: dict[str, Any] = {"sites": sites, "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        profile = build_sites(Path(tmp), simulate(rows), sites)
        with connect(profile):
            fit(str(profile), None, True)  # warm-up
            for name, (secure, threads) in modes.items():
                took = fit(str(profile), secure, threads)
                out[f"{name}_round_s"] = round(statistics.median(took[1:]), 3)
    return out


def floor(sites: int, rows: int, repeats: int) -> dict[str, Any]:
    """What a fit costs without its arithmetic: alternating in one process, the median seconds
    of ``fit_glm`` as it is (``real``), with every site's round statistics replayed from the
    real fits (``replayed``: the orchestration alone), and replayed after a wait as long as
    that site's computation takes alone, uncontended, during which the thread holds no lock
    and no core (``replayed_after_wait``: the arithmetic as latency, not CPU), and the median
    CPU seconds of each in this process and in the Prefect server. The pooled numpy fit is
    timed in the same run.
    """
    from unittest import mock

    from flows import connect
    from flows.analyses.glm_round import GlmRound
    from flows.glm import fit_glm

    table = simulate(rows)
    formula, data = model()
    numpy_s, _ = _numpy_fit(table, repeats)
    computed: dict[tuple[int, Any], tuple[Any, Any, Any]] = {}
    alone: dict[tuple[int, Any], float] = {}
    mode = {"now": "real"}
    compute = GlmRound.local_prepared

    def local_prepared(self: GlmRound, design: Any, params: Any) -> Any:
        key = (id(design), None if params.beta is None else tuple(params.beta))
        if mode["now"] != "real" and key in computed:
            if mode["now"] == "replayed_after_wait":
                time.sleep(alone[key])
            return computed[key][0]
        statistics_ = compute(self, design, params)
        computed[key] = (statistics_, design, params)
        return statistics_

    modes = ("real", "replayed", "replayed_after_wait")
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(GlmRound, "local_prepared", local_prepared),
    ):
        profile = build_sites(Path(tmp), table, sites)
        with connect(profile) as federation:
            fit_glm(formula, "binomial", data=data, federation=federation)  # warm-up
            for key, (_, design, params) in computed.items():
                alone[key] = _median_time(partial(compute, GlmRound(), design, params), 3)[0]
            for _ in range(repeats):
                for name in modes:
                    mode["now"] = name
                    before = _cpu_seconds()
                    started = time.perf_counter()
                    fit_glm(formula, "binomial", data=data, federation=federation)
                    times[name].append(time.perf_counter() - started)
                    after = _cpu_seconds()
                    cpu[name].append((after[0] - before[0], after[1] - before[1]))
    out: dict[str, Any] = {
        "sites": sites,
        "rows": rows,
        "pooled_numpy_newton_s": round(numpy_s, 3),
        "arithmetic_alone_s": round(sum(alone.values()), 3),
    }
    for name in modes:
        wall = statistics.median(times[name])
        out[f"{name}_fit_s"] = round(wall, 3)
        out[f"{name}_ratio_to_numpy"] = round(wall / numpy_s, 2)
        own, server = (statistics.median(c[i] for c in cpu[name]) for i in (0, 1))
        out[f"{name}_cpu_s"] = {"fit_process": round(own, 3), "prefect_server": round(server, 3)}
    return out


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user and system) so far of this process and of its children: the local
    Prefect server that ``main`` started."""
    import psutil

    me = psutil.Process()
    children = sum(sum(c.cpu_times()[:2]) for c in me.children(recursive=True))
    return sum(me.cpu_times()[:2]), children


def local_start(sites: int, rows: int, repeats: int) -> dict[str, Any]:
    """Fits with and without the local start (``fit_glm(local_start=...)``), alternating in one
    process: median seconds, rounds and the largest coefficient difference between the two;
    the pooled numpy fit timed in the same run."""
    from flows import connect
    from flows.glm import fit_glm

    table = simulate(rows)
    formula, data = model()
    numpy_s, _ = _numpy_fit(table, repeats)
    times: dict[bool, list[float]] = {True: [], False: []}
    fits: dict[bool, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        profile = build_sites(Path(tmp), table, sites)
        with connect(profile) as federation:
            fit_glm(formula, "binomial", data=data, federation=federation)  # warm-up
            for _ in range(repeats):
                for flag in times:
                    started = time.perf_counter()
                    fits[flag] = fit_glm(
                        formula, "binomial", data=data, federation=federation, local_start=flag
                    )
                    times[flag].append(time.perf_counter() - started)
    out: dict[str, Any] = {"sites": sites, "rows": rows, "pooled_numpy_newton_s": round(numpy_s, 3)}
    for flag, name in ((True, "local_start"), (False, "common_start")):
        wall = statistics.median(times[flag])
        out[f"{name}_rounds"] = fits[flag].rounds
        out[f"{name}_fit_s"] = round(wall, 3)
        out[f"{name}_ratio_to_numpy"] = round(wall / numpy_s, 2)
    estimates = [fits[flag].coefficients["estimate"].to_numpy() for flag in times]
    out["max_abs_coefficient_difference"] = float(np.max(np.abs(estimates[0] - estimates[1])))
    return out


def federated_eunomia(sites: int, repeats: int) -> dict[str, Any]:
    from flows import connect
    from flows.demo import ALL, DemoSite, build_demo, eunomia_tables, split_by_person
    from flows.glm import fit_glm
    from flows.glm_example import DATA, FORMULA, TABLES

    tables = eunomia_tables()
    allowed = (*ALL, "glm_round")
    specs = [DemoSite(f"site-{i}", "EU", 1.0, 10, allowed, tables=TABLES) for i in range(sites)]
    with tempfile.TemporaryDirectory() as tmp:
        parts = split_by_person(tables, [1.0] * sites)
        profile = build_demo(Path(tmp), parts, sites=specs)
        with connect(profile) as federation:
            fit_glm(FORMULA, "binomial", data=DATA, federation=federation)  # warm-up
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                fit = fit_glm(FORMULA, "binomial", data=DATA, federation=federation)
                times.append(time.perf_counter() - started)
    wall = statistics.median(times)
    return {
        "sites": sites,
        "persons": fit.n,
        "rounds": fit.rounds,
        "federated_fit_s": round(wall, 3),
        "seconds_per_round": round(wall / fit.rounds, 3),
    }


def _median_time(work: Callable[[], T], repeats: int) -> tuple[float, T]:
    """The median seconds of ``repeats`` runs of ``work``, and its last result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    quiet_logs()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    parser = argparse.ArgumentParser(description="Benchmark the exact federated GLM.")
    parser.add_argument("--sites", type=int, nargs="+", default=list(GRID_SITES))
    parser.add_argument("--rows", type=int, nargs="+", default=list(GRID_ROWS))
    parser.add_argument(
        "--rows-per-site", action="store_true", help="--rows are per site, not in total"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eunomia", action="store_true", help="add the Eunomia fit")
    parser.add_argument("--stages", action="store_true", help="only the per-stage timing")
    parser.add_argument("--orchestration", action="store_true", help="only the round modes")
    parser.add_argument(
        "--floor", action="store_true", help="only the fit without its arithmetic (replayed)"
    )
    parser.add_argument(
        "--local-start", action="store_true", help="only fits with and without the local start"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from flows import prefect_api

    alternating = {"floor": floor, "local_start": local_start}
    chosen = [key for key in alternating if getattr(args, key)]
    if chosen:
        key = chosen[0]
        with tempfile.TemporaryDirectory() as tmp, prefect_api(Path(tmp) / "prefect") as api:
            api.wait()
            timing = [alternating[key](n, r, args.repeats) for r in args.rows for n in args.sites]
        results = machine() | {key: timing}
        save(args.output, results)
        print(json.dumps(results, indent=2))
        return
    if args.stages or args.orchestration:
        key, measure = ("stages", stages) if args.stages else ("orchestration", orchestration)
        with tempfile.TemporaryDirectory() as tmp, prefect_api(Path(tmp) / "prefect") as api:
            api.wait()
            timing = [measure(n, r) for r in args.rows for n in args.sites]
        print(json.dumps(timing, indent=2))
        if args.output.exists():
            saved = json.loads(args.output.read_text())
            saved[key] = timing
            args.output.write_text(json.dumps(saved, indent=2) + "\n")
        return
    results: dict[str, Any] = machine()
    results["grid"] = []
    with tempfile.TemporaryDirectory() as tmp, prefect_api(Path(tmp) / "prefect") as api:
        api.wait()
        for rows in args.rows:
            for sites in args.sites:
                total = rows * sites if args.rows_per_site else rows
                point = federated_grid_point(sites, total, args.repeats)
                point["load_average"] = round(os.getloadavg()[0], 2)
                print(json.dumps(point), flush=True)
                results["grid"].append(point)
        if args.eunomia:
            results["eunomia"] = [federated_eunomia(n, args.repeats) for n in (3, 10)]
    results["arithmetic"] = [arithmetic(1_000_000, 10)]
    save(args.output, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
