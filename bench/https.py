"""Benchmark sites over the network: one federated step in-process against over HTTPS.

The three demo sites run as ``fedflow site serve`` processes on loopback ports with mutual
TLS; the same split also runs in-process. Run ``python bench/https.py``; it prints the figures
and writes ``bench/results/https.json``. Each figure is a median; the machine's load average
is recorded beside them.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from quiet import quiet_logs
from record import machine, save

RESULTS = Path(__file__).parent / "results" / "https.json"
GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
STEPS = 15
ROUND_TRIPS = 200


def step_median_s(profile: Path, analysis: str, params: dict[str, object]) -> float:
    from flows import connect, run_analysis

    with connect(profile) as federation:
        run_analysis(analysis, params, federation=federation)  # warm-up
        times = []
        for _ in range(STEPS):
            started = time.perf_counter()
            run_analysis(analysis, params, federation=federation)
            times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


def main() -> None:
    quiet_logs()
    from executors.process import SiteProcess, free_port
    from executors.transport import HttpsSiteTransport
    from flows import prefect_api
    from flows.demo import (
        DEMO_SITES,
        build_demo,
        eunomia_tables,
        split_by_person,
        write_https_profile,
    )
    from flows.federation import Federation

    results: dict[str, object] = machine()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parts = split_by_person(eunomia_tables(), [s.share for s in DEMO_SITES])
        in_process = build_demo(root / "in-process", parts)
        build_demo(root / "https", parts)
        https = write_https_profile(root / "https", {s.name: free_port() for s in DEMO_SITES})
        entries = Federation.load(https).sites
        processes = [
            SiteProcess(
                root / "https" / "sites" / e.name / "site.yaml",
                port=int(str(e.url).rsplit(":", 1)[1]),
                log=root / "https" / "logs" / f"{e.name}.log",
            ).start()
            for e in entries
        ]
        probes = [
            HttpsSiteTransport(e.name, str(e.url), ca=e.ca, cert=e.cert, key=e.key, timeout=5)
            for e in entries
        ]
        try:
            for process, probe in zip(processes, probes, strict=True):
                process.wait_healthy(probe.health)
            times = []
            for _ in range(ROUND_TRIPS):  # one kept-alive mutual-TLS connection
                started = time.perf_counter()
                probes[0].health()
                times.append(time.perf_counter() - started)
            results["health_round_trip_median_ms"] = round(1000 * statistics.median(times), 2)
            with prefect_api(root / "prefect") as api:
                api.wait()
                for analysis, params in (
                    ("cohort_count", GI_BLEED),
                    ("characterization", {**GI_BLEED, "age_band_width": 10}),
                ):
                    local = step_median_s(in_process, analysis, params)
                    remote = step_median_s(https, analysis, params)
                    results[analysis] = {
                        "in_process_step_s": local,
                        "https_step_s": remote,
                        "https_over_in_process": round(remote / local, 2),
                    }
        finally:
            for probe in probes:
                probe.close()
            for process in processes:
                process.stop()
    save(RESULTS, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
