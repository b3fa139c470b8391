"""``fedflow airlock``: the custodian's review queue (list, show, approve, reject, export).

Run at the site, on the site's own state folder (``--config site.yaml``), beside a running
site service or node: decisions are written to the site's review queue and audit log, and the
site sees them at the orchestrator's next release attempt. ``show`` prints the airlock's
assessment and the table that would be released: aggregates only, never rows.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from executors.config import SiteConfig
from fedflow.cli.render import make_console, result_table
from fedflow.core import FedflowError
from governance.audit import AuditLog
from governance.review import ReviewItem, ReviewQueue, ReviewState, decide_review
from governance.sacro import write_results_json

__all__ = ["app"]

app = typer.Typer(help="Review results a site holds in its airlock.", no_args_is_help=True)

_CONFIG = Annotated[
    Path,
    typer.Option("--config", "-c", help="The site's site.yaml.", exists=True, dir_okay=False),
]
_JOB = Annotated[str, typer.Argument(help="The job id of the held result (see `list`).")]
_REVIEWER = Annotated[
    str, typer.Option("--reviewer", help="Who decides (default: the current OS user).")
]


@contextmanager
def _site(config: Path) -> Iterator[tuple[str, ReviewQueue, AuditLog]]:
    """The site's name, review queue and audit log; errors end the command with code 2."""
    queue: ReviewQueue | None = None
    audit: AuditLog | None = None
    try:
        site = SiteConfig.load(config)
        queue = ReviewQueue(site.state_dir / "review.db")
        audit = AuditLog(site.state_dir / "audit.db", site=site.site)
        yield site.site, queue, audit
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if queue is not None:
            queue.close()
        if audit is not None:
            audit.close()


@app.command("list")
def list_items(
    config: _CONFIG,
    all_items: Annotated[
        bool, typer.Option("--all", help="Also list decided results (default: pending only).")
    ] = False,
) -> None:
    """List the results held for review."""
    with _site(config) as (site, queue, _):
        items = queue.items(None if all_items else ReviewState.PENDING)
    table = Table(title=f"held for review at {site}", title_justify="left")
    table.add_column("job", no_wrap=True, min_width=32)
    for column in ("state", "analysis", "kind", "project", "researcher", "held since"):
        table.add_column(column)
    for item in items:
        table.add_row(
            item.job_id,
            item.state.value,
            item.analysis,
            item.output_kind,
            item.project,
            item.researcher,
            item.created_at[:19],
        )
    make_console().print(table)
    if not items:
        typer.echo("nothing is waiting for review" if not all_items else "the queue is empty")


@app.command()
def show(config: _CONFIG, job_id: _JOB) -> None:
    """Show a held result: who asked, the airlock's assessment and the table it would release."""
    with _site(config) as (site, queue, _):
        item = queue.get(job_id)
    if item is None:
        typer.echo(f"error: no result of job {job_id!r} is held for review at {site}", err=True)
        raise typer.Exit(2)
    console = make_console()
    for label, value in _facts(item):
        console.print(f"[bold]{label}:[/] {value}")
    frame = pl.from_arrow(item.table())
    assert isinstance(frame, pl.DataFrame)
    label = {
        ReviewState.PENDING: "would be released",
        ReviewState.APPROVED: "approved for release",
        ReviewState.REJECTED: "rejected, not released",
    }[item.state]
    console.print(f"[bold]{label}:[/]")
    console.print(result_table(frame))


@app.command()
def approve(
    config: _CONFIG,
    job_id: _JOB,
    reviewer: _REVIEWER = "",
    comment: Annotated[str | None, typer.Option(help="Why it may leave (optional).")] = None,
) -> None:
    """Approve a held result: it is released, exactly as shown, at the next release call."""
    _decide(config, job_id, approve=True, reviewer=reviewer, reason=comment)


@app.command()
def reject(
    config: _CONFIG,
    job_id: _JOB,
    reason: Annotated[
        str | None, typer.Option(help="Why it may not leave (required; the researcher sees it).")
    ] = None,
    reviewer: _REVIEWER = "",
) -> None:
    """Reject a held result: the release is refused with the reason."""
    _decide(config, job_id, approve=False, reviewer=reviewer, reason=reason)


@app.command()
def export(
    config: _CONFIG,
    out: Annotated[
        Path, typer.Option(help="The results.json to write (CSV tables go beside it).")
    ] = Path("results.json"),
    all_items: Annotated[
        bool, typer.Option("--all", help="Also export decided results (default: pending only).")
    ] = False,
) -> None:
    """Write the held results as a SACRO-compatible results.json (ACRO's format)."""
    with _site(config) as (site, queue, _):
        items = queue.items(None if all_items else ReviewState.PENDING)
        write_results_json(items, out, site=site)
    typer.echo(f"{out}  ({len(items)} output(s))")


def _decide(config: Path, job_id: str, *, approve: bool, reviewer: str, reason: str | None) -> None:
    with _site(config) as (site, queue, audit):
        item = decide_review(
            queue,
            audit,
            job_id,
            approve=approve,
            reviewer=reviewer or getpass.getuser(),
            reason=reason,
        )
    typer.echo(f"{item.job_id}: {item.state.value} by {item.reviewer} at {site}")


def _facts(item: ReviewItem) -> list[tuple[str, str]]:
    facts = [
        ("job", item.job_id),
        ("state", item.state.value),
        ("request", item.request_id),
        ("analysis", f"{item.analysis} ({item.output_kind})"),
        ("dataset", item.dataset),
        ("researcher", f"{item.researcher}, project {item.project}, purpose {item.purpose}"),
        ("held since", item.created_at),
        ("airlock", f"{item.outcome}, {item.suppressed_cells} cell(s) suppressed"),
        ("reasons", "; ".join(item.reasons) or "none"),
        ("result digest", item.result_digest),
    ]
    if item.state is not ReviewState.PENDING:
        facts.append(("decision", f"{item.state.value} by {item.reviewer} at {item.decided_at}"))
        if item.reason:
            facts.append(("reason", item.reason))
    return facts
