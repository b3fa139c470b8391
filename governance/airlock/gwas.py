"""**GWAS rounds** (:mod:`fedflow.core.gwas`): the rules of a regression round, per variant.

A site's per-variant statistics are never altered (a changed sum would make the federated fit
wrong): a variant that fails a rule is *withheld*, its row kept with null statistics so the
orchestrator knows the variant is incomplete rather than silently fitted on fewer sites, and
the rest of the batch is released (``released_with_suppression``, with one reason per rule and
how many variants it withheld). A variant is withheld when, at ``threshold``:

- its observations (persons with a called genotype and complete covariates) are fewer than
  ``threshold``; the model is saturated (as many parameters as observations); the residual
  degrees of freedom are below ``threshold``; or there are more than
  :data:`~governance.airlock.result.MAX_PARAMETERS_PER_OBSERVATION` parameters per observation;
- its minor allele count (``min(AC, 2n - AC)``) lies between 1 and ``threshold - 1`` (a
  variant no one here carries, or everyone carries on both copies, reveals nobody);
- for a binary phenotype, its cases or its controls are fewer than ``threshold``;
- an indicator (0/1) design column, the dosage included when every call is 0 or 1, is 1, or 0,
  for between 1 and ``threshold - 1`` of its observations.

The null model's row (covariates only) follows the same rules except the allele count; if it
fails, or every variant fails, the whole partial is refused.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from fedflow.core import gwas
from fedflow.core.errors import InvalidRequest
from governance.airlock.result import (
    MAX_PARAMETERS_PER_OBSERVATION,
    AirlockResult,
    Outcome,
    check_threshold,
    refused,
)

__all__ = ["check_gwas"]


def check_gwas(table: pa.Table, *, threshold: int) -> AirlockResult:
    """Release a GWAS round's per-variant statistics, withholding the variants that fail."""
    check_threshold(threshold)
    try:
        gwas.validate(table)
    except InvalidRequest as exc:
        return refused(f"not a valid GWAS partial: {exc.message}")
    family, columns = gwas.model(table)
    data = gwas.arrays(table)
    k = len(columns)
    n = data.n
    is_null_model = np.array([v == gwas.NULL_MODEL for v in data.variant], dtype=bool)
    rules: dict[str, np.ndarray] = {
        f"fewer than {threshold} observations": n < threshold,
        "a saturated model": n <= k,
        f"residual degrees of freedom below {threshold}": (n > k) & (n - k < threshold),
        f"more than {MAX_PARAMETERS_PER_OBSERVATION:g} parameters per observation": (n > 0)
        & (k > MAX_PARAMETERS_PER_OBSERVATION * n),
    }
    minor = np.minimum(data.allele_count, 2 * n - data.allele_count)
    rules[f"minor allele count below {threshold}"] = (
        (minor > 0) & (minor < threshold) & ~is_null_model
    )
    if family == "binomial":
        rules[f"fewer than {threshold} cases"] = data.cases < threshold
        rules[f"fewer than {threshold} controls"] = data.controls < threshold
    ones = data.indicator_ones
    rest = n[:, None] - ones
    small = (ones >= 0) & (((ones > 0) & (ones < threshold)) | ((rest > 0) & (rest < threshold)))
    rules[f"an indicator column with a cell below {threshold}"] = small.any(axis=1)
    fails = np.zeros(table.num_rows, dtype=bool)
    counts: Counter[str] = Counter()
    for label, broken in rules.items():
        broken = broken & ~data.withheld
        fails |= broken
        counts[label] += int(broken.sum())
    if not fails.any():
        return AirlockResult(Outcome.RELEASED, table, 0, ())
    reasons = tuple(
        f"{count} variant(s) withheld: {label}"
        if not is_null_model.any()
        else f"the null model fails: {label}"
        for label, count in counts.items()
        if count
    )
    if (fails & is_null_model).any() or (fails | data.withheld).all():
        return AirlockResult(Outcome.REFUSED, None, 0, reasons)
    return AirlockResult(Outcome.SUPPRESSED, gwas.withhold(table, fails), int(fails.sum()), reasons)
