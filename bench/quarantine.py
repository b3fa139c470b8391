"""Benchmark a site's quarantine over many jobs: memory held, and the time a restart takes.

One in-process site of a 10-site federation (the GLM bench's simulated data, 2,000 rows)
runs ``--jobs`` masked GLM rounds, each checked, submitted, waited for and released through
the whole protocol (as a fit's first round is), in a fresh process. It records the growth of
the process's resident set over the jobs (after a garbage collection, so what stays held),
the files the quarantine keeps, and how long a new :class:`~executors.SiteNode` on the same
state folder takes to start (reading back the jobs its quarantine holds open).

Run ``python bench/quarantine.py [--jobs 2000 4000]``; it prints the figures and writes
``bench/results/quarantine.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from glm import build_sites, round_params, simulate
from quiet import quiet_logs
from record import machine, save

RESULTS = Path(__file__).parent / "results" / "quarantine.json"


def jobs_at_one_site(jobs: int) -> dict[str, Any]:
    from executors import SiteNode
    from fedflow.core.messages import Request
    from flows import connect
    from flows import secure as secure_step

    analysis, raw = round_params()
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        profile = build_sites(Path(tmp), simulate(2_000), 10)
        with connect(profile) as federation:
            transport = next(iter(federation.transports.values()))
            group = secure_step.mask_spec(federation.transports, list(federation.transports), None)
            gc.collect()
            before = process.memory_info().rss
            started = time.perf_counter()
            for number in range(jobs):
                beta = [0.01 * (number % 7)] * len(raw["columns"])
                request = Request(
                    analysis=analysis.ref(),
                    params=analysis.parse_params(raw | {"beta": beta}).model_dump(mode="json"),
                    dataset="omop",
                    token=federation.token,
                )
                transport.check(request)
                job_id = transport.submit(request.model_copy(update={"secure": group}))
                transport.wait(job_id, 60)
                transport.release(job_id)
            took = time.perf_counter() - started
            gc.collect()
            grown = process.memory_info().rss - before
            config = transport.node.config  # type: ignore[attr-defined]
        files = [p for p in (config.state_dir / "quarantine").rglob("*") if p.is_file()]
        kept_mb = sum(p.stat().st_size for p in files) / 1e6
        restart_started = time.perf_counter()
        with SiteNode(config):
            restart_s = time.perf_counter() - restart_started
    return {
        "jobs": jobs,
        "jobs_s": round(took, 1),
        "rss_growth_mb": round(grown / 1e6, 1),
        "rss_growth_kb_per_job": round(grown / jobs / 1e3, 1),
        "quarantine_files": len(files),
        "quarantine_mb": round(kept_mb, 1),
        "restart_s": round(restart_s, 2),
    }


def main() -> None:
    quiet_logs()
    parser = argparse.ArgumentParser(description="Benchmark a site's quarantine over many jobs.")
    parser.add_argument("--jobs", type=int, nargs="+", default=[2_000, 4_000])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = machine()
    results["runs"] = []
    context = multiprocessing.get_context("spawn")
    for jobs in args.jobs:  # each in a fresh process: its resident set starts from nothing held
        with ProcessPoolExecutor(1, mp_context=context) as child:
            run = child.submit(jobs_at_one_site, jobs).result()
        print(json.dumps(run), flush=True)
        results["runs"].append(run)
    save(args.output, results)


if __name__ == "__main__":
    main()
