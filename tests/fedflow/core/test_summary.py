"""Summary partials: moments merge to the pooled ones, sketches merge exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedflow.core import InvalidRequest, summary


def test_merged_moments_and_sketch_equal_the_pooled_ones() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(3, 1, 5000), -rng.exponential(2, 300), np.zeros(40)])
    chunks = np.array_split(rng.permutation(values), 7)
    parts = [summary.from_values(c, 0.01, persons=len(c)) for c in chunks]
    merged = summary.merge(parts)
    pooled = summary.from_values(values, 0.01, persons=len(values))
    row, ref = merged.to_pylist()[0], pooled.to_pylist()[0]
    assert row["n"] == ref["n"] == len(values) and row["persons"] == len(values)
    assert math.isclose(row["mean"], values.mean(), rel_tol=1e-12)
    assert math.isclose(row["m2"] / (len(values) - 1), values.var(ddof=1), rel_tol=1e-10)
    assert (row["min"], row["max"]) == (values.min(), values.max())
    assert row["buckets"] == ref["buckets"]


@pytest.mark.parametrize("q", [0.01, 0.1, 0.5, 0.9, 0.99])
def test_sketch_quantiles_are_within_the_relative_accuracy(q: float) -> None:
    values = np.random.default_rng(5).lognormal(2, 1.5, 20_000)
    estimate = summary.quantiles(summary.from_values(values, 0.01, persons=1), [q])[0]
    exact = np.sort(values)[int(q * (len(values) - 1))]
    assert estimate is not None and abs(estimate - exact) <= 0.01 * exact + 1e-12


def test_empty_and_invalid_summaries() -> None:
    empty = summary.from_values(np.array([]), 0.05, persons=0)
    assert summary.quantiles(empty, [0.5]) == [None]
    assert summary.merge([empty, empty]).to_pylist()[0]["n"] == 0
    with pytest.raises(InvalidRequest):
        summary.from_values(np.array([1.0]), 1.5, persons=1)
    with pytest.raises(InvalidRequest, match="different relative accuracy"):
        summary.merge(
            [
                summary.from_values(np.ones(3), 0.01, persons=1),
                summary.from_values(np.ones(3), 0.02, persons=1),
            ]
        )
