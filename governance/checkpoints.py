"""Signed checkpoints: a site's signature over its audit head, kept by the orchestrator.

A hash chain proves that no entry changed *relative to its head*; someone who rewrites the
whole log (a new chain, internally consistent) also makes a new head. So the site signs its
current head with its receipt key (:func:`sign_checkpoint`) whenever the orchestrator asks,
and the orchestrator checks the signature against the site's pinned key
(:func:`verify_checkpoint`) and keeps the checkpoint in its own hash-chained log. Later,
:func:`check_checkpoints` checks the site's log against every checkpoint kept: each signed
``(seq, hash)`` must still be in the site's chain, so a rewrite (or a cut tail) shows as the
checkpoints it breaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature

from fedflow.core.controls import Control
from fedflow.core.messages import Checkpoint
from governance.audit import GENESIS, AuditLog
from governance.errors import CheckpointInvalid
from governance.receipts import ReceiptKey, key_id, load_public_key

__all__ = [
    "Checkpoint",
    "CheckpointCheck",
    "check_checkpoints",
    "sign_checkpoint",
    "verify_checkpoint",
]

__controls__ = (
    Control(
        "NIST AU-9",
        "Signed checkpoints of each site's chain head are kept by the orchestrator, so even a "
        "complete rewrite of a site's log is detected.",
        tests=(
            "tests/governance/test_checkpoints.py::test_a_complete_rewrite_passes_alone_but_breaks_the_later_checkpoints",
            "tests/flows/test_lineage.py::test_audit_verify_against_checkpoints_detects_a_complete_rewrite",
        ),
    ),
    Control(
        "ISO 27001 A.5.33",
        "Audit records are protected by signed checkpoints held outside the site.",
        tests=("tests/governance/test_checkpoints.py::test_a_cut_tail_is_missing_checkpoints",),
    ),
)


def sign_checkpoint(
    key: ReceiptKey, *, site: str, head: tuple[int, str], nonce: str | None = None
) -> Checkpoint:
    """The site's checkpoint of ``head`` (its audit log's ``(seq, hash)``), signed by ``key``."""
    unsigned = Checkpoint(
        site=site,
        seq=head[0],
        hash=head[1],
        issued_at=datetime.now(UTC),
        nonce=nonce,
        key_id=key.key_id,
    )
    return unsigned.model_copy(update={"signature": key.signature(unsigned.body())})


def verify_checkpoint(
    checkpoint: Checkpoint,
    public_pem: bytes | None,
    *,
    site: str,
    nonce: str | None = None,
) -> Checkpoint:
    """Check ``checkpoint`` against the site's pinned receipt key; raise CheckpointInvalid."""

    def refuse(what: str, reason: str) -> CheckpointInvalid:
        return CheckpointInvalid(
            f"the site's audit checkpoint {what}", site=site, request_id=nonce, reason=reason
        )

    if public_pem is None:
        raise refuse("cannot be checked: no receipt key is pinned for this site", "no_pinned_key")
    if checkpoint.key_id != key_id(public_pem):
        raise refuse("names a key other than the pinned one", "unknown_key")
    try:
        load_public_key(public_pem).verify(checkpoint.signature, checkpoint.body())
    except InvalidSignature:
        raise refuse("signature does not verify", "bad_signature") from None
    if checkpoint.site != site:
        raise refuse("names another site", "mismatch")
    if nonce is not None and checkpoint.nonce != nonce:
        raise refuse("was not made for this request", "stale")
    return checkpoint


@dataclass(frozen=True)
class CheckpointCheck:
    """One kept checkpoint checked against a site's log: ``ok``, or ``problem`` says why not."""

    checkpoint: Checkpoint
    ok: bool
    problem: str = ""


def check_checkpoints(log: AuditLog, checkpoints: Iterable[Checkpoint]) -> list[CheckpointCheck]:
    """Whether each checkpoint's ``(seq, hash)`` is in the chain stored in ``log``.

    Checks presence only; :meth:`AuditLog.verify` checks the chain itself (a log can hold the
    checkpointed hashes and still have been edited after the last checkpoint).
    """
    wanted = list(checkpoints)
    stored = log.hashes()
    last = max(stored, default=0)
    out = []
    for cp in wanted:
        found = GENESIS if cp.seq == 0 else stored.get(cp.seq)
        if found == cp.hash:
            out.append(CheckpointCheck(cp, True))
        elif found is None and cp.seq > last:
            out.append(CheckpointCheck(cp, False, f"missing: the log ends at seq {last}"))
        elif found is None:
            out.append(CheckpointCheck(cp, False, f"missing: no entry at seq {cp.seq}"))
        else:
            out.append(CheckpointCheck(cp, False, "rewritten: the entry has another hash"))
    return out
