"""GWAS plots as PNG: the Manhattan plot and the QQ plot of a results table.

Both read a :attr:`flows.gwas.GwasResult.results` table (``chrom``, ``pos``, ``p_value``;
rows without a p-value are left out) and draw with matplotlib's Agg renderer (no display, no
global pyplot state), as :mod:`flows.km` does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["GENOME_WIDE", "manhattan_plot", "qq_plot"]

GENOME_WIDE = 5e-8
"""The conventional genome-wide significance level, drawn as a line on the Manhattan plot."""


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
