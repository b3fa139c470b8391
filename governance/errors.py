"""The governance layer's errors.

::

    FedflowError
    └── GovernanceError                           root of every governance error
        ├── TokenRejected (PermissionError)       a researcher token failed verification;
        │                                         ``reason`` says why (see REASONS)
        ├── PolicyInvalid (ConfigError)           a site policy file is invalid
        ├── IssuerKeyInvalid (ConfigError)        a key file is not an Ed25519 key
        ├── ReceiptInvalid (PermissionError)      a release's receipt does not verify
        ├── CheckpointInvalid (PermissionError)   a site's signed audit checkpoint does not verify
        ├── AuditError                            an audit log cannot be opened or written
        ├── DifferencingLedgerError               the differencing ledger cannot be opened
        └── ReviewError                           the review queue cannot be used
            ├── ReviewNotFound (LookupError)      no result of that job is held for review
            ├── ReviewAlreadyDecided              the held result was already decided
            └── ReviewInvalid (ValueError)        a decision without a reviewer or a reason

Messages carry context (``site``, ``request_id``, ``reason``) and never a token, a key or a
row-level value.
"""

from __future__ import annotations

from typing import Final

from fedflow.core.errors import ConfigError, FedflowError

__all__ = [
    "TOKEN_REJECTION_REASONS",
    "AuditError",
    "CheckpointInvalid",
    "DifferencingLedgerError",
    "GovernanceError",
    "IssuerKeyInvalid",
    "PolicyInvalid",
    "ReceiptInvalid",
    "ReviewAlreadyDecided",
    "ReviewError",
    "ReviewInvalid",
    "ReviewNotFound",
    "TokenRejected",
]

TOKEN_REJECTION_REASONS: Final = frozenset(
    {
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "untrusted_issuer",
        "missing_claim",
        "unsupported_algorithm",
    }
)


class GovernanceError(FedflowError):
    """Root of the governance layer's errors."""


class TokenRejected(GovernanceError, PermissionError):
    """A researcher token failed verification; ``reason`` is one of TOKEN_REJECTION_REASONS."""

    reason: str

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        site: str | None = None,
        request_id: str | None = None,
    ) -> None:
        if reason not in TOKEN_REJECTION_REASONS:
            raise ValueError(f"unknown token rejection reason: {reason}")
        super().__init__(message, site=site, request_id=request_id, reason=reason)


class PolicyInvalid(GovernanceError, ConfigError):
    """A site policy file is invalid (raised by the policy loader)."""


class IssuerKeyInvalid(GovernanceError, ConfigError):
    """A key file cannot be read or does not hold an Ed25519 key."""


class AuditError(GovernanceError):
    """An audit log cannot be opened, read or appended to."""


class DifferencingLedgerError(GovernanceError):
    """The site's differencing ledger cannot be opened, read or written."""


class ReceiptInvalid(GovernanceError, PermissionError):
    """A release's receipt is missing, not signed by the pinned key, or does not match it."""


class CheckpointInvalid(GovernanceError, PermissionError):
    """A site's audit checkpoint is not signed by its pinned key, or is not the one asked for."""


class ReviewError(GovernanceError):
    """The site's review queue cannot be opened, read or written, or a decision is refused."""


class ReviewNotFound(ReviewError, LookupError):
    """No result of that job is held for review at this site."""


class ReviewAlreadyDecided(ReviewError):
    """The held result was already approved or rejected: a decision is final."""


class ReviewInvalid(ReviewError, ValueError):
    """A decision is incomplete (no reviewer, a rejection without a reason)."""
