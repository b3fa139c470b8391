"""``fedflow audit``: verify and read a site's or the orchestrator's audit log."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from governance.audit import AuditEntry, AuditLog
from governance.errors import AuditError

__all__ = ["app"]

app = typer.Typer(help="Inspect and verify audit logs.", no_args_is_help=True)

_DB = Annotated[
    Path, typer.Argument(help="The audit log (SQLite file).", exists=True, dir_okay=False)
]


def _open(db: Path) -> AuditLog:
    try:
        return AuditLog(db, site="")
    except AuditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _parse_head(value: str) -> tuple[int, str]:
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or not digest:
        raise typer.BadParameter("expected SEQ:HASH, e.g. 42:sha256:ab12...")
    return int(seq), digest


@app.command()
def verify(
    db: _DB,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="A head recorded elsewhere (e.g. by the orchestrator): detects a cut tail.",
        ),
    ] = None,
) -> None:
    """Check the hash chain; exit 1 and list the problems if it was tampered with."""
    expected = _parse_head(expect_head) if expect_head is not None else None
    log = _open(db)
    try:
        report = log.verify(expected_head=expected)
    finally:
        log.close()
    seq, digest = report.head
    if report.ok:
        typer.echo(f"OK: {report.entries} entries, head {seq}:{digest}")
        return
    typer.echo(f"TAMPERED: {len(report.problems)} problems in {report.entries} entries")
    for problem in report.problems:
        typer.echo(f"  {problem}")
    raise typer.Exit(1)


@app.command()
def show(
    db: _DB,
    request: Annotated[str | None, typer.Option("--request", help="Only this request.")] = None,
    event: Annotated[str | None, typer.Option("--event", help="Only this event.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N entries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """List entries readably (or as JSON), oldest first."""
    log = _open(db)
    try:
        entries = log.entries(request_id=request, event=event, limit=limit)
    except AuditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        log.close()
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2, ensure_ascii=False))
        return
    typer.echo(_table(entries))


def _table(entries: list[AuditEntry]) -> str:
    header = ("seq", "time", "actor", "event", "request", "details")
    rows = [
        (
            str(e.seq),
            e.time[:19].replace("T", " "),
            e.actor,
            e.event,
            e.request_id or "-",
            _summary(e.details),
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    if not rows:
        lines.append("(no entries)")
    return "\n".join(lines)


def _summary(details: dict[str, Any], width: int = 60) -> str:
    parts = []
    for key, value in details.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text}")
    line = ", ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"
