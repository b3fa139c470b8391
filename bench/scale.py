"""Benchmark the orchestration overhead of a federated step against the number of sites.

Run ``python bench/scale.py`` (``--sites 3 10 30 100 --https 3 10 30``); it prints the figures
and writes ``bench/results/scale.json`` (``--output`` for another file).

Every federation comes from :func:`flows.demo.build_federation`: N simulated sites over the
Eunomia persons split at random, each a real site node with its own policy, gates, audit log,
quarantine, keys and airlock, all running their jobs on ONE Dask scheduler with one worker
(started here as two child processes, ``dask scheduler`` and ``dask worker``), so the sites'
arithmetic happens outside the orchestrator's process. In-process sites live in this process
(their gates and airlocks share its interpreter); HTTPS sites are ``executors.service``
child processes with mutual TLS on loopback ports.

Per N and analysis (``cohort_count``, ``characterization``) the script measures:

- ``floor_s``: the sites' own work, with no orchestrator: each site's ``check``, then (with
  the mask group the step would use) ``submit``, ``wait`` and ``release``, driven straight
  through the site transports from a thread per site, as a zero-cost orchestrator would.
- ``run_analysis_s``: ``run_analysis`` as a user calls it (the ``federated-analysis`` flow: a
  Prefect task run per site and stage up to 10 sites, the stages in threads of the flow beyond).
- ``threads_s``: the same step in a flow whose site stages run in threads of the flow
  (``flows.federated._federated_step(pool=...)``, as a fit's round runs them).
- ``overhead_*_s``: the step's wall time minus ``floor_s`` measured in the same turn (the
  three are run in turn, ``--repeats`` times after a warm-up turn, so a change of the
  machine's load hits all three): the median of those paired differences.
- ``per_site_ms``: one site's check / submit / wait / release, driven site after site.

For the GLM (``gi_bleed ~ age + gender + celecoxib + naproxen``, binomial): the whole
``fit_glm`` (one flow, one task run per round, site stages in threads), its rounds, and the
same rounds driven straight through the transports with the whole protocol each (the
floor), each the median of ``--repeats`` after a first fit (``first_fit_s``: it also
prepares the sites' designs). Orchestrator memory is the
process's resident set (psutil) after each N; for HTTPS sites the process holds only the
orchestrator. Growth is fitted by least squares, ``overhead = a + b * N`` and
``log overhead = c + k log N`` (k <= 1: linear or better). Times are medians; the load
average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil
from quiet import quiet_logs

RESULTS = Path(__file__).parent / "results" / "scale.json"
GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
STEPS: dict[str, dict[str, Any]] = {
    "cohort_count": GI_BLEED,
    "characterization": {**GI_BLEED, "age_band_width": 10},
}
TARGET_S = 2.0
"""The issue's target: per-step orchestration overhead at 100 in-process sites."""


@contextmanager
def dask_cluster(workers: int = 1, threads: int = 2) -> Iterator[str]:
    """A Dask scheduler and workers as child processes on loopback; yields its address."""
    from executors.process import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    dask = str(Path(sys.executable).parent / "dask")
    worker = [dask, "worker", address, "--nworkers", str(workers), "--nthreads", str(threads)]
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        time.sleep(2.0)
        procs.append(
            subprocess.Popen(
                [*worker, "--no-dashboard", "--host", "127.0.0.1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _request(session: Any, analysis: str, params: dict[str, Any]) -> tuple[Any, Any, Any]:
    from fedflow.core.messages import Request
    from fedflow.core.registry import default_registry

    impl = default_registry().get(analysis)
    parsed = impl.parse_params(params)
    request = Request(
        analysis=impl.ref(),
        params=parsed.model_dump(mode="json"),
        dataset=session.profile.dataset,
        token=session.token,
    )
    return impl, parsed, request


def drive(
    session: Any,
    analysis: str,
    params: dict[str, Any],
    pool: ThreadPoolExecutor | None,
    sites: list[str] | None = None,
) -> tuple[list[Any], dict[str, float]]:
    """The sites' own work for one step, no orchestrator: check, then run and release.

    With ``pool``, a thread per site (the floor); without, site after site, timing each
    stage. Returns the released partials and the seconds per stage summed over sites.
    """
    from fedflow.core import FedflowError
    from flows import secure

    impl, parsed, request = _request(session, analysis, params)
    transports = session.transports
    spent = dict.fromkeys(("check", "submit", "wait", "release"), 0.0)

    def timed(stage: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return call()
        finally:
            spent[stage] += time.perf_counter() - started

    def check(site: str) -> bool:
        return bool(timed("check", lambda: transports[site].check(request)).allowed)

    run: Callable[..., Any] = pool.map if pool is not None else map
    asked = list(transports) if sites is None else sites
    allowed = [s for s, ok in zip(asked, run(check, asked), strict=True) if ok]
    can_mask, cells = secure.maskable(impl, parsed, None)
    if can_mask and len(allowed) >= 2:
        request = request.model_copy(
            update={"secure": secure.mask_spec(transports, allowed, cells)}
        )

    def release(site: str) -> Any:
        transport = transports[site]
        job = timed("submit", lambda: transport.submit(request))
        timed("wait", lambda: transport.wait(job, 600))
        try:
            return timed("release", lambda: transport.release(job)).table()
        except FedflowError:
            return None

    partials = [p for p in run(release, allowed) if p is not None]
    return partials, spent


MODES = ("floor", "run_analysis", "threads")


def step_figures(
    session: Any, profile: Path, n: int, repeats: int, only: tuple[str, ...] = MODES
) -> dict[str, Any]:
    from prefect import flow

    from flows import run_analysis
    from flows.federated import _federated_step
    from flows.federation import open_session

    @flow(name="scale-step-threads")
    def threaded_step(profile: str, analysis: str, params: dict[str, Any]) -> int:
        with open_session(profile) as opened, ThreadPoolExecutor(n) as pool:
            result = _federated_step(opened, analysis, params, None, None, 1, 600.0, pool=pool)
        return len(result.outcomes)

    out: dict[str, Any] = {}
    for analysis, params in STEPS.items():
        _, spent = drive(session, analysis, params, None)
        every: dict[str, Callable[[], Any]] = {
            "floor": partial(_floor, session, analysis, params, n),
            "run_analysis": partial(run_analysis, analysis, params, federation=session),
            "threads": partial(threaded_step, str(profile), analysis, params),
        }
        modes = {m: work for m, work in every.items() if m in only}
        took: dict[str, list[float]] = {mode: [] for mode in modes}
        for repeat in range(repeats + 1):  # the modes in turn, so a change of load hits all
            for mode, work in modes.items():
                started = time.perf_counter()
                work()
                if repeat:  # the first turn warms up
                    took[mode].append(time.perf_counter() - started)
        figures: dict[str, Any] = {
            f"{m}_s": round(statistics.median(t), 3) for m, t in took.items()
        }
        for mode in (m for m in ("run_analysis", "threads") if m in modes):
            paired = [a - b for a, b in zip(took[mode], took["floor"], strict=True)]
            figures[f"overhead_{mode}_s"] = round(statistics.median(paired), 3)
        figures["per_site_ms"] = {k: round(1000 * v / n, 1) for k, v in spent.items()}
        figures["load_average"] = round(os.getloadavg()[0], 2)
        out[analysis] = figures
        print(json.dumps({"sites": n, analysis: figures}), flush=True)
    return out


def _floor(session: Any, analysis: str, params: dict[str, Any], n: int) -> None:
    with ThreadPoolExecutor(n) as pool:
        drive(session, analysis, params, pool)


def glm_figures(session: Any, n: int, repeats: int) -> dict[str, Any]:
    """The fit and its floor, each the median of ``repeats`` after a first fit (which also
    prepares the sites' designs), measured in turn."""
    from flows.glm import fit_glm
    from flows.glm_example import DATA, FORMULA

    started = time.perf_counter()
    fit = fit_glm(FORMULA, "binomial", data=DATA, federation=session)
    first = time.perf_counter() - started
    contributing = [o.site for o in fit.outcomes if o.contributed]
    walls, floors = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        fit = fit_glm(FORMULA, "binomial", data=DATA, federation=session)
        walls.append(time.perf_counter() - started)
        started = time.perf_counter()
        _glm_floor(session, n, fit.rounds, contributing)
        floors.append(time.perf_counter() - started)
    wall, floor = statistics.median(walls), statistics.median(floors)
    figures = {
        "rounds": fit.rounds,
        "sites_contributing": len(contributing),
        "first_fit_s": round(first, 3),
        "fit_s": round(wall, 3),
        "round_s": round(wall / fit.rounds, 3),
        "floor_fit_s": round(floor, 3),
        "floor_round_s": round(floor / fit.rounds, 3),
        "overhead_round_s": round((wall - floor) / fit.rounds, 3),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps({"sites": n, "glm": figures}), flush=True)
    return figures


def _glm_floor(session: Any, n: int, rounds: int, contributing: list[str]) -> None:
    """The fit's rounds driven straight through the transports, the whole protocol each."""
    from fedflow.core import regression
    from flows import secure
    from flows.analyses.glm_round import GlmRoundParams, design_columns
    from flows.glm_example import DATA, FORMULA

    base = GlmRoundParams.model_validate({"formula": FORMULA, "family": "binomial", "data": DATA})
    columns = design_columns(base)
    raw = base.model_dump(mode="json") | {"columns": columns, "fit_id": uuid.uuid4().hex}
    beta: list[float] | None = None
    with ThreadPoolExecutor(n) as pool:
        for _ in range(rounds):
            impl, parsed, _ = _request(session, "glm_round", raw | {"beta": beta})
            round_params = raw | {"beta": beta}
            partials, _ = drive(session, "glm_round", round_params, pool, contributing)
            merged = impl.merge([secure.combine(partials)[0]]) if len(partials) > 1 else partials[0]
            xtwx, xtwz = regression.matrices(impl.finalize(impl.merge([merged]), parsed))
            beta = np.linalg.solve(xtwx, xtwz).tolist()


def in_process_point(
    root: Path, n: int, scheduler: str, repeats: int, only: tuple[str, ...] = MODES
) -> dict[str, Any]:
    from flows import connect
    from flows.demo import build_federation

    before = rss_mb()
    built = build_federation(root / f"in-process-{n}", n, scheduler_address=scheduler)
    started = time.perf_counter()
    with connect(built.profile) as session:
        opened = time.perf_counter() - started
        point: dict[str, Any] = {"sites": n, "open_s": round(opened, 2)}
        point["rss_open_mb"] = rss_mb()
        point.update(step_figures(session, built.profile, n, repeats, only))
        if only == MODES:
            point["glm"] = glm_figures(session, n, repeats)
        point["rss_mb"] = rss_mb()
    point["rss_before_mb"] = before
    return point


def https_point(root: Path, n: int, scheduler: str, repeats: int) -> dict[str, Any]:
    from executors.process import SiteProcess, free_port
    from executors.transport import HttpsSiteTransport
    from flows import connect
    from flows.demo import build_federation, write_https_profile
    from flows.federation import Federation

    home = root / f"https-{n}"
    built = build_federation(home, n, scheduler_address=scheduler)
    names = [SimpleNamespace(name=name) for name in built.parts]
    profile = write_https_profile(
        home,
        {s.name: free_port() for s in names},
        sites=names,  # type: ignore[arg-type]
    )
    entries = Federation.load(profile).sites
    processes = [
        SiteProcess(
            home / "sites" / e.name / "site.yaml",
            port=int(str(e.url).rsplit(":", 1)[1]),
            log=home / "logs" / f"{e.name}.log",
        ).start()
        for e in entries
    ]
    started = time.perf_counter()
    try:
        for process, e in zip(processes, entries, strict=True):
            probe = HttpsSiteTransport(e.name, str(e.url), ca=e.ca, cert=e.cert, key=e.key)
            try:
                process.wait_healthy(probe.health, timeout=600)
            finally:
                probe.close()
        point: dict[str, Any] = {"sites": n, "start_s": round(time.perf_counter() - started, 1)}
        with connect(profile) as session:
            point.update(step_figures(session, profile, n, repeats))
            point["glm"] = glm_figures(session, n, repeats)
            point["orchestrator_rss_mb"] = rss_mb()
            point["site_rss_mb_median"] = statistics.median(
                psutil.Process(p.pid).memory_info().rss / 2**20 for p in processes if p.pid
            )
    finally:
        for process in processes:
            process.stop()
    return point


def growth(points: list[dict[str, Any]], path: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """Least-squares fits of a figure against N: linear, and the log-log exponent."""
    n = np.array([p["sites"] for p in points], dtype=float)
    y = np.array([path(p) for p in points], dtype=float)
    if len(n) < 2:
        return {}
    slope, intercept = np.polyfit(n, y, 1)
    positive = y > 0
    exponent = (
        float(np.polyfit(np.log(n[positive]), np.log(y[positive]), 1)[0])
        if positive.sum() >= 2
        else math.nan
    )
    return {
        "seconds_per_site": round(float(slope), 4),
        "fixed_s": round(float(intercept), 3),
        "log_log_exponent": round(exponent, 2),
        "linear_or_better": bool(exponent <= 1.1),
    }


def _overhead(analysis: str, mode: str, point: dict[str, Any]) -> float:
    return float(point[analysis][f"overhead_{mode}_s"])


def summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for analysis in STEPS:
        for mode in ("run_analysis", "threads"):
            out[f"{analysis}_{mode}"] = growth(points, partial(_overhead, analysis, mode))
    out["glm_round"] = growth(points, lambda p: p["glm"]["overhead_round_s"])
    return out


def main() -> None:
    quiet_logs()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    parser = argparse.ArgumentParser(description="Orchestration overhead against site count.")
    parser.add_argument("--sites", type=int, nargs="*", default=[3, 10, 30, 100])
    parser.add_argument("--https", type=int, nargs="*", default=[3, 10, 30])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="floor is always run"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from flows import prefect_api

    only = tuple(m for m in MODES if m == "floor" or m in args.modes)
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_start": round(os.getloadavg()[0], 2),
        "target_overhead_at_100_in_process_s": TARGET_S,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        prefect_api(Path(tmp) / "prefect") as api,
        dask_cluster() as scheduler,
    ):
        api.wait()
        root = Path(tmp)
        results["in_process"] = [
            in_process_point(root, n, scheduler, args.repeats, only) for n in args.sites
        ]
        if only != MODES:  # a partial run: its points, without growth fits or HTTPS
            args.output.write_text(json.dumps(results, indent=2) + "\n")
            return
        results["in_process_growth"] = summarize(results["in_process"])
        results["https"] = [https_point(root, n, scheduler, args.repeats) for n in args.https]
        results["https_growth"] = summarize(results["https"])
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k.endswith("growth")}, indent=2))


if __name__ == "__main__":
    main()
