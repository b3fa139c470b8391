"""Signed receipts: a site's Ed25519 signature over the lineage of everything it releases.

A site holds a :class:`ReceiptKey` (kept in its state folder, mode 0600) and signs a
:class:`~fedflow.core.messages.Receipt` for every airlock decision with :meth:`ReceiptKey.sign`.
The orchestrator pins the site's public key (from its federation profile) and checks each
release with :func:`verify_release`: the signature, the site and job it names, the digests it
signs against the release's own digests, the result digest against the payload's bytes and,
when given, the request digest against the request the orchestrator sent. Any mismatch
raises :class:`ReceiptInvalid` naming what did not match (never a value from the payload).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedflow.core.controls import Control
from fedflow.core.digest import digest_bytes
from fedflow.core.keyfile import load_or_create_key
from fedflow.core.messages import Receipt, Release, Request
from governance.errors import IssuerKeyInvalid, ReceiptInvalid

__all__ = ["ReceiptKey", "key_id", "load_public_key", "verify_receipt", "verify_release"]

__controls__ = (
    Control(
        "NIST AU-10",
        "Each release is signed (Ed25519) over the digests of request, decision, policy, "
        "dataset snapshot, code and result; the orchestrator verifies it against a pinned key.",
        tests=(
            "tests/governance/test_receipts.py::test_every_change_is_refused_with_its_reason",
            "tests/executors/test_service.py::test_a_release_whose_receipt_does_not_verify_is_refused",
        ),
    ),
    Control(
        "HIPAA 164.312(c)(1)",
        "A result altered after its release no longer matches its signed receipt.",
        tests=(
            "tests/governance/test_receipts.py::test_a_signed_release_verifies_and_survives_json",
        ),
    ),
    Control(
        "GDPR Art. 5(2)",
        "Signed receipts let a custodian prove what left the site, under which policy.",
        tests=("tests/governance/test_receipts.py::test_every_change_is_refused_with_its_reason",),
    ),
)


def key_id(public_pem: bytes) -> str:
    """The identity of a public key: the digest of its DER encoding."""
    key = load_public_key(public_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return digest_bytes(der)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """Parse an Ed25519 public key from SubjectPublicKeyInfo PEM."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise IssuerKeyInvalid("the receipt key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IssuerKeyInvalid("the receipt key is not an Ed25519 key")
    return key


class ReceiptKey:
    """A site's receipt-signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = key_id(self.public_pem)

    @classmethod
    def load_or_create(cls, path: Path) -> ReceiptKey:
        """Read the PKCS8 PEM key at ``path``, or make one there (mode 0600) if absent."""
        return cls(
            load_or_create_key(
                path,
                Ed25519PrivateKey,
                Ed25519PrivateKey.generate,
                what="receipt key",
                error=IssuerKeyInvalid,
            )
        )

    def sign(self, release: Release) -> Receipt:
        """A signed receipt for ``release`` (over its site, job, outcome and digests)."""
        unsigned = Receipt(
            site=release.site,
            request_id=release.request_id,
            job_id=release.job_id,
            outcome=release.outcome,
            digests=dict(release.digests),
            issued_at=datetime.now(UTC),
            key_id=self.key_id,
        )
        return unsigned.model_copy(update={"signature": self._key.sign(unsigned.body())})

    def signature(self, body: bytes) -> bytes:
        """This key's Ed25519 signature over ``body`` (other signed statements: checkpoints)."""
        return self._key.sign(body)

    def __repr__(self) -> str:
        return f"ReceiptKey(key_id={self.key_id!r})"


def verify_receipt(receipt: Receipt, public_pem: bytes | None, *, site: str) -> Receipt:
    """Check ``receipt``'s signature against the site's pinned key (and nothing else)."""

    def refuse(what: str, reason: str) -> ReceiptInvalid:
        return ReceiptInvalid(
            f"the release's receipt {what}", site=site, request_id=receipt.request_id, reason=reason
        )

    if public_pem is None:
        raise refuse("cannot be checked: no receipt key is pinned for this site", "no_pinned_key")
    if receipt.key_id != key_id(public_pem):
        raise refuse("names a key other than the pinned one", "unknown_key")
    try:
        load_public_key(public_pem).verify(receipt.signature, receipt.body())
    except InvalidSignature:
        raise refuse("signature does not verify", "bad_signature") from None
    return receipt


def verify_release(
    release: Release,
    public_pem: bytes | None,
    *,
    site: str,
    request: Request | None = None,
) -> Receipt:
    """Check ``release``'s receipt against the site's pinned key; return the receipt."""

    def refuse(what: str, reason: str) -> ReceiptInvalid:
        return ReceiptInvalid(
            f"the release's receipt {what}", site=site, request_id=release.request_id, reason=reason
        )

    if public_pem is None:
        raise refuse("cannot be checked: no receipt key is pinned for this site", "no_pinned_key")
    if release.receipt is None:
        raise refuse("is missing", "missing")
    receipt = verify_receipt(release.receipt, public_pem, site=site)
    named = (receipt.site, receipt.request_id, receipt.job_id, receipt.outcome)
    if named != (site, release.request_id, release.job_id, release.outcome):
        raise refuse("names another site, request, job or outcome", "mismatch")
    if receipt.digests != release.digests:
        raise refuse("signs other digests than the release carries", "mismatch")
    payload_digest = "" if release.partial is None else digest_bytes(release.partial)
    if receipt.digests.get("result") != payload_digest:
        raise refuse("does not match the released payload", "payload_changed")
    if request is not None and receipt.digests.get("request") != request.digest():
        raise refuse("is for another request", "other_request")
    return receipt
