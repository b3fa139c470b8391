"""``fedflow releases``: the site releases the orchestrator keeps for ``--resume``.

Every federated step keeps the verified releases it used in the federation's
``state_dir/checkpoints.db`` (:mod:`flows.resume`), so a re-run asks only the sites that did
not deliver. ``fedflow releases show`` says what is kept; ``fedflow releases prune
--older-than DAYS`` forgets what was saved before then (audited in the orchestrator's log as
``resume.pruned``). A release older than the researcher's token can no longer be resumed
anyway: the token is part of a step's key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedflow.cli.options import FederationProfile
from fedflow.cli.render import make_console
from fedflow.core import FedflowError
from flows.federated import CHECKPOINTS
from flows.federation import Federation
from flows.resume import CheckpointStore
from governance.audit import AuditLog

__all__ = ["app"]

app = typer.Typer(help="The site releases kept for --resume.", no_args_is_help=True)


def _profile(federation: Path) -> Federation:
    try:
        return Federation.load(federation)
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _store(path: Path) -> Iterator[CheckpointStore]:
    """The store at ``path``; a file that is not one is named, with exit status 2."""
    try:
        yield CheckpointStore(path)
    except sqlite3.DatabaseError as exc:
        typer.echo(f"error: {path} is not a readable release store: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def show(
    federation: FederationProfile,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Per analysis: the steps and releases kept, and when the oldest and newest were saved."""
    path = _profile(federation).state_dir / CHECKPOINTS
    rows: list[dict[str, object]] = []
    if path.exists():  # showing creates nothing
        with _store(path) as store:
            rows = store.summary()
    if as_json:
        typer.echo(json.dumps({"file": str(path), "kept": rows}, indent=2))
        return
    columns = ("analysis", "steps", "releases", "oldest", "newest")
    table = Table(title=f"kept for --resume in {path}")
    for column in columns:
        table.add_column(column, justify="right" if column in ("steps", "releases") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    make_console().print(table)


@app.command()
def prune(
    federation: FederationProfile,
    older_than: Annotated[
        float, typer.Option(min=0, help="Forget releases saved more than this many days ago.")
    ],
) -> None:
    """Forget the kept releases saved more than OLDER_THAN days ago (audited)."""
    profile = _profile(federation)
    before = datetime.now(UTC) - timedelta(days=older_than)
    with _store(profile.state_dir / CHECKPOINTS) as store:
        removed = store.prune(before)
    with AuditLog(profile.state_dir / "audit.db", site="orchestrator") as audit:
        audit.append(
            "resume.pruned",
            actor="operator",
            details={"before": before.isoformat(), "releases": removed, "file": CHECKPOINTS},
        )
    typer.echo(f"forgot {removed} release(s) saved before {before.isoformat(timespec='seconds')}")
