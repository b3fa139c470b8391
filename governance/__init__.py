"""Governance: identity, site policy (pre-gate), airlock (post-gate), audit log."""

from governance.airlock import AirlockResult, Outcome, check, check_frequency, check_summary
from governance.audit import GENESIS, AuditEntry, AuditLog, AuditReport
from governance.errors import (
    TOKEN_REJECTION_REASONS,
    AuditError,
    GovernanceError,
    IssuerKeyInvalid,
    PolicyInvalid,
    TokenRejected,
)
from governance.identity import (
    Identity,
    IssuerKey,
    TrustedIssuer,
    issue_token,
    verify_token,
)

__all__ = [
    "GENESIS",
    "TOKEN_REJECTION_REASONS",
    "AirlockResult",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "GovernanceError",
    "Identity",
    "IssuerKey",
    "IssuerKeyInvalid",
    "Outcome",
    "PolicyInvalid",
    "TokenRejected",
    "TrustedIssuer",
    "check",
    "check_frequency",
    "check_summary",
    "issue_token",
    "verify_token",
]
