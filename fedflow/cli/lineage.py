"""``fedflow lineage RESULT_ID``: how a result came to be, from the audit logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedflow.cli.options import FederationProfile
from fedflow.cli.render import make_console
from fedflow.core import FedflowError
from flows.errors import LineageNotFound
from flows.lineage import Lineage, RequestLineage, read_lineage

__all__ = ["lineage"]


def lineage(
    result_id: Annotated[
        str, typer.Argument(help="The request id a flow returned, or its Prefect flow run id.")
    ],
    federation: FederationProfile,
    site_log: Annotated[
        list[str] | None,
        typer.Option(
            "--site-log",
            metavar="SITE=DB",
            help="A site's audit log to read too (in-process sites' logs are found).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Show how RESULT_ID came to be: request, site decisions, receipts, digests, checkpoints."""
    logs = {}
    for item in site_log or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter("expected SITE=PATH", param_hint="--site-log")
        logs[name] = Path(path)
    try:
        found = read_lineage(result_id, federation, site_logs=logs)
    except LineageNotFound as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except FedflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        _show(make_console(), found)
    ok = found.audit_ok and all(
        s.receipt_verified is not False and s.site_log in ("ok", "unreachable")
        for r in found.requests
        for s in r.sites
    )
    if not ok:
        raise typer.Exit(1)


def _show(console: Console, found: Lineage) -> None:
    chain = "[green]chain OK[/]" if found.audit_ok else "[red]chain TAMPERED[/]"
    console.print(f"orchestrator audit log {found.audit_log}: {chain}")
    for problem in found.audit_problems:
        console.print(f"  [red]{problem}[/]")
    for request in found.requests:
        _show_request(console, request)


def _show_request(console: Console, r: RequestLineage) -> None:
    head = Table(title=f"request {r.request_id}", title_justify="left", show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    run = r.flow_run_id or "-"
    if r.flow_run_name:
        run = f"{run} ({r.flow_run_name})"
    rows = [
        ("time", r.time),
        ("flow run", run),
        ("analysis", r.analysis),
        ("code digest", r.code_digest),
        ("dataset", r.dataset),
        ("params", json.dumps(r.params, sort_keys=True)),
        ("params digest", r.params_digest or "-"),
        ("request digest", r.request_digest),
    ]
    if r.result is not None:
        rows += [
            ("result digest", str(r.result.get("result_digest"))),
            ("result rows", str(r.result.get("rows"))),
            ("contributing", ", ".join(r.result.get("sites", []))),
        ]
    elif r.withheld is not None:
        rows.append(("result", f"withheld: {json.dumps(r.withheld, sort_keys=True)}"))
    for name, value in rows:
        head.add_row(name, value)
    console.print(head)

    sites = Table(title="sites", title_justify="left")
    for column in ("site", "outcome", "decision", "reasons", "receipt", "checkpoint", "site log"):
        sites.add_column(column, overflow="fold")
    digests = Table(title="signed digests (from the receipts)", title_justify="left")
    for column in ("site", "policy", "dataset", "code", "result"):
        digests.add_column(column, overflow="fold")
    for s in r.sites:
        decision = s.decision or {}
        verdict = decision.get("verdict", "-")
        rules = ", ".join(decision.get("rules", []))
        receipt = {None: "-", True: "[green]verified[/]", False: f"[red]{s.receipt_problem}[/]"}
        cp = s.checkpoint or {}
        checkpoint = f"{s.checkpoint_status} {cp.get('seq', '')}".strip()
        sites.add_row(
            s.site,
            f"{s.outcome} ({s.stage})",
            f"{verdict} [{rules}]" if rules else str(verdict),
            "; ".join(s.reasons) or "-",
            receipt[s.receipt_verified],
            checkpoint,
            s.site_log,
        )
        policy = s.digests.get("policy") or decision.get("policy_digest", "-")
        digests.add_row(
            s.site,
            _short(policy),
            _short(s.digests.get("dataset")),
            _short(s.digests.get("code")),
            _short(s.digests.get("result")),
        )
    console.print(sites)
    console.print(digests)


def _short(digest: str | None) -> str:
    """``sha256:`` and the first 16 hex digits (``--json`` has them whole)."""
    if not digest:
        return "-"
    return digest[:23] + "…" if len(digest) > 23 else digest
