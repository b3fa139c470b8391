"""How results and per-site outcomes are shown on a terminal."""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from flows.outcomes import FederatedResult, SiteOutcome

__all__ = ["make_console", "outcome_table", "result_table", "show_result"]

_STYLE = {
    "released": "green",
    "released_with_suppression": "yellow",
    "refused": "red",
    "review_pending": "magenta",
    "failed": "bold red",
}


def make_console() -> Console:
    """A console as wide as the terminal, or 120 columns when output is redirected."""
    return Console(width=None if Console().is_terminal else 120)


def result_table(frame: pl.DataFrame, title: str | None = None) -> Table:
    """A rich table of a result; suppressed cells (null) show as ``suppressed``."""
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(column, justify="right" if frame[column].dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


def outcome_table(outcomes: list[SiteOutcome]) -> Table:
    """A rich table of what each site did."""
    table = Table(title="per-site outcomes", title_justify="left")
    for column in ("site", "outcome", "stage", "suppressed", "reasons"):
        table.add_column(column)
    for o in outcomes:
        style = _STYLE.get(o.status.value, "")
        table.add_row(
            o.site,
            f"[{style}]{o.status.value}[/]",
            o.stage,
            str(o.suppressed_cells),
            "; ".join(o.reasons),
        )
    return table


def show_result(console: Console, result: FederatedResult, title: str | None = None) -> None:
    """Print a federated result and its per-site outcomes."""
    console.print(outcome_table(result.outcomes))
    console.print(result_table(result.result, title or str(result.analysis)))


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]suppressed[/]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
