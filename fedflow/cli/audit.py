"""``fedflow audit``: verify and read a site's or the orchestrator's audit log.

``fedflow audit verify SITE_DB --checkpoints ORCHESTRATOR_DB --site NAME`` also checks the
site's log against every signed checkpoint the orchestrator kept for that site, which detects
even a complete rewrite of the site's log (see :mod:`governance.checkpoints`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from governance.audit import AuditEntry, AuditLog
from governance.checkpoints import Checkpoint, check_checkpoints, verify_checkpoint
from governance.errors import AuditError, CheckpointInvalid, IssuerKeyInvalid
from governance.receipts import load_public_key

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
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            metavar="ORCHESTRATOR_DB",
            help="The orchestrator's audit log: check DB against every checkpoint kept there.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="The site whose checkpoints to use.")
    ] = None,
    receipt_key: Annotated[
        Path | None,
        typer.Option(
            "--receipt-key",
            metavar="PEM",
            help="The site's receipt public key: also re-check each checkpoint's signature.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Check the hash chain; exit 1 and list the problems if it was tampered with."""
    expected = _parse_head(expect_head) if expect_head is not None else None
    if checkpoints is not None and not site:
        raise typer.BadParameter("--checkpoints needs --site NAME", param_hint="--site")
    if receipt_key is not None and checkpoints is None:
        raise typer.BadParameter("--receipt-key needs --checkpoints", param_hint="--receipt-key")
    log = _open(db)
    try:
        report = log.verify(expected_head=expected)
        seq, digest = report.head
        if report.ok:
            typer.echo(f"OK: {report.entries} entries, head {seq}:{digest}")
        else:
            typer.echo(f"TAMPERED: {len(report.problems)} problems in {report.entries} entries")
            for problem in report.problems:
                typer.echo(f"  {problem}")
        kept_ok = True
        if checkpoints is not None:
            assert site is not None
            pem = _read_key(receipt_key) if receipt_key is not None else None
            kept_ok = _against_checkpoints(log, checkpoints, site, pem)
    finally:
        log.close()
    if not (report.ok and kept_ok):
        raise typer.Exit(1)


def _read_key(path: Path) -> bytes:
    try:
        pem = path.read_bytes()
        load_public_key(pem)
    except OSError as exc:
        typer.echo(f"error: cannot read {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    except IssuerKeyInvalid as exc:
        typer.echo(f"error: {path}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    return pem


def _kept(orchestrator: Path, site: str) -> list[tuple[AuditEntry, Checkpoint]]:
    """Every checkpoint of ``site`` the orchestrator's log holds (legacy ones unsigned)."""
    log = _open(orchestrator)
    try:
        report = log.verify()
        entries = log.entries(event="site.checkpoint")
    except AuditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        log.close()
    if not report.ok:
        typer.echo(
            f"error: the orchestrator's log {orchestrator} is itself tampered "
            f"({len(report.problems)} problems); its checkpoints cannot be trusted",
            err=True,
        )
        raise typer.Exit(1)
    kept = []
    for e in entries:
        if e.actor != site:
            continue
        raw = e.details.get("checkpoint")
        if raw is not None:
            cp = Checkpoint.model_validate_json(json.dumps(raw))
        else:
            cp = Checkpoint(
                site=site,
                seq=int(e.details["seq"]),
                hash=str(e.details["hash"]),
                issued_at=e.time,  # type: ignore[arg-type]
                key_id="",
            )
        kept.append((e, cp))
    return kept


def _against_checkpoints(log: AuditLog, orchestrator: Path, site: str, pem: bytes | None) -> bool:
    kept = _kept(orchestrator, site)
    if not kept:
        typer.echo(f"error: no checkpoints of site {site!r} in {orchestrator}", err=True)
        raise typer.Exit(2)
    failures = []
    results = check_checkpoints(log, [cp for _, cp in kept])
    for (entry, cp), result in zip(kept, results, strict=True):
        problems = [] if result.ok else [result.problem]
        if pem is not None:
            try:
                verify_checkpoint(cp, pem, site=site, nonce=entry.request_id)
            except (CheckpointInvalid, IssuerKeyInvalid) as exc:
                problems.append(f"signature: {exc.reason or exc.message}")
        if problems:
            failures.append(
                f"  checkpoint {cp.seq}:{cp.hash} (orchestrator seq {entry.seq}, request "
                f"{entry.request_id or '-'}): {'; '.join(problems)}"
            )
    if not failures:
        signed = " (signatures re-checked)" if pem is not None else ""
        typer.echo(f"OK: all {len(kept)} checkpoints of {site} are in the chain{signed}")
        return True
    typer.echo(f"FAILED: {len(failures)} of {len(kept)} checkpoints of {site} do not hold")
    for line in failures:
        typer.echo(line)
    return False


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
