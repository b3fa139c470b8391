"""What a forest plot draws, and what it refuses to draw (the plots on real fits: test_glm,
test_cox)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows.plots import forest_plot, forest_rows


def _coefficients(**intervals: tuple[float, float, float]) -> pl.DataFrame:
    rows = [("Intercept", -1.0, -1.5, -0.5), *((t, *v) for t, v in intervals.items())]
    return pl.DataFrame(rows, schema=["term", "estimate", "ci_low", "ci_high"], orient="row")


def test_ratios_are_the_exponentiated_coefficients_without_the_intercept() -> None:
    table = _coefficients(age=(0.01, 0.0, 0.02), smoker=(-0.5, -0.9, -0.1))
    ratios = forest_rows(table, ratio=True)
    assert ratios["term"].to_list() == ["age", "smoker"]
    np.testing.assert_allclose(ratios["estimate"], np.exp([0.01, -0.5]), rtol=1e-15)
    np.testing.assert_allclose(ratios["ci_low"], np.exp([0.0, -0.9]), rtol=1e-15)
    assert forest_rows(table, ratio=False)["estimate"].to_list() == [0.01, -0.5]


def test_an_interval_that_cannot_be_drawn_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    huge = _coefficients(age=(0.01, 0.0, 0.02), dose=(800.0, 700.0, 900.0))  # exp overflows
    with pytest.raises(ValueError, match=r"^the interval of dose cannot be drawn as ratios$"):
        forest_plot(huge, tmp_path / "or.png", ratio="odds ratio")
    assert not (tmp_path / "or.png").exists()
    assert forest_rows(huge, ratio=False).height == 2  # as coefficients it can
    missing = _coefficients(age=(0.01, math.nan, 0.02))
    with pytest.raises(ValueError, match="interval of age cannot be drawn as they are"):
        forest_rows(missing, ratio=False)
    with pytest.raises(ValueError, match="no term besides the intercept"):
        forest_rows(_coefficients(), ratio=True)
