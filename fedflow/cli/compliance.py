"""``fedflow compliance report``: controls, the mechanisms that enforce them, the tests."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fedflow.compliance import build_report, render_markdown

__all__ = ["app"]

app = typer.Typer(help="Map security and privacy controls to code and tests.", no_args_is_help=True)


class Format(StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"


@app.command()
def report(
    output_format: Annotated[Format, typer.Option("--format", help="Output format.")] = (
        Format.MARKDOWN
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of to stdout.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Exit 1 when a control has no mechanism or test, or metadata is wrong."
        ),
    ] = False,
) -> None:
    """Generate the report from the ``__controls__`` declarations next to the code."""
    built = build_report()
    text = built.to_json() if output_format is Format.JSON else render_markdown(built)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
    covered = sum(c.covered for c in built.controls)
    typer.echo(
        f"{covered} of {len(built.controls)} controls covered; "
        f"{len(built.problems)} metadata problems",
        err=True,
    )
    if strict and (built.gaps or built.problems):
        for gap in built.gaps:
            typer.echo(f"gap: {gap} has no mechanism or no test", err=True)
        for problem in built.problems:
            typer.echo(f"problem: {problem}", err=True)
        raise typer.Exit(1)
