"""Resume: the verified site releases of earlier steps, kept so a re-run asks only what failed.

Like ``nextflow -resume``: every federated step stores each verified release it used
(payload, digests and signed receipt, with the request it answered) in a SQLite file under the
federation's ``state_dir`` (``checkpoints.db``), keyed by a digest of what determines the
answer (:meth:`CheckpointStore.step_key`): the flow, the analysis (name, version and code
digest), its parameters, the dataset, the federation's site set, the researcher's token, the
secure-aggregation mode and the step's index (a fit's round). A changed parameter, analysis
version or code therefore never reuses anything.

A run with ``resume=True`` looks its steps up (:func:`reusable`). A cached release is used
only if, now, its receipt still verifies against the site's *pinned* key, it answers the very
request stored with it (request digest), and the site reports the same dataset snapshot and
policy digest as the receipt signed (asked with ``info``, which runs nothing); a masked release
only together with every other member of its mask group. Anything else is asked again. Every
reuse and every refusal to reuse is recorded in the orchestrator's audit log.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from executors import SiteTransport
from fedflow.core import FedflowError, digest_json
from fedflow.core.analysis import AnalysisRef
from fedflow.core.messages import Release, ReleaseOutcome, Request
from flows import secure as secure_step
from flows.federation import FederationSession
from governance.audit import AuditLog
from governance.receipts import verify_release

__all__ = [
    "VOLATILE_PARAMS",
    "CheckpointStore",
    "Saved",
    "cached_pieces",
    "resumed_releases",
    "reusable",
    "stable_params",
]

logger = logging.getLogger(__name__)

VOLATILE_PARAMS = ("fit_id",)
"""Parameters that name a run, not its answer (a fit's id for the sites' caches)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    step_key TEXT NOT NULL,
    site TEXT NOT NULL,
    mask_group TEXT,
    request TEXT NOT NULL,
    release TEXT NOT NULL,
    saved_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (step_key, site)
)
"""


@dataclass(frozen=True)
class Saved:
    """One site's verified release of a step, and the request it answered."""

    site: str
    request: Request
    release: Release
    group: str | None
    """The mask group's request id, when the release is masked (usable only with the group)."""


class CheckpointStore:
    """The verified releases of finished steps, in ``state_dir/checkpoints.db``.

    The file holds released aggregates and the requests (with the researcher's token) they
    answered, as the orchestrator's audit log holds what it was sent: it is created mode 0600.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
        with closing(self._connect()) as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        """A connection per call: a step saves once and a resumed step reads once."""
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @staticmethod
    def step_key(
        *,
        flow: str,
        analysis: AnalysisRef,
        params: Mapping[str, Any],
        dataset: str,
        sites: Sequence[str],
        token: str,
        secure: bool | None,
        step: int,
    ) -> str:
        """The digest of everything that determines a step's answers."""
        return digest_json(
            {
                "flow": flow,
                "analysis": [analysis.name, analysis.version, analysis.code_digest],
                "params": stable_params(params),
                "dataset": dataset,
                "sites": sorted(sites),
                "token": digest_json({"token": token}),
                "secure": secure,
                "step": step,
            }
        )

    def save(self, key: str, entries: Sequence[Saved]) -> None:
        """Keep these verified releases of step ``key`` (replacing a site's earlier one)."""
        rows = [
            (key, e.site, e.group, e.request.model_dump_json(), e.release.model_dump_json())
            for e in entries
        ]
        if not rows:
            return
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO releases (step_key, site, mask_group, request, release) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")

    def summary(self) -> list[dict[str, Any]]:
        """Per analysis: how many steps and releases are kept, and when the oldest and newest
        were saved (UTC, ISO 8601)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT json_extract(request, '$.analysis.name') AS analysis, "
                "count(DISTINCT step_key), count(*), min(saved_at), max(saved_at) "
                "FROM releases GROUP BY analysis ORDER BY analysis"
            ).fetchall()
        keys = ("analysis", "steps", "releases", "oldest", "newest")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def prune(self, before: datetime) -> int:
        """Forget the releases saved before ``before``; how many there were.

        The kept requests carry the researcher's token, so the freed pages are overwritten
        (SQLite ``secure_delete``) and the file is compacted.
        """
        cutoff = before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        with closing(self._connect()) as db:
            db.execute("PRAGMA secure_delete=ON")
            db.execute("BEGIN IMMEDIATE")
            removed = db.execute("DELETE FROM releases WHERE saved_at < ?", (cutoff,)).rowcount
            db.execute("COMMIT")
            db.execute("VACUUM")
        return removed

    def saved(self, key: str) -> list[Saved]:
        """What step ``key`` kept, site by site (unverified: see :func:`reusable`)."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT site, mask_group, request, release FROM releases WHERE step_key = ? "
                "ORDER BY site",
                (key,),
            ).fetchall()
        return [
            Saved(site, Request.model_validate_json(req), Release.model_validate_json(rel), group)
            for site, group, req, rel in rows
        ]


def stable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters without those that only name a run (:data:`VOLATILE_PARAMS`)."""
    return {k: v for k, v in params.items() if k not in VOLATILE_PARAMS}


def resumed_releases(
    store: CheckpointStore,
    key: str,
    session: FederationSession,
    request: Request,
    asked: Sequence[str],
    *,
    partial_groups: bool = True,
) -> dict[str, Saved]:
    """The releases of step ``key`` a resumed run reuses instead of asking their sites, audited.

    ``partial_groups``: whether a cached mask group's sum may be merged with the sums of other
    sites (not for a frequency table, whose merged totals are suppressed as one sum): when
    False, masked releases are reused only if they cover every site the step asks.
    """
    usable = reusable(store.saved(key), session.transports, request, session.audit, key=key)
    usable = {s: e for s, e in usable.items() if s in asked}
    usable = _whole_groups(usable, request, session.audit, key)
    if not partial_groups and set(asked) - set(usable):
        usable = {s: e for s, e in usable.items() if e.group is None}
    session.audit.append(
        "step.resumed",
        actor="orchestrator",
        request_id=request.request_id,
        details={
            "step_key": key,
            "reused": {s: e.request.request_id for s, e in usable.items()},
            "asked": [s for s in asked if s not in usable],
        },
    )
    logger.info("resume: %d site(s) reused, %d asked", len(usable), len(asked) - len(usable))
    return usable


def cached_pieces(cached: Mapping[str, Saved]) -> list[pa.Table]:
    """What reused releases add to a step's merge: plain partials, and each mask group's sum."""
    pieces: list[pa.Table] = []
    groups: dict[str, list[pa.Table]] = {}
    for entry in cached.values():
        table = entry.release.table()
        if table is None:
            continue
        if entry.group is None:
            pieces.append(table)
        else:
            groups.setdefault(entry.group, []).append(table)
    for tables in groups.values():
        pieces.append(secure_step.combine(tables)[0])
    return pieces


def reusable(
    saved: Sequence[Saved],
    transports: Mapping[str, SiteTransport],
    request: Request,
    audit: AuditLog,
    *,
    key: str,
) -> dict[str, Saved]:
    """The saved releases that may stand in for asking their sites again, by site.

    Each must verify against its site's pinned receipt key and the request saved with it, that
    request must ask what ``request`` asks (analysis, code, parameters, dataset), and the site
    must still report the dataset snapshot and policy its receipt signed. Refusals to reuse
    are audited. (A masked release also needs its whole group: :func:`resumed_releases`.)
    """
    usable: dict[str, Saved] = {}
    for entry in saved:
        transport = transports.get(entry.site)
        problem = (
            "the site is no longer in the federation"
            if transport is None
            else _problem(entry, transport, request)
        )
        if problem is None:
            usable[entry.site] = entry
            continue
        logger.warning("resume: not reusing %s's release: %s", entry.site, problem)
        audit.append(
            "resume.refused",
            actor="orchestrator",
            request_id=request.request_id,
            details={"site": entry.site, "step_key": key, "why": problem},
        )
    return usable


def _whole_groups(
    usable: dict[str, Saved], request: Request, audit: AuditLog, key: str
) -> dict[str, Saved]:
    """``usable`` without the masked releases whose mask group is not all there."""
    groups: dict[str, set[str]] = {}
    for entry in usable.values():
        if entry.group is not None and entry.request.secure is not None:
            groups.setdefault(entry.group, set(entry.request.secure.sites))
    for group, members in groups.items():
        present = {s for s, e in usable.items() if e.group == group}
        if present != members:
            for site in present:
                del usable[site]
            audit.append(
                "resume.refused",
                actor="orchestrator",
                request_id=request.request_id,
                details={
                    "sites": sorted(present),
                    "step_key": key,
                    "why": "the mask group is incomplete: "
                    + ", ".join(sorted(members - present))
                    + " cannot be reused",
                },
            )
    return usable


def _problem(entry: Saved, transport: SiteTransport, request: Request) -> str | None:
    """Why ``entry`` may not be reused, or None."""
    old = entry.request
    if entry.release.outcome not in (
        ReleaseOutcome.RELEASED,
        ReleaseOutcome.SUPPRESSED,
        ReleaseOutcome.REFUSED,
    ):
        return f"its outcome {entry.release.outcome.value} is not final"
    if (old.analysis, stable_params(old.params), old.dataset) != (
        request.analysis,
        stable_params(request.params),
        request.dataset,
    ):
        return "it answered another analysis, code, parameters or dataset"
    try:
        receipt = verify_release(entry.release, transport.receipt_key, site=entry.site, request=old)
    except FedflowError as exc:
        return f"its receipt does not verify: {exc.message}"
    try:
        info = transport.info()
    except FedflowError as exc:
        return f"the site cannot confirm its data and policy: {exc.message}"
    if receipt.digests.get("dataset") != info.datasets.get(request.dataset):
        return "the site's dataset changed since"
    if receipt.digests.get("policy") != info.policy_digest:
        return "the site's policy changed since"
    return None
