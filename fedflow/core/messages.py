"""Messages that cross the boundary between the orchestrator and a site.

All are frozen pydantic models with a stable JSON form; tables travel inside them as Arrow IPC
bytes. The same messages serve every transport (in-process, HTTPS, pull).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from fedflow.core.analysis import AnalysisRef
from fedflow.core.arrowio import from_ipc
from fedflow.core.digest import canonical_json, digest_json

__all__ = [
    "Decision",
    "JobState",
    "JobStatus",
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


class Request(_Message):
    """One federated step as a site sees it: what to run, on what, for whom."""

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    analysis: AnalysisRef
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    token: str = Field(repr=False)
    nonce: str = Field(default_factory=lambda: secrets.token_hex(16))
    created_at: datetime = Field(default_factory=_now)

    def digest(self) -> str:
        """Digest of the whole request (the token included), as signed into receipts."""
        return digest_json(self.model_dump(mode="json"))


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


class Receipt(_Message):
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

    def body(self) -> bytes:
        """The signed bytes: canonical JSON of every field but the signature."""
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))


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
