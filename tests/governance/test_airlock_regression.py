"""The airlock on GLM rounds: released whole, or refused for each disclosure rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fedflow.core import InvalidRequest, OutputKind, regression
from governance.airlock import MAX_PARAMETERS_PER_OBSERVATION, Outcome, check, check_regression


def _partial(
    x: np.ndarray, y: np.ndarray, family: str = "binomial", columns: list[str] | None = None
) -> pa.Table:
    """A round's statistics at the starting values (W = 1 is enough for the airlock's rules)."""
    ones = np.ones(len(y))
    names = columns or [f"x{j}" for j in range(x.shape[1])]
    return regression.from_arrays(
        family,
        names,
        x=x,
        y=y,
        weights=ones,
        working_weights=ones,
        working_response=y,
        deviance=1.0,
        loglik=-0.5,
    )


def _design(n: int, *, exposed: int, cases: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    exposure = np.zeros(n)
    exposure[:exposed] = 1
    y = np.zeros(n)
    y[rng.permutation(n)[:cases]] = 1
    return np.column_stack([np.ones(n), age, exposure]), y


def test_a_safe_round_is_released_unchanged():
    x, y = _design(200, exposed=80, cases=40)
    partial = _partial(x, y)
    result = check(OutputKind.REGRESSION, partial, threshold=10)
    assert result.outcome is Outcome.RELEASED and result.reasons == ()
    assert result.table is not None and result.table.equals(partial)


@pytest.mark.parametrize(
    ("n", "exposed", "cases", "reason"),
    [
        (8, 4, 4, "8 observations is below the threshold of 10"),
        (12, 6, 6, "residual degrees of freedom is below the threshold of 10"),
        (200, 80, 7, "7 cases is below the threshold of 10"),
        (200, 80, 195, "5 non-cases is below the threshold of 10"),
        (200, 6, 40, "indicator column 'x2' has a cell below the threshold of 10"),
        (200, 196, 40, "indicator column 'x2' has a cell below the threshold of 10"),
    ],
)
def test_disclosive_rounds_are_refused(n, exposed, cases, reason):
    x, y = _design(n, exposed=exposed, cases=cases)
    result = check_regression(_partial(x, y), threshold=10)
    assert result.outcome is Outcome.REFUSED and result.table is None
    assert any(reason in r for r in result.reasons), result.reasons


def test_a_saturated_model_is_refused():
    x = np.eye(4)
    result = check_regression(_partial(x, np.array([0.0, 1, 0, 1]), "gaussian"), threshold=0)
    assert result.outcome is Outcome.REFUSED
    assert any("saturated model: 4 parameters for 4 observations" in r for r in result.reasons)


def test_too_many_parameters_per_observation_are_refused():
    n, p = 40, 15
    x = np.column_stack([np.ones(n), np.random.default_rng(3).normal(size=(n, p - 1))])
    y = np.random.default_rng(4).normal(size=n)
    result = check_regression(_partial(x, y, "gaussian"), threshold=5)
    assert result.outcome is Outcome.REFUSED
    expected = f"0.38 parameters per observation exceeds {MAX_PARAMETERS_PER_OBSERVATION:g}"
    assert expected in result.reasons


def test_too_few_events_in_a_count_outcome_are_refused():
    x, _ = _design(100, exposed=50, cases=0)
    y = np.zeros(100)
    y[:3] = [2, 1, 1]
    result = check_regression(_partial(x, y, "poisson"), threshold=5)
    assert result.outcome is Outcome.REFUSED
    assert "4 events is below the threshold of 5" in result.reasons


def test_a_table_that_is_not_a_regression_partial_is_refused():
    result = check(OutputKind.REGRESSION, pa.table({"count": [3]}), threshold=10)
    assert result.outcome is Outcome.REFUSED
    assert result.reasons[0].startswith("not a valid regression partial")


def test_merged_statistics_equal_the_statistics_of_the_pooled_rows():
    x, y = _design(300, exposed=120, cases=60)
    parts = [_partial(x[a:b], y[a:b]) for a, b in ((0, 100), (100, 170), (170, 300))]
    merged = regression.merge(parts)
    whole = _partial(x, y)
    for column in ("n", "y_one", "y_zero", "indicator_ones"):
        assert merged[column].to_pylist() == whole[column].to_pylist()
    for got, want in zip(regression.matrices(merged), regression.matrices(whole), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_partials_of_different_models_do_not_merge():
    x, y = _design(50, exposed=20, cases=20)
    with pytest.raises(InvalidRequest, match="different models"):
        regression.merge([_partial(x, y), _partial(x, y, columns=["a", "b", "c"])])
