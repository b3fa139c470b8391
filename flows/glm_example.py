"""GI bleeding against age, gender and NSAID exposure: an exact federated logistic regression.

Run it::

    python -m flows.glm_example

It splits the OHDSI Eunomia GiBleed persons across three sites (as ``fedflow demo`` does), each
with its own policy, and fits

    gi_bleed ~ age + gender + celecoxib + naproxen

by federated IRLS: every round is one federated step in which each site computes XᵀWX and
XᵀWz over its own persons and its airlock checks them before they leave. The orchestrator
sums them and solves for the next coefficients, so the answer is the pooled answer.

1. **The analysis table** is declared, not shipped: each site derives one row per person
   from its OMOP tables. ``gi_bleed`` is 1 for a person with any condition record under
   concept 192671 (gastrointestinal haemorrhage) or its descendants; ``celecoxib`` and
   ``naproxen`` are 1 for a person with any exposure to the ingredient (concepts 1118084,
   1115008) or a drug under it. In Eunomia every person took celecoxib or diclofenac, so
   ``celecoxib`` compares celecoxib with diclofenac. ``age`` and ``gender`` are built in.
2. **The policy** of each site lists ``glm_round`` and exactly the columns the model reads.
3. **The airlock** checks every round: enough persons, cases and non-cases, residual degrees
   of freedom, no small cell in an indicator column, not too many parameters per person.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from flows.demo import eunomia_federation, example_sites
from flows.glm import GlmFit, fit_glm

__all__ = ["DATA", "FORMULA", "SITES", "TABLES", "run_example"]

FORMULA = "gi_bleed ~ age + gender + celecoxib + naproxen"
DATA: dict[str, Any] = {
    "variables": {
        "gi_bleed": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
        "celecoxib": {"domain": "drug", "concept_ids": [1118084], "include_descendants": True},
        "naproxen": {"domain": "drug", "concept_ids": [1115008], "include_descendants": True},
    },
    "age_year": 2020,
}
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id"],
    "drug_exposure": ["person_id", "drug_concept_id"],
    "concept_ancestor": ["ancestor_concept_id", "descendant_concept_id"],
}
SITES = example_sites("glm_round", TABLES)


def run_example(directory: Path = Path(".fedflow/glm-example")) -> GlmFit:
    """Build the three-site federation under ``directory``, fit the model, print it and draw its
    odds ratios (``odds-ratios.png`` there)."""
    with eunomia_federation(directory, SITES) as federation:
        fit = fit_glm(FORMULA, "binomial", data=DATA, federation=federation)
    print(f"{fit.family} GLM {fit.formula}: {fit.rounds} rounds, n = {fit.n}")
    for row in fit.coefficients.iter_rows(named=True):
        print(
            f"  {row['term']:<16} {row['estimate']:+.4f} (SE {row['std_error']:.4f}) "
            f"OR {math.exp(row['estimate']):.3f} "
            f"[{math.exp(row['ci_low']):.3f}, {math.exp(row['ci_high']):.3f}] "
            f"p {row['p_value']:.3g}"
        )
    print(f"  deviance {fit.deviance:.4f}, AIC {fit.aic:.4f}")
    for row in fit.sites.iter_rows(named=True):
        print(f"  {row['site']}: {row['n']} persons, {row['cases']} cases")
    print(f"  odds ratios drawn to {fit.plot(directory / 'odds-ratios.png')}")
    return fit


if __name__ == "__main__":  # pragma: no cover - the runnable example
    run_example()
