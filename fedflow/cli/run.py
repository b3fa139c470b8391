"""``fedflow run`` and ``fedflow analyses``: run a federated analysis, list the analyses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fedflow.cli.render import make_console, outcome_table, show_result
from fedflow.core import FedflowError
from fedflow.core.registry import default_registry
from flows import QuorumNotMet, prefect_api, run_analysis

__all__ = ["analyses", "run"]


def run(
    analysis: Annotated[str, typer.Argument(help="Analysis name, e.g. cohort_count.")],
    federation: Annotated[
        Path, typer.Option("--federation", "-f", help="Federation profile (YAML).", dir_okay=False)
    ],
    params: Annotated[
        str, typer.Option("--params", "-p", help="Parameters as a JSON object, or @file.json.")
    ] = "{}",
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name (default: the profile's).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Analysis version (default: latest).")] = None,
    min_sites: Annotated[int, typer.Option(min=1, help="Sites that must release a partial.")] = 1,
    token: Annotated[
        str | None,
        typer.Option(envvar="FEDFLOW_TOKEN", help="Researcher token.", show_default=False),
    ] = None,
    output: Annotated[
        Literal["json", "table"], typer.Option("--format", help="json (stdout) or table.")
    ] = "json",
) -> None:
    """Run ANALYSIS over the sites of a federation and print the merged result and outcomes."""
    parsed = _parse_params(params)
    console = make_console()
    home = federation.resolve().parent / "prefect"
    try:
        with prefect_api(home) as api:
            api.wait()
            result = run_analysis(
                analysis,
                parsed,
                federation=federation,
                dataset=dataset,
                version=version,
                min_sites=min_sites,
                token=token,
            )
    except QuorumNotMet as exc:
        if output == "json":
            rows = [o.row() for o in exc.outcomes]
            typer.echo(json.dumps({"error": exc.message, "sites": rows}, indent=2))
        else:
            console.print(outcome_table(exc.outcomes))
            console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(1) from None
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if output == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        show_result(console, result)


def analyses() -> None:
    """List the analyses this installation offers, with version, output kind and code digest."""
    for cls in default_registry():
        ref = cls.ref()
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        typer.echo(f"{ref.name}@{ref.version}\t{cls.output.value}\t{ref.code_digest}\t{summary}")


def _parse_params(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {text[1:]}: {exc.strerror}", param_hint="--params"
            ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"not valid JSON ({exc.msg} at position {exc.pos})", param_hint="--params"
        ) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--params")
    return value
