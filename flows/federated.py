"""The federated step as a Prefect flow, and :func:`run_analysis`, its Python entry point.

For every site, concurrently: ``gate_before`` → ``run`` → ``gate_after`` (which waits up to
``review_timeout`` seconds while a site holds the result for its custodian's review; a site
still undecided then is reported ``review_pending`` by name). Then the released
partials are merged and finalized here; the result and the per-site outcome table are
published as Prefect artifacts, and the orchestrator's audit log records the request, every
site's outcome (with the pre-gate's decision and the verified receipt), a signed checkpoint
of each site's audit head and the result's digest; :mod:`flows.lineage` reads them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from fedflow.core import FedflowError, digest_bytes, digest_json, to_ipc
from fedflow.core.messages import Request
from fedflow.core.registry import default_registry
from flows import secure as secure_step
from flows import steps
from flows.errors import QuorumNotMet
from flows.events import emit_governance
from flows.federation import FederationSession, connect, open_session
from flows.outcomes import FederatedResult, SiteOutcome, SiteStatus
from governance.checkpoints import verify_checkpoint
from governance.errors import CheckpointInvalid

__all__ = ["federated_analysis", "run_analysis"]

ARTIFACT_ROWS = 1000
"""Rows of a result shown in its Prefect table artifact (a GWAS has one per variant)."""


@flow(name="federated-analysis", flow_run_name="{analysis}")
def federated_analysis(
    analysis: str,
    params: dict[str, Any],
    federation: str,
    dataset: str | None = None,
    version: str | None = None,
    min_sites: int = 1,
    timeout: float = steps.DEFAULT_TIMEOUT,
    review_timeout: float = steps.DEFAULT_REVIEW_TIMEOUT,
    secure: bool | None = None,
    cells: dict[str, list[str]] | None = None,
) -> FederatedResult:
    """Run one federated analysis over the sites of the ``federation`` profile.

    ``secure``: None (default) sums an additive output securely when it can (two or more
    sites, and a known key set for a frequency table); False never does; True requires it.
    ``cells``: the levels of each dimension of a frequency table, fixing its key set.
    """
    with open_session(federation) as session:
        return _federated_step(
            session,
            analysis,
            params,
            dataset,
            version,
            min_sites,
            timeout,
            review_timeout,
            secure=secure,
            cells=cells,
        )


def run_analysis(
    analysis: str,
    params: Mapping[str, Any] | None = None,
    *,
    federation: FederationSession | Path | str,
    dataset: str | None = None,
    version: str | None = None,
    min_sites: int = 1,
    token: str | None = None,
    review_timeout: float = steps.DEFAULT_REVIEW_TIMEOUT,
    secure: bool | None = None,
    cells: Mapping[str, Sequence[str]] | None = None,
) -> FederatedResult:
    """Run ``analysis`` with ``params`` over a federation (an open session or a profile path).

    ``review_timeout``: how many seconds to wait for a site's custodian to decide on a result
    the site holds for review (default 300); a site still undecided then counts as not
    contributing (``review_pending``) and ``min_sites`` decides whether the step goes on.

    ``secure``: secure aggregation (``docs/secure-aggregation.md``). None (the default) masks
    an additive output (counts, GLM statistics) whenever two or more sites take part and, for
    a frequency table with dimensions, its key set is known; False turns it off for this
    step; True raises :class:`~flows.secure.SecureAggregationUnavailable` where it cannot
    apply. ``cells`` gives a frequency table's key set: the levels of each dimension.
    """
    cell_lists = None if cells is None else {d: list(v) for d, v in cells.items()}
    if isinstance(federation, FederationSession):
        assert federation.profile.path is not None
        return federated_analysis(
            analysis,
            dict(params or {}),
            str(federation.profile.path),
            dataset,
            version,
            min_sites,
            review_timeout=review_timeout,
            secure=secure,
            cells=cell_lists,
        )
    with connect(Path(federation), token=token) as session:
        return run_analysis(
            analysis,
            params,
            federation=session,
            dataset=dataset,
            version=version,
            min_sites=min_sites,
            review_timeout=review_timeout,
            secure=secure,
            cells=cells,
        )


def _federated_step(
    session: FederationSession,
    name: str,
    raw_params: dict[str, Any],
    dataset: str | None,
    version: str | None,
    min_sites: int,
    timeout: float,
    review_timeout: float = steps.DEFAULT_REVIEW_TIMEOUT,
    *,
    secure: bool | None = None,
    cells: Mapping[str, Sequence[str]] | None = None,
    pool: Executor | None = None,
) -> FederatedResult:
    """One federated step. ``pool``: run the site stages in its threads, inside the caller's
    task run (a fit's round), instead of as task runs of their own."""
    logger = get_run_logger()
    audit = session.audit
    try:
        analysis = default_registry().get(name, version)
        params = analysis.parse_params(raw_params)
    except FedflowError as exc:
        audit.append(
            "request.invalid", actor="researcher", details={"analysis": name, "error": exc.message}
        )
        raise
    request = Request(
        analysis=analysis.ref(),
        params=params.model_dump(mode="json"),
        dataset=dataset or session.profile.dataset,
        token=session.token,
    )
    audit.append(
        "request.sent",
        actor="researcher",
        request_id=request.request_id,
        details={
            "analysis": str(request.analysis),
            "code_digest": request.analysis.code_digest,
            "dataset": request.dataset,
            "params": request.params,
            "params_digest": digest_json(request.params),
            "sites": list(session.transports),
            "request_digest": request.digest(),
            **_flow_run(),
        },
    )
    logger.info(
        "request %s: %s over %d site(s)",
        request.request_id,
        request.analysis,
        len(session.transports),
    )

    outcomes: dict[str, SiteOutcome] = {}
    transports = session.transports
    can_mask, agreed = secure_step.maskable(analysis, params, cells)
    if secure and not can_mask:
        raise secure_step.SecureAggregationUnavailable(
            f"{request.analysis} cannot be summed securely: its output is not additive, or "
            "its frequency table has no agreed key set (give cells)",
            request_id=request.request_id,
        )
    masking = can_mask and secure is not False

    decisions = {
        s: steps.submit_stage(pool, steps.gate_before, s, t, request) for s, t in transports.items()
    }
    gate: dict[str, dict[str, Any]] = {}
    allowed = []
    for site, future in decisions.items():
        decision = steps.stage_result(future, site, "gate_before", outcomes)
        if decision is None:
            continue
        gate[site] = {
            "verdict": decision.verdict.value,
            "reasons": list(decision.reasons),
            "rules": list(decision.rules),
            "policy_digest": decision.policy_digest,
            "decision_digest": decision.digest(),
        }
        if not decision.allowed:
            outcomes[site] = SiteOutcome(site, SiteStatus.REFUSED, "gate_before", decision.reasons)
            continue
        allowed.append(site)

    # Run and release at the allowed sites. With secure aggregation, a member of the mask
    # group that does not deliver its masked partial leaves masks in the sum: the step runs
    # again (a new request, fresh masks) with the sites that delivered, and stops with
    # MaskGroupIncomplete when fewer than min_sites remain. The group shrinks every time.
    receipts: dict[str, dict[str, Any]] = {}
    incomplete: list[str] = []
    while True:
        spec = None
        if masking and len(allowed) >= 2:
            spec = secure_step.mask_spec(transports, allowed, agreed)
            request = request.model_copy(update={"secure": spec})
            audit.append(
                "request.masked",
                actor="orchestrator",
                request_id=request.request_id,
                details={"group": spec.sites, "request_digest": request.digest()},
            )
        released = steps.run_and_release(
            transports, request, allowed, timeout, review_timeout, outcomes, pool
        )
        for site, release in released.items():
            if release.receipt is not None:
                receipts[site] = release.receipt.model_dump(mode="json")
        partials = [t for r in released.values() if (t := r.table()) is not None]
        delivered = [s for s in allowed if s in released and released[s].table() is not None]
        dropped = [s for s in allowed if s not in delivered]
        if spec is None or not dropped:
            break
        secure_step.forget_keys(transports[s] for s in dropped)
        logger.warning(
            "request %s: %s did not deliver a masked partial; the masked sum is not formed",
            request.request_id,
            ", ".join(dropped),
        )
        audit.append(
            "secure.dropout",
            actor="orchestrator",
            request_id=request.request_id,
            details={"dropped": dropped, "delivered": delivered, "min_sites": min_sites},
        )
        if len(delivered) < max(min_sites, 1):
            incomplete = dropped
            break
        allowed = delivered
        request = Request(
            analysis=request.analysis,
            params=request.params,
            dataset=request.dataset,
            token=request.token,
        )
        audit.append(
            "request.sent",
            actor="researcher",
            request_id=request.request_id,
            details={
                "analysis": str(request.analysis),
                "code_digest": request.analysis.code_digest,
                "dataset": request.dataset,
                "params": request.params,
                "params_digest": digest_json(request.params),
                "sites": allowed,
                "request_digest": request.digest(),
                "recovers": {"dropped": dropped},
                **_flow_run(),
            },
        )
    ordered = [outcomes[s] for s in transports]
    _checkpoint_sites(session, request.request_id)
    for outcome in ordered:
        audit.append(
            "site.outcome",
            actor=outcome.site,
            request_id=request.request_id,
            details={
                **outcome.row(),
                "job_id": outcome.job_id,
                "decision": gate.get(outcome.site),
                "digests": outcome.digests,
                "receipt": receipts.get(outcome.site),
            },
        )
    _publish_outcomes(name, request.request_id, ordered, gate, min_sites)

    if incomplete or len(partials) < min_sites:
        audit.append(
            "result.withheld",
            actor="orchestrator",
            request_id=request.request_id,
            details={"released": len(partials), "min_sites": min_sites, "dropped": incomplete},
        )
    if incomplete:
        needed = max(min_sites, 1)
        raise secure_step.MaskGroupIncomplete(
            f"site(s) {', '.join(incomplete)} of the mask group delivered no masked partial; "
            f"{len(partials)} site(s) remain and the step needs {needed}",
            dropped=incomplete,
            outcomes=ordered,
            request_id=request.request_id,
        )
    if len(partials) < min_sites:
        raise QuorumNotMet(
            f"{len(partials)} site(s) released a partial; the step needs {min_sites}",
            outcomes=ordered,
            request_id=request.request_id,
        )
    if request.secure is None:
        merged = analysis.merge(partials)
    else:
        merged, suppressed, reasons = secure_step.combine(partials)
        audit.append(
            "result.summed",
            actor="orchestrator",
            request_id=request.request_id,
            details={
                "group": request.secure.sites,
                "suppressed_cells": suppressed,
                "reasons": list(reasons),
            },
        )
        if suppressed:
            logger.info("merged totals: %s", "; ".join(reasons))
        merged = analysis.merge([merged])
    final = analysis.finalize(merged, params)
    result_digest = digest_bytes(to_ipc(final))
    frame = pl.from_arrow(final)
    assert isinstance(frame, pl.DataFrame)
    audit.append(
        "result.produced",
        actor="orchestrator",
        request_id=request.request_id,
        details={
            "analysis": str(request.analysis),
            "sites": [o.site for o in ordered if o.contributed],
            "result_digest": result_digest,
            "rows": frame.height,
        },
    )
    _publish_result(name, str(request.analysis), request.request_id, frame, ordered, result_digest)
    return FederatedResult(
        analysis=request.analysis,
        request_id=request.request_id,
        params=request.params,
        dataset=request.dataset,
        result=frame,
        outcomes=ordered,
        result_digest=result_digest,
    )


def _checkpoint_sites(session: FederationSession, request_id: str) -> None:
    """Keep each site's signed audit head, so a later rewrite of a site's log is detectable.

    The checkpoint must be signed by the site's pinned receipt key for this request; one that
    is not is refused and the refusal audited (``site.checkpoint_refused``).
    """
    for site, transport in session.transports.items():
        try:
            checkpoint = verify_checkpoint(
                transport.checkpoint(request_id), transport.receipt_key, site=site, nonce=request_id
            )
        except CheckpointInvalid as exc:
            session.audit.append(
                "site.checkpoint_refused",
                actor=site,
                request_id=request_id,
                details={"error": exc.message, "reason": exc.reason},
            )
            continue
        except FedflowError as exc:
            session.audit.append(
                "site.unreachable",
                actor=site,
                request_id=request_id,
                details={"error": exc.message},
            )
            continue
        session.audit.append(
            "site.checkpoint",
            actor=site,
            request_id=request_id,
            details={
                "seq": checkpoint.seq,
                "hash": checkpoint.hash,
                "checkpoint": checkpoint.model_dump(mode="json"),
            },
        )


def _flow_run() -> dict[str, str]:
    """The Prefect flow run this step runs in (its id and name), when there is one."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return {} if run_id is None else {"flow_run_id": str(run_id), "flow_run_name": flow_run.name}


def _publish_outcomes(
    name: str,
    request_id: str,
    outcomes: list[SiteOutcome],
    gate: Mapping[str, Mapping[str, Any]],
    min_sites: int,
) -> None:
    """The per-site outcome and airlock-decision artifacts, and the governance events."""
    create_table_artifact(
        key=f"{_slug(name)}-sites",
        table=[o.row() for o in outcomes],
        description=f"per-site outcomes of request {request_id}",
    )
    create_table_artifact(
        key=f"{_slug(name)}-airlock",
        table=[_decision_row(o, gate.get(o.site)) for o in outcomes],
        description=f"pre-gate and airlock decisions of request {request_id}",
    )
    emit_governance(name, request_id, outcomes, gate, min_sites)


def _decision_row(outcome: SiteOutcome, decision: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a site's pre-gate and airlock decided, with the digests that prove it."""
    return {
        "site": outcome.site,
        "pre_gate": "no answer" if decision is None else decision["verdict"],
        "airlock": outcome.status.value if outcome.stage in ("gate_after", "review") else "",
        "decided_at": outcome.stage,
        "suppressed_cells": outcome.suppressed_cells,
        "reasons": "; ".join(outcome.reasons),
        "policy_digest": "" if decision is None else decision["policy_digest"],
        "result_digest": outcome.digests.get("result", ""),
        "review_digest": outcome.digests.get("review", ""),
    }


def _publish_result(
    name: str,
    analysis: str,
    request_id: str,
    frame: pl.DataFrame,
    outcomes: list[SiteOutcome],
    result_digest: str,
) -> None:
    """The result table artifact (its first rows) and a markdown summary of the step."""
    shown = frame.head(ARTIFACT_ROWS)
    more = (
        f"; the first {ARTIFACT_ROWS} of {frame.height} rows" if frame.height > shown.height else ""
    )
    contributed = [o.site for o in outcomes if o.contributed]
    create_table_artifact(
        key=f"{_slug(name)}-result",
        table=shown.to_dicts(),
        description=f"{analysis}: {len(contributed)} site(s), request {request_id}{more}",
    )
    lines = [
        f"# {analysis}",
        "",
        f"Request `{request_id}`: {frame.height} result row(s) from {len(contributed)} of "
        f"{len(outcomes)} site(s); result digest `{result_digest}`.",
        "",
        "| site | outcome | decided at | suppressed cells | reasons |",
        "|---|---|---|---:|---|",
        *(
            f"| {o.site} | {o.status.value} | {o.stage} | {o.suppressed_cells} | "
            f"{'; '.join(o.reasons).replace('|', '/')} |"
            for o in outcomes
        ),
    ]
    create_markdown_artifact(
        key=f"{_slug(name)}-summary",
        markdown="\n".join(lines),
        description=f"{analysis}: request {request_id}",
    )


def _slug(name: str) -> str:
    return name.replace("_", "-").lower()
