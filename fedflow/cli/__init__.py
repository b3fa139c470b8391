"""The ``fedflow`` command line: on top of every layer."""

from __future__ import annotations

import logging
import os

# Defaults for a custodian-grade tool, set before Prefect or Dask are imported: no telemetry,
# Prefect's own console chatter only for warnings (run logs still reach the Prefect API), and
# Dask's scheduler and worker logs only for warnings.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

import typer

from fedflow.cli.airlock import app as airlock_app
from fedflow.cli.audit import app as audit_app
from fedflow.cli.compliance import app as compliance_app
from fedflow.cli.demo import demo
from fedflow.cli.identity import keys_app, token_app
from fedflow.cli.lineage import lineage
from fedflow.cli.pki import app as pki_app
from fedflow.cli.releases import app as releases_app
from fedflow.cli.run import analyses, run
from fedflow.cli.server import app as server_app
from fedflow.cli.site import app as site_app
from harmonize.cli import app as harmonize_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedflow",
    help="Federated analyses over data that stays with its custodians.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(demo)
app.command()(run)
app.command()(analyses)
app.command()(lineage)
app.add_typer(airlock_app, name="airlock")
app.add_typer(audit_app, name="audit")
app.add_typer(compliance_app, name="compliance")
app.add_typer(keys_app, name="keys")
app.add_typer(token_app, name="token")
app.add_typer(site_app, name="site")
app.add_typer(pki_app, name="pki")
app.add_typer(releases_app, name="releases")
app.add_typer(server_app, name="server")
app.add_typer(harmonize_app, name="harmonize")


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
