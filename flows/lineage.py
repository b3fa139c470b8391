"""Lineage: how a federated result came to be, read back from the audit logs.

:func:`read_lineage` takes a result id (the request id a flow returns, or the Prefect flow run
id it ran in) and rebuilds, from the orchestrator's hash-chained audit log, the request
(analysis, code digest, params digest), each site's pre-gate decision with its reasons and
policy digest, its receipt (verified again against the site's pinned key), the dataset
snapshot, code, policy and result digests it signed, the site's signed checkpoint, and the
result's digest. Where a site's own audit log is reachable (an in-process site's state folder,
or a file passed in ``site_logs``), its entries for the request are added and the site's log
is checked against the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from executors.config import SiteConfig
from fedflow.core import FedflowError
from fedflow.core.controls import Control
from fedflow.core.messages import Receipt
from flows.errors import LineageNotFound
from flows.federation import Federation
from governance.audit import AuditEntry, AuditLog
from governance.checkpoints import Checkpoint, check_checkpoints, verify_checkpoint
from governance.receipts import ReceiptKey, verify_receipt

__all__ = ["Lineage", "RequestLineage", "SiteLineage", "read_lineage"]

__controls__ = (
    Control(
        "GDPR Art. 5(2)",
        "`fedflow lineage` shows how a result came to be: flow run, requests, site decisions, "
        "receipts, dataset snapshot, code and policy digests.",
        tests=("tests/flows/test_lineage.py::test_lineage_shows_how_the_result_came_to_be",),
    ),
    Control(
        "GDPR Art. 30",
        "Lineage joins the orchestrator's and the sites' records of each processing step.",
        tests=(
            "tests/flows/test_lineage.py::test_fedflow_lineage_prints_a_table_json_and_refuses_unknown_ids",
        ),
    ),
)


@dataclass(frozen=True)
class SiteLineage:
    """One site's part in one request."""

    site: str
    outcome: str
    stage: str
    reasons: list[str]
    job_id: str | None
    decision: dict[str, Any] | None
    """The pre-gate's verdict, reasons, rules and policy digest."""
    digests: dict[str, str]
    """What the receipt signs: request, decision, policy, dataset, code and result digests."""
    receipt_verified: bool | None
    """None: no receipt (the site did not reach its airlock)."""
    receipt_problem: str = ""
    checkpoint: dict[str, Any] | None = None
    checkpoint_status: str = "none"
    """``verified``, ``unverified`` (fails now), ``refused``, ``unreachable`` or ``none``."""
    site_log: str = "unreachable"
    """``ok``, ``tampered``, ``rewritten`` (fails the checkpoint) or ``unreachable``."""
    site_events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RequestLineage:
    """One federated step: the request, what each site did, and the result."""

    request_id: str
    time: str
    flow_run_id: str | None
    flow_run_name: str | None
    analysis: str
    code_digest: str
    dataset: str
    params: dict[str, Any]
    params_digest: str | None
    request_digest: str
    sites: list[SiteLineage]
    result: dict[str, Any] | None
    """``result_digest``, ``rows`` and contributing ``sites``; None when withheld."""
    withheld: dict[str, Any] | None = None


@dataclass(frozen=True)
class Lineage:
    """Everything the audit logs say about one result id."""

    result_id: str
    audit_log: str
    audit_ok: bool
    audit_problems: list[str]
    requests: list[RequestLineage]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_lineage(
    result_id: str,
    federation: Federation | Path,
    *,
    site_logs: Mapping[str, Path] | None = None,
) -> Lineage:
    """The lineage of ``result_id`` (a request id or a flow run id); LineageNotFound if none."""
    fed = federation if isinstance(federation, Federation) else Federation.load(federation)
    db = fed.state_dir / "audit.db"
    if not db.is_file():
        raise LineageNotFound(f"no orchestrator audit log at {db}", request_id=result_id)
    with AuditLog(db, site="orchestrator") as audit:
        report = audit.verify()
        sent = audit.entries(request_id=result_id, event="request.sent")
        if not sent:
            sent = [
                e
                for e in audit.entries(event="request.sent")
                if e.details.get("flow_run_id") == result_id
            ]
        if not sent:
            raise LineageNotFound(
                f"no request or flow run {result_id!r} in the orchestrator's audit log",
                request_id=result_id,
            )
        trail = {e.request_id: audit.entries(request_id=e.request_id) for e in sent}
    keys = _pinned_keys(fed)
    logs = {**_site_logs(fed), **(site_logs or {})}
    requests = [_request(e, trail[e.request_id], keys, logs) for e in sent]
    return Lineage(result_id, str(db), report.ok, list(report.problems), requests)


def _request(
    sent: AuditEntry,
    trail: list[AuditEntry],
    keys: Mapping[str, bytes],
    logs: Mapping[str, Path],
) -> RequestLineage:
    rid = str(sent.request_id)
    d = sent.details
    by_event: dict[str, list[AuditEntry]] = {}
    for e in trail:
        by_event.setdefault(e.event, []).append(e)
    checkpoints = {e.actor: e for e in by_event.get("site.checkpoint", [])}
    refused = {e.actor: e for e in by_event.get("site.checkpoint_refused", [])}
    refused |= {e.actor: e for e in by_event.get("site.unreachable", [])}
    sites = [
        _site(e, rid, keys.get(e.actor), checkpoints.get(e.actor), refused.get(e.actor), logs)
        for e in by_event.get("site.outcome", [])
    ]
    produced = by_event.get("result.produced", [])
    withheld = by_event.get("result.withheld", [])
    return RequestLineage(
        request_id=rid,
        time=sent.time,
        flow_run_id=d.get("flow_run_id"),
        flow_run_name=d.get("flow_run_name"),
        analysis=str(d.get("analysis", "")),
        code_digest=str(d.get("code_digest", "")),
        dataset=str(d.get("dataset", "")),
        params=dict(d.get("params") or {}),
        params_digest=d.get("params_digest"),
        request_digest=str(d.get("request_digest", "")),
        sites=sites,
        result=produced[-1].details if produced else None,
        withheld=withheld[-1].details if withheld else None,
    )


def _site(
    outcome: AuditEntry,
    rid: str,
    key: bytes | None,
    kept: AuditEntry | None,
    refused: AuditEntry | None,
    logs: Mapping[str, Path],
) -> SiteLineage:
    d = outcome.details
    site = outcome.actor
    digests = dict(d.get("digests") or {})
    verified: bool | None = None
    problem = ""
    if d.get("receipt") is not None:
        try:
            receipt = verify_receipt(
                Receipt.model_validate_json(json.dumps(d["receipt"])), key, site=site
            )
        except (FedflowError, ValueError) as exc:
            verified = False
            problem = exc.message if isinstance(exc, FedflowError) else "unreadable receipt"
        else:
            verified = (receipt.request_id, receipt.digests) == (rid, digests)
            problem = "" if verified else "the receipt names another request or other digests"
    checkpoint, status = None, "none"
    if kept is not None:
        checkpoint = kept.details.get("checkpoint")
        status = "verified" if _checkpoint(checkpoint, key, site, rid) else "unverified"
    elif refused is not None:
        status = "refused" if refused.event == "site.checkpoint_refused" else "unreachable"
    site_log, events = _site_log(logs.get(site), rid, checkpoint)
    return SiteLineage(
        site=site,
        outcome=str(d.get("outcome", "")),
        stage=str(d.get("stage", "")),
        reasons=[r for r in str(d.get("reasons", "")).split("; ") if r],
        job_id=d.get("job_id"),
        decision=d.get("decision"),
        digests=digests,
        receipt_verified=verified,
        receipt_problem=problem,
        checkpoint=checkpoint,
        checkpoint_status=status,
        site_log=site_log,
        site_events=events,
    )


def _checkpoint(raw: dict[str, Any] | None, key: bytes | None, site: str, rid: str) -> bool:
    if raw is None:
        return False
    try:
        verify_checkpoint(
            Checkpoint.model_validate_json(json.dumps(raw)), key, site=site, nonce=rid
        )
    except (FedflowError, ValueError):
        return False
    return True


def _site_log(
    path: Path | None, rid: str, checkpoint: dict[str, Any] | None
) -> tuple[str, list[dict[str, Any]]]:
    """The site log's state and its entries for ``rid``, when the file is reachable."""
    if path is None or not path.is_file():
        return "unreachable", []
    with AuditLog(path, site="") as log:
        state = "ok" if log.verify().ok else "tampered"
        if checkpoint is not None:
            kept = Checkpoint.model_validate_json(json.dumps(checkpoint))
            if not check_checkpoints(log, [kept])[0].ok:
                state = "rewritten"
        events = [
            {"seq": e.seq, "event": e.event, "actor": e.actor, "details": e.details}
            for e in log.entries(request_id=rid)
        ]
    return state, events


def _pinned_keys(fed: Federation) -> dict[str, bytes]:
    """Each site's receipt public key as the orchestrator pins it."""
    keys = {}
    for entry in fed.sites:
        try:
            if entry.receipt_key is not None:
                keys[entry.name] = entry.receipt_key.read_bytes()
            elif entry.config is not None:
                path = SiteConfig.load(entry.config).state_dir / "receipt.key.pem"
                if path.is_file():
                    keys[entry.name] = ReceiptKey.load_or_create(path).public_pem
        except (OSError, FedflowError):
            continue
    return keys


def _site_logs(fed: Federation) -> dict[str, Path]:
    """The audit logs of in-process sites (files the orchestrator can read)."""
    logs = {}
    for entry in fed.sites:
        if entry.transport == "in-process" and entry.config is not None:
            try:
                logs[entry.name] = SiteConfig.load(entry.config).state_dir / "audit.db"
            except FedflowError:
                continue
    return logs
