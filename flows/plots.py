"""Result plots as PNG: a fitted model's forest plot, and GWAS's Manhattan and QQ plots.

:func:`forest_plot` reads a fit's ``coefficients`` table (``term``, ``estimate``, ``ci_low``,
``ci_high``: :class:`flows.glm.GlmFit`, :class:`flows.cox.CoxFit`). The GWAS plots read a
:attr:`flows.gwas.GwasResult.results` table (``chrom``, ``pos``, ``p_value``; rows without a
p-value are left out). All draw with matplotlib's Agg renderer (no display, no global pyplot
state), as :mod:`flows.km` does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["GENOME_WIDE", "INTERCEPT", "forest_plot", "forest_rows", "manhattan_plot", "qq_plot"]

GENOME_WIDE = 5e-8
"""The conventional genome-wide significance level, drawn as a line on the Manhattan plot."""
INTERCEPT = "Intercept"
"""formulaic's name for the intercept, which a forest plot leaves out."""
RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100)
"""Where a ratio axis is labelled, within the range of the intervals it draws."""


def forest_rows(coefficients: pl.DataFrame, *, ratio: bool) -> pl.DataFrame:
    """What a forest plot draws: every term but the intercept with its estimate and confidence
    limits, exponentiated when ``ratio`` (odds, rate or hazard ratios)."""
    rows = coefficients.filter(pl.col("term") != INTERCEPT).select(
        "term", "estimate", "ci_low", "ci_high"
    )
    if rows.is_empty():
        raise ValueError("the model has no term besides the intercept to plot")
    if ratio:
        rows = rows.with_columns(pl.col("estimate", "ci_low", "ci_high").exp())
    values = rows.select("estimate", "ci_low", "ci_high").to_numpy()
    drawable = np.isfinite(values) & ((values > 0) if ratio else True)
    if not drawable.all():
        terms = rows["term"].filter(~drawable.all(axis=1)).to_list()
        scale = "as ratios" if ratio else "as they are"
        raise ValueError(f"the interval of {', '.join(terms)} cannot be drawn {scale}")
    return rows


def forest_plot(
    coefficients: pl.DataFrame, path: Path, *, ratio: str | None = None, title: str | None = None
) -> Path:
    """Each term's estimate and confidence interval, one row a term, with a line at no effect.

    ``ratio``: what the model's coefficients exponentiate to (``"odds ratio"``, ``"rate
    ratio"``, ``"hazard ratio"``), drawn on a log axis with the line at 1; None draws the
    coefficients themselves, with the line at 0 (an identity-link GLM).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    rows = forest_rows(coefficients, ratio=ratio is not None)
    estimate = rows["estimate"].to_numpy()
    low, high = rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()
    position = np.arange(rows.height)[::-1]  # the first term at the top
    figure = Figure(figsize=(7, 1.2 + 0.45 * rows.height), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    axes.errorbar(
        estimate,
        position,
        xerr=[estimate - low, high - estimate],
        fmt="s",
        color="#1f4e79",
        ecolor="#1f4e79",
        capsize=3,
    )
    axes.axvline(1.0 if ratio else 0.0, color="#b22222", linewidth=0.8, linestyle="--")
    if ratio:
        axes.set_xscale("log")
        span = (min(float(low.min()), 1.0), max(float(high.max()), 1.0))
        ticks = [t for t in RATIO_TICKS if span[0] / 1.1 <= t <= span[1] * 1.1]
        axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
        axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_yticks(position, rows["term"].to_list())
    axes.set_ylim(-0.7, rows.height - 0.3)
    values = axes.twinx()  # the figures, beside their rows
    values.set_ylim(axes.get_ylim())
    values.set_yticks(
        position,
        [f"{e:.3g} [{a:.3g}, {b:.3g}]" for e, a, b in zip(estimate, low, high, strict=True)],
    )
    values.tick_params(right=False)
    axes.set_xlabel(
        f"{ratio} (confidence interval)" if ratio else "coefficient (confidence interval)"
    )
    axes.set_title(title or f"{rows.height} term(s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _chrom_order(name: str) -> tuple[int, str]:
    bare = name.removeprefix("chr")
    return (int(bare), "") if bare.isdigit() else (100, bare)


def manhattan_plot(results: pl.DataFrame, path: Path, *, title: str | None = None) -> Path:
    """-log10(p) by genomic position, chromosomes side by side in alternating colours."""
    from matplotlib.figure import Figure  # imported here: only plotting needs matplotlib

    tested = results.drop_nulls("p_value")
    figure = Figure(figsize=(10, 4), dpi=100)
    axes = figure.add_subplot()
    offset, ticks, labels = 0.0, [], []
    chroms = sorted(tested["chrom"].unique().to_list(), key=_chrom_order)
    for i, chrom in enumerate(chroms):
        rows = tested.filter(pl.col("chrom") == chrom)
        pos = rows["pos"].to_numpy().astype(float)
        span = max(float(pos.max() - pos.min()), 1.0)
        x = offset + (pos - pos.min())
        y = -np.log10(np.clip(rows["p_value"].to_numpy(), 1e-300, 1.0))
        axes.scatter(x, y, s=6, color=("#1f4e79", "#7fa7d1")[i % 2], linewidths=0)
        ticks.append(offset + span / 2)
        labels.append(chrom.removeprefix("chr"))
        offset += span * 1.02 + 1
    axes.axhline(-math.log10(GENOME_WIDE), color="#b22222", linewidth=0.8, linestyle="--")
    axes.set_xticks(ticks, labels, fontsize=7)
    axes.set_xlabel("chromosome")
    axes.set_ylabel("-log10(p)")
    axes.set_title(title or f"Manhattan plot ({tested.height} variants)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def qq_plot(results: pl.DataFrame, path: Path, *, title: str | None = None) -> Path:
    """Observed against expected -log10(p) under the null, with the genomic inflation lambda."""
    from matplotlib.figure import Figure

    p = np.sort(np.clip(results.drop_nulls("p_value")["p_value"].to_numpy(), 1e-300, 1.0))
    m = len(p)
    expected = -np.log10((np.arange(1, m + 1) - 0.5) / max(m, 1))
    observed = -np.log10(p)
    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    axes.scatter(expected, observed, s=6, color="#1f4e79", linewidths=0)
    top = float(max(expected.max(initial=1.0), observed.max(initial=1.0)))
    axes.plot([0, top], [0, top], color="#b22222", linewidth=0.8)
    inflation = _inflation(results)
    axes.set_xlabel("expected -log10(p)")
    axes.set_ylabel("observed -log10(p)")
    label = f"lambda = {inflation:.3f}" if not math.isnan(inflation) else "lambda: no test"
    axes.set_title(title or f"QQ plot ({m} variants, {label})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _inflation(results: pl.DataFrame) -> float:
    chi2 = results.drop_nulls("chi2")["chi2"] if "chi2" in results.columns else None
    if chi2 is None or chi2.len() == 0:
        return math.nan
    return float(np.median(chi2.to_numpy())) / 0.454936423119572
