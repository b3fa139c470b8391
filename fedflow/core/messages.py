"""Messages that cross the boundary between the orchestrator and a site.

All are frozen pydantic models with a stable JSON form; tables travel inside them as Arrow IPC
bytes. The same messages serve every transport (in-process, HTTPS, pull).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedflow.core.analysis import AnalysisRef
from fedflow.core.arrowio import from_ipc
from fedflow.core.digest import canonical_json, digest_json

__all__ = [
    "Checkpoint",
    "Decision",
    "JobState",
    "JobStatus",
    "MaskMember",
    "MaskSpec",
    "Receipt",
    "Release",
    "ReleaseOutcome",
    "Request",
    "SiteInfo",
    "Verdict",
]


class _Message(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )


def _now() -> datetime:
    return datetime.now(UTC)


class MaskMember(_Message):
    """A site of a mask group and its key-agreement public key (raw X25519, base64)."""

    site: str = Field(min_length=1, max_length=200)
    public_key: str = Field(min_length=44, max_length=44)


class MaskSpec(_Message):
    """Secure aggregation of one step (see :mod:`fedflow.core.secagg`).

    ``group`` names every site whose masked partial the orchestrator will sum (sorted by site,
    at least two); each site derives pairwise masks with exactly these peers. For a frequency
    table, ``cells`` fixes the key set before anything is masked: the levels of each dimension
    (the table is every combination of levels and margins); ``{}`` is a table without
    dimension (one count). The orchestrator sets it; the site refuses a table with a non-zero
    cell outside it, rather than drop a count.
    """

    group: tuple[MaskMember, ...] = Field(min_length=2, max_length=1000)
    cells: dict[str, tuple[str, ...]] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> MaskSpec:
        sites = [m.site for m in self.group]
        if sites != sorted(set(sites)):
            raise ValueError("a mask group lists distinct sites in sorted order")
        return self

    @property
    def sites(self) -> list[str]:
        return [m.site for m in self.group]


class Request(_Message):
    """One federated step as a site sees it: what to run, on what, for whom.

    ``secure``: when set, the site masks its additive partial for secure aggregation with the
    named group (:mod:`fedflow.core.secagg`); the orchestrator then learns only the sum.
    """

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    analysis: AnalysisRef
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    token: str = Field(repr=False)
    nonce: str = Field(default_factory=lambda: secrets.token_hex(16))
    created_at: datetime = Field(default_factory=_now)
    secure: MaskSpec | None = None

    def digest(self) -> str:
        """Digest of the whole request (the token included), as signed into receipts.

        Computed once per request object: a site digests a request at every stage, and a
        request with a mask group of 100 sites takes a millisecond or two to serialise.
        """
        return self._digest

    def gate_digest(self) -> str:
        """Digest of what a site's gate decides on: the request as it was without a mask group.

        The orchestrator adds the mask group (``secure``) after the pre-gate, once it knows
        which sites allowed; the gate does not read it (the airlock checks it at release).
        """
        return self._gate_digest

    def fit_digest(self, iterated: Collection[str]) -> str:
        """Digest of what stays the same across the rounds of one fit: the request without
        its id, nonce, time, mask group and the ``iterated`` parameters (the token included)."""
        fixed = self.model_dump(
            mode="json", exclude={"request_id", "nonce", "created_at", "secure"}
        )
        fixed["params"] = {k: v for k, v in fixed["params"].items() if k not in iterated}
        return digest_json(fixed)

    @cached_property
    def _digest(self) -> str:
        return digest_json(self.model_dump(mode="json"))

    @cached_property
    def _gate_digest(self) -> str:
        if self.secure is None:
            return self._digest
        return digest_json(self.model_dump(mode="json") | {"secure": None})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (with ``update``), whose digests are computed afresh."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("_digest", None)
        copied.__dict__.pop("_gate_digest", None)
        return copied


class Verdict(StrEnum):
    """What the pre-gate decided."""

    ALLOW = "allow"
    DENY = "deny"


class Decision(_Message):
    """The pre-gate's decision on a request, with every reason and the rules that decided."""

    site: str
    request_id: str
    verdict: Verdict
    reasons: tuple[str, ...]
    rules: tuple[str, ...] = ()
    policy_digest: str
    researcher: str | None = None
    project: str | None = None
    purpose: str | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def digest(self) -> str:
        return digest_json(self.model_dump(mode="json"))


class JobState(StrEnum):
    """Where a job is at a site."""

    RUNNING = "running"
    QUARANTINED = "quarantined"
    FAILED = "failed"
    RELEASED = "released"
    REFUSED = "refused"


class JobStatus(_Message):
    """The state of one job at a site."""

    site: str
    job_id: str
    request_id: str
    state: JobState
    error: str | None = None


class ReleaseOutcome(StrEnum):
    """What the airlock did with a quarantined partial."""

    RELEASED = "released"
    SUPPRESSED = "released_with_suppression"
    REVIEW = "review"
    """Pending: held at the site for its custodian's review; ask again later."""
    REFUSED = "refused"


class _Signed(_Message):
    """A message a site signs with its receipt key: ``signature`` is over :meth:`body`."""

    def body(self) -> bytes:
        """The signed bytes: canonical JSON of every field but the signature."""
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))


class Receipt(_Signed):
    """What a site signs when its airlock decides: the digests of a release's whole lineage.

    ``digests`` holds the digests of the request, the decision, the site policy, the dataset
    snapshot, the analysis code and the released result (empty when refused). ``signature``
    is the site's Ed25519 signature over :meth:`body`; ``key_id`` names the signing key.
    """

    site: str
    request_id: str
    job_id: str
    outcome: ReleaseOutcome
    digests: dict[str, str]
    issued_at: datetime
    key_id: str
    signature: bytes = Field(default=b"", repr=False)


class Checkpoint(_Signed):
    """A site's signed statement: "my audit log's entry ``seq`` has hash ``hash``"
    (:mod:`governance.checkpoints` signs and checks it)."""

    site: str
    seq: int = Field(ge=0)
    hash: str
    issued_at: datetime
    nonce: str | None = None
    """What the orchestrator asked it for (its request id), so an old checkpoint cannot pass."""
    key_id: str
    signature: bytes = Field(default=b"", repr=False)


class Release(_Message):
    """A partial that left the airlock (or its refusal), with the digests of its lineage."""

    site: str
    request_id: str
    job_id: str
    outcome: ReleaseOutcome
    suppressed_cells: int = 0
    reasons: tuple[str, ...] = ()
    partial: bytes | None = Field(default=None, repr=False)
    digests: dict[str, str] = Field(default_factory=dict)
    receipt: Receipt | None = None
    checkpoint: Checkpoint | None = Field(default=None, exclude_if=lambda value: value is None)
    """A fit's step only: the site's audit head just after the step, signed (nonce: the
    request id), which the orchestrator keeps as the round's checkpoint without asking. Left
    out of the JSON when absent, so peers that predate it read every other release."""

    def table(self) -> pa.Table | None:
        """The released partial, or None when refused."""
        return None if self.partial is None else from_ipc(self.partial)


class SiteInfo(_Message):
    """What a site says about itself (no data)."""

    site: str
    jurisdiction: str
    datasets: dict[str, str]
    """Dataset name to snapshot digest."""
    policy_digest: str
    scheduler: str
    audit_head: tuple[int, str]
    receipt_key: str | None = None
    """The site's receipt-signing public key (PEM); orchestrators pin it from their profile."""
    agreement_key: str | None = None
    """The site's long-lived X25519 key-agreement public key (raw, base64), for the pairwise
    masks of secure aggregation."""
