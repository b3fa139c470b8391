"""``fedflow site``: run a site node as an HTTPS service, what an orchestrator pins of it, the
custodian accounts of its review page (``fedflow site user``), and pruning its finished jobs."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from executors.config import SiteConfig
from executors.quarantine import FOLDER as QUARANTINE_FOLDER
from executors.quarantine import Quarantine
from executors.service import create_app, serve
from executors.webusers import WebUsers
from fedflow.core import FedflowError
from governance.audit import AuditLog
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
    """Serve the site protocol over HTTPS with mutual TLS until SIGTERM or Ctrl-C.

    With a ``review_page`` section in the site config, also serve the custodian review page.
    """
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


@app.command("pull")
def pull_command(
    config: _CONFIG,
    relay: Annotated[str, typer.Option(help="The relay's URL (https://host:port).")],
    ca: Annotated[
        Path, typer.Option(help="The relay's CA certificate (pinned).", exists=True, dir_okay=False)
    ],
    cert: Annotated[
        Path,
        typer.Option(
            help="The site's client certificate (its name must be the site's).",
            exists=True,
            dir_okay=False,
        ),
    ],
    key: Annotated[
        Path, typer.Option(help="The client certificate's key.", exists=True, dir_okay=False)
    ],
    poll_s: Annotated[float, typer.Option(help="How long each poll waits for a call.")] = 15.0,
) -> None:
    """Take part without accepting connections: dial out to a relay and answer its calls."""
    from executors.pull.agent import run_agent

    logging.getLogger("executors").setLevel(logging.INFO)
    try:
        run_agent(config, relay, ca=ca, cert=cert, key=key, poll_s=poll_s)
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


@app.command("review-page")
def review_page(config: _CONFIG) -> None:
    """Serve only the custodian review page (its review_page section) until Ctrl-C or SIGTERM.

    For a site whose node runs elsewhere on this machine (``fedflow site pull``, a notebook);
    ``fedflow site serve`` already serves the page beside the site API.
    """
    from executors.review_web import review_server

    try:
        site = SiteConfig.load(config)
        server = review_server(site)
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    page = site.review_page
    assert page is not None
    scheme = "https" if page.tls else "http"
    typer.echo(f"review page of {site.site}: {scheme}://{page.host}:{page.port}/", err=True)
    server.run()


users_app = typer.Typer(
    help="Custodian accounts of the review page (docs/review-page.md).", no_args_is_help=True
)
app.add_typer(users_app, name="user")


@app.command("prune-jobs")
def prune_jobs(
    config: _CONFIG,
    older_than: Annotated[
        float, typer.Option(min=0, help="Delete jobs that finished more than this many days ago.")
    ],
) -> None:
    """Delete the files of finished jobs (released, refused, failed) older than OLDER_THAN days.

    Open jobs are never touched; the audit log keeps every pruned job's digests and receipt.
    Audited as ``quarantine.pruned``, or ``quarantine.prune_failed`` when a file cannot be
    deleted (exit 1).
    """
    try:
        site = SiteConfig.load(config)
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    before = datetime.now(UTC) - timedelta(days=older_than)
    folder = site.state_dir / QUARANTINE_FOLDER
    try:
        removed = Quarantine(folder).prune(before)
    except OSError as exc:
        _audit(site, "quarantine.prune_failed", before=before.isoformat(), error=type(exc).__name__)
        typer.echo(f"error: cannot prune {folder}: {exc.strerror or type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    _audit(site, "quarantine.pruned", before=before.isoformat(), jobs=removed)
    cutoff = before.isoformat(timespec="seconds")
    typer.echo(f"deleted {removed} finished job(s) from before {cutoff}")


def _users(config: Path) -> tuple[SiteConfig, WebUsers]:
    site = SiteConfig.load(config)
    return site, WebUsers(site.review_users())


def _audit(site: SiteConfig, event: str, **details: Any) -> None:
    """Record ``event`` in the site's audit log, by the OS user who ran the command."""
    with AuditLog(site.state_dir / "audit.db", site=site.site) as log:
        log.append(event, actor=getpass.getuser(), details=details)


@users_app.command("add")
def user_add(
    config: _CONFIG,
    name: Annotated[str, typer.Argument(help="The custodian's user name (lower case).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Set a new password for an existing user.")
    ] = False,
) -> None:
    """Add a custodian who may sign in to the review page (the password is prompted for)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        site, users = _users(config)
        users.add(name, password, replace=replace)
        event = "review_page.user_replaced" if replace else "review_page.user_added"
        _audit(site, event, user=name)
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name}: {'password set' if replace else 'added'} ({users.path})")


@users_app.command("remove")
def user_remove(
    config: _CONFIG,
    name: Annotated[str, typer.Argument(help="The user name to remove.")],
) -> None:
    """Remove a custodian; their open sessions end at their next request."""
    try:
        site, users = _users(config)
        users.remove(name)
        _audit(site, "review_page.user_removed", user=name)
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name}: removed")


@users_app.command("list")
def user_list(config: _CONFIG) -> None:
    """List the custodians who may sign in to the review page."""
    try:
        _, users = _users(config)
        names = users.names()
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for name in names:
        typer.echo(name)
    if not names:
        typer.echo(f"no users yet: fedflow site user add --config {config} NAME", err=True)
