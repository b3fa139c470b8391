"""Time to GI bleeding after starting celecoxib or diclofenac: an exact federated Cox model.

Run it::

    python -m flows.cox_example

It splits the OHDSI Eunomia GiBleed persons across three sites (as ``fedflow demo`` does), each
with its own policy and threshold (10, 11 and 10), and fits

    age + gender + group + naproxen

by federated Newton on the Breslow partial likelihood: every round is one federated step in
which each site computes its risk-set sums over its own persons on the agreed time grid, and its
airlock checks them before they leave. The orchestrator sums them and takes the Newton step,
so the answer is the pooled answer.

1. **The cohort.** A person enters at their first exposure to celecoxib or diclofenac
   (concepts 1118084, 1124300, or a drug under them) and is followed to their first record of
   gastrointestinal haemorrhage (concept 192671 or a descendant) or the end of observation,
   for at most four years. ``group`` is the drug of entry; ``diclofenac`` is compared with
   ``celecoxib``. ``naproxen`` is 1 for a person with any naproxen exposure.
2. **The time grid** is two years wide. A site's airlock refuses a grid point with 1 to
   ``t - 1`` events or censorings, and Eunomia's bleeds follow the drug's start closely: on a
   one-year grid the smallest site refuses, on a 30-day grid every site does.
3. **The plot.** The hazard ratios and their 95% intervals are drawn as a forest plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.cox import CoxFit, run_cox
from flows.demo import eunomia_federation, example_sites

__all__ = ["PARAMS", "SITES", "TABLES", "run_example"]


def _drug(*concept_ids: int) -> dict[str, Any]:
    return {"domain": "drug", "concept_ids": list(concept_ids), "include_descendants": True}


PARAMS: dict[str, Any] = {
    "formula": "age + gender + group + naproxen",
    "entry": _drug(1118084, 1124300),
    "event": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
    "groups": {"celecoxib": _drug(1118084), "diclofenac": _drug(1124300)},
    "data": {"variables": {"naproxen": _drug(1115008)}},
    "interval_days": 730,
    "max_days": 1460,
}
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id", "condition_start_date"],
    "drug_exposure": ["person_id", "drug_concept_id", "drug_exposure_start_date"],
    "observation_period": ["person_id", "observation_period_end_date"],
    "concept_ancestor": ["ancestor_concept_id", "descendant_concept_id"],
}
SITES = example_sites("cox_round", TABLES)


def run_example(directory: Path = Path(".fedflow/cox-example")) -> CoxFit:
    """Build the three-site federation under ``directory``, fit the model, print it and draw its
    hazard ratios (``hazard-ratios.png`` there)."""
    with eunomia_federation(directory, SITES) as federation:
        fit = run_cox(PARAMS, federation=federation)
    print(f"Cox {fit.formula}: {fit.rounds} rounds, n = {fit.n}, events = {fit.events}")
    for row in fit.coefficients.iter_rows(named=True):
        print(
            f"  {row['term']:<20} {row['estimate']:+.4f} (SE {row['std_error']:.4f}) "
            f"HR {row['hazard_ratio']:.3f} [{row['hr_ci_low']:.3f}, {row['hr_ci_high']:.3f}] "
            f"p {row['p_value']:.3g}"
        )
    print(f"  log partial likelihood {fit.loglik:.4f} (null {fit.loglik_null:.4f})")
    for row in fit.sites.iter_rows(named=True):
        print(f"  {row['site']}: {row['n']} persons, {row['events']} events")
    print(f"  hazard ratios drawn to {fit.plot(directory / 'hazard-ratios.png')}")
    return fit


if __name__ == "__main__":  # pragma: no cover - the runnable example
    run_example()
