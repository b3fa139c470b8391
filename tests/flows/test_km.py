"""Kaplan-Meier curves drawn as a PNG (``KmResult.plot``, ``fedflow run km --plot``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from fedflow.cli import app
from flows.analyses.km import KaplanMeier
from flows.km import plot_km

pytestmark = pytest.mark.integration


def _drug(*ids: int) -> dict[str, Any]:
    return {"domain": "drug", "concept_ids": list(ids), "include_descendants": True}


PARAMS: dict[str, Any] = {
    "entry": _drug(1118084, 1124300),
    "event": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
    "groups": {"celecoxib": _drug(1118084), "diclofenac": _drug(1124300)},
    "interval_days": 30,
    "max_days": 365,
}


def test_the_curves_are_drawn_as_a_png(eunomia: dict[str, pa.Table], tmp_path: Path) -> None:
    analysis = KaplanMeier()
    params = analysis.parse_params(PARAMS)
    tables = {t: eunomia[t].select(list(c)) for t, c in analysis.tables(params).items()}
    curve = pl.from_arrow(analysis.finalize(analysis.local(tables, params), params))
    assert isinstance(curve, pl.DataFrame)
    logrank = {"chi2": 3.2, "df": 1.0, "p_value": 0.07}
    path = plot_km(curve, tmp_path / "km.png", title="GI bleed after NSAID", logrank=logrank)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (840, 540)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 50  # two curves, two translucent bands, text: not a blank canvas
    blue = np.array([31, 119, 180])  # matplotlib's first curve colour
    assert np.any(np.all(pixels == blue, axis=1))


def test_only_the_iterative_methods_draw_a_plot(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "cohort_count", "-f", str(tmp_path / "f.yaml"), "--plot", str(tmp_path / "x.png")],
    )
    assert result.exit_code == 2
    assert "only fedflow run km, glm, cox and gwas draw a plot" in result.output
    assert not (tmp_path / "x.png").exists()
