"""Benchmark the federated core: the demo's wall time, and one federated step by site count.

Run ``python bench/core.py``; it prints the figures and writes ``bench/results/core.json``.
Timings on shared machines are noisy: each figure is the median of several runs, with the
machine's load average recorded beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quiet import quiet_logs
from record import machine, save

RESULTS = Path(__file__).parent / "results" / "core.json"
GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}


def demo_seconds(directory: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fedflow.cli", "demo", "--dir", str(directory)],
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
    )
    return time.perf_counter() - started


def step_seconds(sites: int, repeats: int) -> dict[str, float]:
    from flows import connect, prefect_api, run_analysis
    from flows.demo import ALL, DemoSite, build_demo, eunomia_tables, split_by_person

    specs = [DemoSite(f"site-{i}", "EU", 1.0, 10, ALL) for i in range(sites)]
    with tempfile.TemporaryDirectory() as tmp:
        parts = split_by_person(eunomia_tables(), [1.0] * sites)
        profile = build_demo(Path(tmp), parts, sites=specs)
        with prefect_api(Path(tmp) / "prefect") as api:
            api.wait()
            started = time.perf_counter()
            with connect(profile) as federation:
                opened = time.perf_counter() - started
                run_analysis("cohort_count", GI_BLEED, federation=federation)  # warm-up
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    run_analysis("cohort_count", GI_BLEED, federation=federation)
                    times.append(time.perf_counter() - t)
    return {"open_sites_s": round(opened, 3), "step_median_s": round(statistics.median(times), 3)}


def main() -> None:
    quiet_logs()
    results: dict[str, object] = machine()
    with tempfile.TemporaryDirectory() as tmp:
        results["demo_cold_s"] = round(demo_seconds(Path(tmp) / "demo"), 2)
        results["demo_warm_s"] = round(demo_seconds(Path(tmp) / "demo"), 2)
    results["step"] = {str(n): step_seconds(n, repeats=5) for n in (1, 3, 10)}
    save(RESULTS, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
