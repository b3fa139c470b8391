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

import contextvars
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from fedflow.core import FedflowError, OutputKind, digest_bytes, digest_json, to_ipc
from fedflow.core.messages import Release, Request
from fedflow.core.registry import default_registry
from flows import secure as secure_step
from flows import steps
from flows.errors import QuorumNotMet
from flows.events import emit_governance
from flows.federation import FederationSession, connect, open_session
from flows.outcomes import FederatedResult, SiteOutcome, SiteStatus
from flows.publishing import table_artifact
from flows.resume import CheckpointStore, Saved, cached_pieces, resumed_releases
from flows.server import ad_hoc_runs
from flows.strategy import ErrorStrategy, StepPolicy, stop_on_failure
from governance.audit import AuditLog, AuditRecord
from governance.checkpoints import verify_checkpoint
from governance.errors import CheckpointInvalid

__all__ = ["federated_analysis", "run_analysis"]

CHECKPOINTS = "checkpoints.db"
"""The checkpoint store's file in the federation's ``state_dir`` (:mod:`flows.resume`)."""
TASK_RUNS_UP_TO = 10
"""Federations up to this many sites run each site stage as a Prefect task run; larger ones in
the session's site threads (:func:`_site_threads`)."""
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
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> FederatedResult:
    """Run one federated analysis over the sites of the ``federation`` profile.

    ``secure``: None (default) sums an additive output securely when it can (two or more
    sites, and a known key set for a frequency table); False never does; True requires it.
    ``cells``: the levels of each dimension of a frequency table, fixing its key set.
    ``policy``: timeout, retries, quorum and error strategy (:class:`~flows.strategy.StepPolicy`;
    default: ``min_sites`` and ``timeout`` with two retries of a transient failure).
    ``resume``: reuse the verified releases of an earlier run of this step; ask only the rest.
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
            policy=policy,
            resume=resume,
            pool=_site_threads(session),
        )


def _site_threads(session: FederationSession) -> Executor | None:
    """Threads for the site stages of a federation of more than :data:`TASK_RUNS_UP_TO` sites.

    Up to that size every site stage is a Prefect task run of its own (each site's
    ``gate_before``/``run``/``gate_after`` shows in the UI); beyond it a task run per site and
    stage costs the orchestrator about 0.1 s per site and step (``docs/scale.md``), so the
    stages run in the session's site threads and the per-site outcome and airlock artifacts
    and events say what each site did.
    """
    return None if len(session.transports) <= TASK_RUNS_UP_TO else session.site_threads()


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
    policy: StepPolicy | None = None,
    resume: bool = False,
) -> FederatedResult:
    """Run ``analysis`` with ``params`` over a federation (an open session or a profile path).

    ``policy``: what to do when sites fail (``docs/failures.md``): a timeout per site stage,
    retries with backoff for transient failures, the quorum (``min_sites``, ``min_fraction``;
    the larger of it and ``min_sites`` applies) and the error strategy (``retry``, ``ignore``,
    ``terminate``). ``resume``: reuse, after verifying them again, the releases an earlier run
    of the same step kept, and ask only the sites that did not deliver (audited).

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
        with ad_hoc_runs():
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
                policy=policy,
                resume=resume,
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
            policy=policy,
            resume=resume,
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
    policy: StepPolicy | None = None,
    skip: Mapping[str, str] | None = None,
    resume: bool = False,
    flow_name: str = "federated-analysis",
    round_no: int | None = None,
    published: Mapping[str, SiteStatus] | None = None,
) -> FederatedResult:
    """One federated step. ``pool``: run the site stages in its threads, inside the caller's
    task run (a fit's round), instead of as task runs of their own.

    ``policy``: timeout, retries, quorum and error strategy (default: ``min_sites`` and
    ``timeout`` with the default retries). ``skip``: sites not to ask, with why (a fit's
    dropped sites): the step's outcomes leave them out; a quorum fraction counts every site.
    ``resume``: reuse the verified releases an earlier run of the same step kept
    (:mod:`flows.resume`) and ask only the other sites.
    ``flow_name`` and ``round_no`` name the step in the checkpoint key.
    ``published``: each site's status in the outcome tables a fit's earlier round published;
    a round whose statuses are the same publishes no tables or governance events again (the
    audit log still records every round).
    """
    logger = get_run_logger()
    audit = session.audit
    transports = session.transports
    policy = policy or StepPolicy(min_sites=min_sites, timeout=timeout)
    needed = max(min_sites, policy.required(len(transports)), 1)
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
    skip = dict(skip or {})
    asked = [s for s in transports if s not in skip]
    _audit_request(audit, request, asked, policy)
    logger.info(
        "request %s: %s over %d site(s)",
        request.request_id,
        request.analysis,
        len(asked),
    )

    outcomes: dict[str, SiteOutcome] = {}
    can_mask, agreed = secure_step.maskable(analysis, params, cells)
    if secure and not can_mask:
        raise secure_step.SecureAggregationUnavailable(
            f"{request.analysis} cannot be summed securely: its output is not additive, or "
            "its frequency table has no agreed key set (give cells)",
            request_id=request.request_id,
        )
    masking = can_mask and secure is not False

    store = CheckpointStore(session.profile.state_dir / CHECKPOINTS)
    key = CheckpointStore.step_key(
        flow=flow_name,
        analysis=request.analysis,
        params=request.params,
        dataset=request.dataset,
        sites=list(transports),
        token=session.token,
        secure=secure,
        step=round_no or 0,
    )
    cached: dict[str, Saved] = {}
    if resume:
        cached = resumed_releases(
            store,
            key,
            session,
            request,
            asked,
            partial_groups=analysis.output is not OutputKind.FREQUENCY,
        )
        for site, entry in cached.items():
            outcomes[site] = replace(steps.release_outcome(site, entry.release), reused=True)
    fresh = [s for s in asked if s not in cached]
    # A fit's later rounds are steps of the fit each site's gate allowed in an earlier round
    # (steps.step; a site that has no open fit any more runs the round through its gate).
    stepping = bool(analysis.iterated) and round_no is not None and round_no > 1

    decisions = {
        s: steps.submit_stage(pool, steps.gate_before, s, transports[s], request, policy)
        for s in ([] if stepping else fresh)
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
    if stepping:
        allowed = list(fresh)
    if policy.error_strategy is ErrorStrategy.TERMINATE:
        stop_on_failure(outcomes, asked, allowed, request.request_id, audit)

    # Run and release at the allowed sites. With secure aggregation, a member of the mask
    # group that does not deliver its masked partial leaves masks in the sum: the step runs
    # again (a new request, fresh masks) with the sites that delivered, and stops with
    # MaskGroupIncomplete when fewer than the quorum remain. The group shrinks every time.
    receipts: dict[str, dict[str, Any]] = {}
    incomplete: list[str] = []
    reused = sum(1 for s in cached if outcomes[s].contributed)
    released: dict[str, Release] = {}
    partials: list[pa.Table] = []
    while allowed:  # a mask group's dropouts make it run again with the sites that delivered
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
            transports,
            request,
            allowed,
            timeout,
            review_timeout,
            outcomes,
            pool,
            policy,
            stepping=stepping,
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
            details={"dropped": dropped, "delivered": delivered, "min_sites": needed},
        )
        if len(delivered) + reused < needed or policy.error_strategy is ErrorStrategy.TERMINATE:
            incomplete = dropped
            break
        allowed = delivered
        if not allowed:  # every site dropped out, the cached ones make the quorum
            released, partials = {}, []
            break
        request = Request(
            analysis=request.analysis,
            params=request.params,
            dataset=request.dataset,
            token=request.token,
        )
        _audit_request(audit, request, allowed, policy, recovers=dropped)
    if not incomplete:
        group = None if request.secure is None else request.request_id
        store.save(
            key,
            [Saved(s, request, r, group) for s, r in released.items() if r.receipt is not None],
        )
    if round_no is not None:
        outcomes = {s: replace(o, round=round_no) for s, o in outcomes.items()}
    ordered = [outcomes[s] for s in asked]
    records = _checkpoint_sites(
        session, request.request_id, [o.site for o in ordered if _answered(o)], pool, released
    )
    records += [
        AuditRecord(
            "site.outcome",
            outcome.site,
            request.request_id,
            {
                **outcome.row(),
                "job_id": outcome.job_id,
                "decision": gate.get(outcome.site),
                "digests": outcome.digests,
                "receipt": receipts.get(outcome.site),
                **(
                    {"reused_from": cached[outcome.site].request.request_id}
                    if outcome.site in cached
                    else {}
                ),
            },
        )
        for outcome in ordered
    ]
    audit.append_many(records)  # one transaction for the step's checkpoints and outcomes
    if published is None or {o.site: o.status for o in ordered} != published:
        _publish_outcomes(name, request.request_id, ordered, gate, needed)

    contributing = len(partials) + reused
    if incomplete or contributing < needed:
        audit.append(
            "result.withheld",
            actor="orchestrator",
            request_id=request.request_id,
            details={"released": contributing, "min_sites": needed, "dropped": incomplete},
        )
    if policy.error_strategy is ErrorStrategy.TERMINATE:
        stop_on_failure(outcomes, asked, [], request.request_id, audit)
    if incomplete:
        raise secure_step.MaskGroupIncomplete(
            f"site(s) {', '.join(incomplete)} of the mask group delivered no masked partial; "
            f"{contributing} site(s) remain and the step needs {needed}",
            dropped=incomplete,
            outcomes=ordered,
            request_id=request.request_id,
        )
    if contributing < needed:
        raise QuorumNotMet(
            f"{contributing} site(s) released a partial; the step needs {needed}",
            outcomes=ordered,
            request_id=request.request_id,
        )
    pieces = cached_pieces(cached)
    if request.secure is None:
        pieces.extend(partials)
    elif partials:
        summed, suppressed, reasons = secure_step.combine(partials)
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
        pieces.append(summed)
    merged = analysis.merge(pieces)
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
    if round_no is None:  # a fit's rounds are sufficient statistics: the fit publishes its own
        _publish_result(
            name, str(request.analysis), request.request_id, frame, ordered, result_digest
        )
    return FederatedResult(
        analysis=request.analysis,
        request_id=request.request_id,
        params=request.params,
        dataset=request.dataset,
        result=frame,
        outcomes=ordered,
        result_digest=result_digest,
    )


def _answered(outcome: SiteOutcome) -> bool:
    """Whether the site answered this step (so its audit head is worth a checkpoint)."""
    return outcome.status is not SiteStatus.FAILED and not outcome.reused


def _audit_request(
    audit: AuditLog,
    request: Request,
    sites: list[str],
    policy: StepPolicy,
    recovers: list[str] | None = None,
) -> None:
    """Record the request the researcher's step sends (``recovers``: a mask group's dropouts)."""
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
            "sites": sites,
            "request_digest": request.digest(),
            "policy": policy.model_dump(mode="json"),
            **({"recovers": {"dropped": recovers}} if recovers else {}),
            **_flow_run(),
        },
    )


def _checkpoint_sites(
    session: FederationSession,
    request_id: str,
    sites: list[str],
    pool: Executor | None,
    released: Mapping[str, Release],
) -> list[AuditRecord]:
    """The signed audit head of each site that answered, as the audit records to append, so a
    later rewrite of a site's log is detectable: the one a fit's step carried in its release,
    else fetched now, concurrently (with ``pool``; a site that failed is not asked again).

    The checkpoint must be signed by the site's pinned receipt key for this request; one that
    is not is refused and the refusal audited (``site.checkpoint_refused``).
    """

    def one(site: str) -> AuditRecord:
        transport = session.transports[site]
        carried = released[site].checkpoint if site in released else None
        try:
            checkpoint = verify_checkpoint(
                carried or transport.checkpoint(request_id),
                transport.receipt_key,
                site=site,
                nonce=request_id,
            )
        except CheckpointInvalid as exc:
            refused = {"error": exc.message, "reason": exc.reason}
            return AuditRecord("site.checkpoint_refused", site, request_id, refused)
        except FedflowError as exc:
            return AuditRecord("site.unreachable", site, request_id, {"error": exc.message})
        details: dict[str, Any] = {
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "checkpoint": checkpoint.model_dump(mode="json"),
        }
        return AuditRecord("site.checkpoint", site, request_id, details)

    if pool is None or all(site in released and released[site].checkpoint for site in sites):
        return [one(site) for site in sites]
    futures = [pool.submit(contextvars.copy_context().run, one, site) for site in sites]
    return [f.result() for f in futures]


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
    table_artifact(
        key=f"{_slug(name)}-sites",
        table=[o.row() for o in outcomes],
        description=f"per-site outcomes of request {request_id}",
    )
    table_artifact(
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
