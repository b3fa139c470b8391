"""``fedflow run`` and ``fedflow analyses``: run a federated analysis, list the analyses.

``fedflow run <analysis>`` runs one federated step. Iterative methods, which run one step per
round, are dispatched by name (:data:`ITERATIVE`): ``fedflow run glm`` fits a GLM by federated
IRLS (:mod:`flows.glm`), with the model in ``--params`` (``--plot or.png`` draws the forest
plot of its odds or rate ratios); ``fedflow run km`` runs
``kaplan_meier`` and adds the log-rank test (:mod:`flows.km`; ``--plot km.png`` draws the
curves); ``fedflow run cox`` fits a Cox model by federated Newton (:mod:`flows.cox`), with
``cox_round``'s parameters plus ``max_rounds``, ``tol`` and ``confidence`` in ``--params``
(``--plot`` draws the hazard ratios' forest plot);
``fedflow run gwas`` runs an exact federated GWAS (:mod:`flows.gwas`, ``GwasOptions`` in
``--params``; ``--plot`` draws the Manhattan plot, ``--qq-plot`` the QQ plot, ``--results``
writes the whole per-variant table as TSV).

``--error-strategy``, ``--max-retries``, ``--timeout``, ``--min-sites``, ``--min-fraction``
and ``--resume`` say what a step or a fit (``glm``, ``km``, ``cox``, ``gwas``) does when sites
fail, and reuse an earlier run's verified releases (``docs/failures.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from fedflow.cli.render import make_console, outcome_table, show_result
from fedflow.core import FedflowError
from fedflow.core.configfile import describe_problems
from fedflow.core.registry import default_registry
from flows import QuorumNotMet, prefect_api, run_analysis
from flows.cox import CoxFit, CoxOptions, run_cox
from flows.errors import SiteFailed
from flows.glm import GlmFit, GlmOptions, fit_glm
from flows.gwas import GwasOptions, GwasResult, fit_gwas
from flows.km import run_km
from flows.strategy import ErrorStrategy, StepPolicy

if TYPE_CHECKING:
    import polars as pl

    from flows.outcomes import SiteOutcome

__all__ = ["ITERATIVE", "analyses", "run"]

ITERATIVE = {
    "glm": "exact GLM by federated IRLS (flows.glm); params: GlmOptions",
    "km": "Kaplan-Meier curves and log-rank test (flows.km); params: kaplan_meier's",
    "cox": "Cox proportional hazards by federated Newton (flows.cox); params: cox_round's",
    "gwas": "exact GWAS, Wald or score, per variant (flows.gwas); params: GwasOptions",
}
"""Methods ``fedflow run`` dispatches to a flow of their own instead of a single step."""
PLOTTED = frozenset({"km", "glm", "cox", "gwas"})
"""The methods ``--plot`` draws for: km's curves, glm's and cox's forest plot, gwas's
Manhattan plot."""


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
    plot: Annotated[
        Path | None,
        typer.Option(
            help="km: draw the curves with confidence bands as a PNG here; glm, cox: the "
            "forest plot of the coefficients (odds, rate or hazard ratios); gwas: the "
            "Manhattan plot."
        ),
    ] = None,
    qq_plot: Annotated[
        Path | None, typer.Option(help="gwas only: draw the QQ plot (with lambda) as a PNG here.")
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="gwas only: write the per-variant results as TSV here.")
    ] = None,
    review_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait while a site holds the result for its custodian's review.",
        ),
    ] = 300.0,
    secure: Annotated[
        bool | None,
        typer.Option(
            "--secure/--no-secure",
            help="Secure aggregation of an analysis step: --secure requires it, --no-secure "
            "turns it off; by default it is used where the output is additive.",
            show_default=False,
        ),
    ] = None,
    error_strategy: Annotated[
        ErrorStrategy,
        typer.Option(
            help="What to do with a failing site: retry (transient failures, then go on "
            "without it), ignore (go on without it), terminate (stop). A GWAS stops when "
            "a site is lost after its first round."
        ),
    ] = ErrorStrategy.RETRY,
    max_retries: Annotated[
        int, typer.Option(min=0, max=20, help="Retries of a transient site failure.")
    ] = 2,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds one site stage may take per attempt.")
    ] = 600.0,
    min_fraction: Annotated[
        float,
        typer.Option(min=0, max=1, help="Fraction of the sites that must release a partial."),
    ] = 0.0,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Reuse the verified releases of an earlier run of the same steps; ask only "
            "the sites that did not deliver (docs/failures.md).",
        ),
    ] = False,
) -> None:
    """Run ANALYSIS over the sites of a federation and print the merged result and outcomes."""
    if plot is not None and analysis not in PLOTTED:
        raise typer.BadParameter(
            "only fedflow run km, glm, cox and gwas draw a plot", param_hint="--plot"
        )
    if (qq_plot is not None or results is not None) and analysis != "gwas":
        raise typer.BadParameter("only fedflow run gwas takes --qq-plot and --results")
    parsed = _parse_params(params)
    policy = StepPolicy(
        error_strategy=error_strategy,
        max_retries=max_retries,
        timeout=timeout,
        min_sites=min_sites,
        min_fraction=min_fraction,
    )
    console = make_console()
    home = federation.resolve().parent / "prefect"
    options = _glm_options(parsed) if analysis == "glm" else None
    # What every flow takes: where, over which data, how many sites, as whom, on failure.
    common: dict[str, Any] = {
        "federation": federation,
        "dataset": dataset,
        "min_sites": min_sites,
        "token": token,
        "policy": policy,
        "resume": resume,
    }
    try:
        with prefect_api(home) as api:
            api.wait()
            if options is not None:
                fit = fit_glm(
                    options.formula,
                    options.family,
                    **common,
                    **options.model_dump(exclude={"formula", "family"}),
                )
                _show_fit(console, fit, output)
                _draw(console, fit, plot, output)
                return
            if analysis == "cox":
                model, cox_options = _cox_options(parsed)
                cox_fit = run_cox(
                    model,
                    **common,
                    **cox_options.model_dump(),
                )
                _show_cox(console, cox_fit, output)
                _draw(console, cox_fit, plot, output)
                return
            if analysis == "gwas":
                gwas_options = _gwas_options(parsed)
                gwas = fit_gwas(
                    gwas_options.formula,
                    gwas_options.family,
                    **common,
                    **gwas_options.model_dump(exclude={"formula", "family"}),
                )
                _show_gwas(console, gwas, output, plot, qq_plot, results)
                return
            if analysis == "km":
                km = run_km(
                    parsed,
                    **common,
                )
                if plot is not None:
                    km.plot(plot)
                if output == "json":
                    typer.echo(json.dumps(km.to_dict(), indent=2, default=str))
                else:
                    show_result(console, km.step)
                    console.print(f"log-rank: {km.logrank}")
                    if plot is not None:
                        console.print(f"curves drawn to {plot}")
                return
            result = run_analysis(
                analysis,
                parsed,
                version=version,
                review_timeout=review_timeout,
                secure=secure,
                **common,
            )
    except (QuorumNotMet, SiteFailed) as exc:
        if output == "json":
            rows = [o.row() for o in exc.outcomes]
            typer.echo(json.dumps({"error": exc.message, "sites": rows}, indent=2))
        else:
            console.print(outcome_table(exc.outcomes))
            _show_failures(console, exc.outcomes)
            console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(1) from None
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if output == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        show_result(console, result)
        _show_failures(console, result.outcomes)


def analyses() -> None:
    """List the analyses this installation offers, with version, output kind and code digest."""
    for cls in default_registry():
        ref = cls.ref()
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        typer.echo(f"{ref.name}@{ref.version}\t{cls.output.value}\t{ref.code_digest}\t{summary}")
    for name, about in ITERATIVE.items():
        typer.echo(f"{name}\titerative\t-\t{about}")


def _glm_options(parsed: dict[str, Any]) -> GlmOptions:
    try:
        return GlmOptions.model_validate(parsed)
    except ValidationError as exc:
        raise typer.BadParameter(describe_problems(exc), param_hint="--params") from None


def _gwas_options(parsed: dict[str, Any]) -> GwasOptions:
    try:
        return GwasOptions.model_validate(parsed)
    except ValidationError as exc:
        raise typer.BadParameter(describe_problems(exc), param_hint="--params") from None


def _show_gwas(
    console: Console,
    gwas: GwasResult,
    output: str,
    plot: Path | None,
    qq_plot: Path | None,
    results: Path | None,
) -> None:
    """Plots and the TSV first; then the whole result (json) or the top variants (table)."""
    from flows.plots import manhattan_plot
    from flows.plots import qq_plot as draw_qq

    if plot is not None:
        manhattan_plot(gwas.results, plot)
    if qq_plot is not None:
        draw_qq(gwas.results, qq_plot)
    if results is not None:
        gwas.results.write_csv(results, separator="\t")
    if output == "json":
        typer.echo(json.dumps(gwas.to_dict(), indent=2, default=str))
        return
    top = gwas.results.drop_nulls("p_value").sort("p_value").head(20)
    table = Table(title=f"{gwas.family} GWAS ({gwas.test}): {gwas.formula}, top variants")
    shown = ["variant", "n", "allele_count", "beta", "std_error", "p_value"]
    for column in shown:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in top.select(shown).iter_rows():
        table.add_row(row[0], *("-" if v is None else f"{v:.6g}" for v in row[1:]))
    console.print(table)
    statuses = gwas.results["status"].value_counts().sort("status").iter_rows()
    console.print(
        f"{gwas.results.height} variants ("
        + ", ".join(f"{n} {s}" for s, n in statuses)
        + f"), lambda {gwas.inflation:.4f}, {gwas.rounds} rounds"
    )
    console.print(outcome_table(gwas.outcomes))
    for path, what in ((plot, "Manhattan plot"), (qq_plot, "QQ plot"), (results, "results")):
        if path is not None:
            console.print(f"{what} written to {path}")


def _cox_options(parsed: dict[str, Any]) -> tuple[dict[str, Any], CoxOptions]:
    """Split ``--params`` into the model (``cox_round``'s parameters) and the fit options."""
    names = set(CoxOptions.model_fields)
    try:
        options = CoxOptions.model_validate({k: v for k, v in parsed.items() if k in names})
    except ValidationError as exc:
        raise typer.BadParameter(describe_problems(exc), param_hint="--params") from None
    return {k: v for k, v in parsed.items() if k not in names}, options


def _coefficients(title: str, coefficients: pl.DataFrame) -> Table:
    """A fit's coefficient table: the term, then every number to 6 significant digits."""
    table = Table(title=title)
    for column in coefficients.columns:
        table.add_column(column, justify="left" if column == "term" else "right")
    for row in coefficients.iter_rows():
        table.add_row(row[0], *(f"{v:.6g}" for v in row[1:]))
    return table


def _show_cox(console: Console, fit: CoxFit, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(fit.to_dict(), indent=2, default=str))
        return
    console.print(
        _coefficients(f"Cox proportional hazards (Breslow ties): {fit.formula}", fit.coefficients)
    )
    console.print(
        f"n {fit.n}, events {fit.events}, log partial likelihood {fit.loglik:.6f}, "
        f"{fit.rounds} rounds, sites: "
        + ", ".join(f"{r['site']} (n={r['n']}, events={r['events']})" for r in fit.sites.to_dicts())
    )
    console.print(outcome_table(fit.outcomes))


def _draw(console: Console, fit: GlmFit | CoxFit, plot: Path | None, output: str) -> None:
    """Draw ``fit``'s forest plot to ``plot`` (if given); exit with 2 when there is nothing
    to draw (an intercept-only model) or an interval cannot be drawn."""
    if plot is None:
        return
    try:
        fit.plot(plot)
    except ValueError as exc:
        typer.echo(f"error: no forest plot: {exc}", err=True)
        raise typer.Exit(2) from None
    if output != "json":
        console.print(f"forest plot drawn to {plot}")


def _show_fit(console: Console, fit: GlmFit, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(fit.to_dict(), indent=2, default=str))
        return
    console.print(_coefficients(f"{fit.family} GLM: {fit.formula}", fit.coefficients))
    console.print(
        f"n {fit.n}, deviance {fit.deviance:.6f}, AIC {fit.aic:.4f}, "
        f"{fit.rounds} rounds, sites: "
        + ", ".join(f"{r['site']} (n={r['n']})" for r in fit.sites.to_dicts())
    )
    console.print(outcome_table(fit.outcomes))
    _show_failures(console, fit.outcomes)
    if fit.dropped:
        console.print(
            "dropped during the fit (the fit is over the other sites): "
            + ", ".join(f"{site} in round {k}" for site, k in fit.dropped.items())
        )


def _show_failures(console: Console, outcomes: list[SiteOutcome]) -> None:
    """One line per failed or reused site: how it failed, where, after how many attempts."""
    for o in outcomes:
        if o.failure is not None:
            where = f"{o.stage}" + ("" if o.round is None else f", round {o.round}")
            console.print(
                f"[red]{o.site}[/]: {o.failure} at {where} after {o.attempts} attempt(s): "
                + "; ".join(o.reasons)
            )
    reused = [o.site for o in outcomes if o.reused]
    if reused:
        console.print(f"reused from an earlier run (verified again): {', '.join(reused)}")


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
