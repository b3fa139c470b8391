"""``fedflow server start``: a Prefect server with the flow library deployed, for the Prefect UI.

See ``docs/operations.md``: the server keeps its SQLite database under ``--home`` unless
``--database-url`` (or ``PREFECT_API_DATABASE_CONNECTION_URL``) names a PostgreSQL database;
every federated flow is served as a deployment whose ``federation`` defaults to ``--federation``.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from fedflow.core import FedflowError
from fedflow.core.settings import get_settings

__all__ = ["app", "start"]

app = typer.Typer(
    help="A Prefect server with the federated flows deployed, for the Prefect UI.",
    no_args_is_help=True,
)


@app.command("start")
def start(
    federation: Annotated[
        Path | None,
        typer.Option(
            "--federation",
            "-f",
            help="The federation profile the deployments run on by default (the UI's form "
            "can change it per run).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(
            help="The server's folder: its SQLite database and log (default: "
            "$FEDFLOW_HOME/server, FEDFLOW_HOME defaulting to .fedflow)."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="The server's database instead of SQLite, e.g. "
            "postgresql+asyncpg://user:password@host:5432/prefect (or set "
            "PREFECT_API_DATABASE_CONNECTION_URL).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="The address the server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The server's port (UI and API).")] = 4200,
    limit: Annotated[
        int | None, typer.Option(help="At most this many flow runs at once (default: no limit).")
    ] = None,
) -> None:
    """Start a Prefect server and serve every federated flow as a deployment until Ctrl-C or
    SIGTERM; then stop the runs still going, the runner and the server."""
    from flows.deploy import served_library

    signal.signal(signal.SIGTERM, _interrupt)
    home = home or get_settings().home / "server"
    try:
        with served_library(
            home,
            federation=federation,
            database_url=database_url,
            host=host,
            port=port,
            limit=limit,
        ) as served:
            typer.echo(f"Prefect UI:  {served.ui_url}")
            typer.echo(f"Prefect API: {served.api_url}  (PREFECT_API_URL for fedflow run)")
            typer.echo("Deployments (Deployments > Run in the UI):")
            for name in served.deployments:
                typer.echo(f"  {name}")
            typer.echo(f"Server log:  {home / 'server.log'}")
            typer.echo("Stop with Ctrl-C.")
            threading.Event().wait()
    except KeyboardInterrupt:
        typer.echo("stopped")
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the command as Ctrl-C does; a second one does not cut the clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
