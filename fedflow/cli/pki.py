"""``fedflow pki``: a demo CA and certificates for site services and the orchestrator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from executors.pki import DEFAULT_HOSTS, init_ca, issue
from fedflow.core import FedflowError

__all__ = ["app"]

app = typer.Typer(help="Make a demo CA and mutual-TLS certificates.", no_args_is_help=True)

_DIR = Annotated[Path, typer.Option("--dir", help="The CA's folder (ca.pem, ca.key.pem).")]


@app.command("init")
def init(directory: _DIR) -> None:
    """Make a CA in --dir (an existing one is kept)."""
    issued = init_ca(directory)
    typer.echo(
        f"CA certificate: {issued.cert}  (sites pin it as ca; services trust it as client_ca)"
    )


@app.command("issue")
def issue_command(
    directory: _DIR,
    name: Annotated[str, typer.Argument(help="File stem and common name: NAME.pem, NAME.key.pem.")],
    server: Annotated[
        bool, typer.Option("--server/--client", help="A site service's or an orchestrator's.")
    ] = True,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="A name or IP the server is reached at.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write (default: --dir).")] = None,
) -> None:
    """Sign a server certificate (for a site service) or a client one (for an orchestrator)."""
    try:
        issued = issue(
            directory,
            name,
            kind="server" if server else "client",
            hosts=tuple(host or DEFAULT_HOSTS),
            out=out,
        )
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"certificate: {issued.cert}\nkey:         {issued.key}  (mode 0600)")
