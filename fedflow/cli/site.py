"""``fedflow site``: run a site node as an HTTPS service, and what an orchestrator pins of it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from executors.config import SiteConfig
from executors.service import create_app, serve
from fedflow.core import FedflowError
from governance.receipts import ReceiptKey

__all__ = ["app"]

app = typer.Typer(help="Run a site node as a service.", no_args_is_help=True)

_CONFIG = Annotated[
    Path,
    typer.Option("--config", "-c", help="The site's site.yaml.", exists=True, dir_okay=False),
]


@app.command("serve")
def serve_command(
    config: _CONFIG,
    host: Annotated[str | None, typer.Option(help="Override service.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override service.port.")] = None,
    allow_insecure_http: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-http", help="Serve plain HTTP without TLS (local development only)."
        ),
    ] = False,
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Override service.max_body_bytes (default 1 MiB).")
    ] = None,
    max_running_jobs: Annotated[
        int | None, typer.Option(help="Override service.max_running_jobs (default 4).")
    ] = None,
) -> None:
    """Serve the site protocol over HTTPS with mutual TLS until SIGTERM or Ctrl-C."""
    logging.getLogger("executors").setLevel(logging.INFO)
    try:
        serve(
            config,
            host=host,
            port=port,
            allow_insecure_http=allow_insecure_http,
            max_body_bytes=max_body_bytes,
            max_running_jobs=max_running_jobs,
        )
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("receipt-key")
def receipt_key(
    config: _CONFIG,
    out: Annotated[
        Path | None, typer.Option(help="Write the public key here instead of printing it.")
    ] = None,
) -> None:
    """The site's receipt-signing public key (made on first use): what orchestrators pin."""
    try:
        site = SiteConfig.load(config)
        key = ReceiptKey.load_or_create(site.state_dir / "receipt.key.pem")
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if out is None:
        typer.echo(key.public_pem.decode(), nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(key.public_pem)
        typer.echo(f"{out}  ({key.key_id})")


@app.command("openapi")
def openapi() -> None:
    """Print the site service's OpenAPI document."""

    def no_node() -> None:
        raise RuntimeError("the OpenAPI document needs no site")

    typer.echo(json.dumps(create_app(no_node).openapi(), indent=2))  # type: ignore[arg-type]
