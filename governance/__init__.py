"""Governance: identity, site policy (pre-gate), airlock (post-gate), receipts, audit log."""

from governance.airlock import (
    AirlockResult,
    Outcome,
    check,
    check_cox,
    check_frequency,
    check_regression,
    check_summary,
    check_survival,
)
from governance.audit import GENESIS, AuditEntry, AuditLog, AuditReport
from governance.checkpoints import (
    Checkpoint,
    CheckpointCheck,
    check_checkpoints,
    sign_checkpoint,
    verify_checkpoint,
)
from governance.errors import (
    TOKEN_REJECTION_REASONS,
    AuditError,
    CheckpointInvalid,
    GovernanceError,
    IssuerKeyInvalid,
    PolicyInvalid,
    ReceiptInvalid,
    TokenRejected,
)
from governance.identity import (
    Identity,
    IssuerKey,
    TrustedIssuer,
    issue_token,
    verify_token,
)
from governance.receipts import ReceiptKey, verify_receipt, verify_release

__all__ = [
    "GENESIS",
    "TOKEN_REJECTION_REASONS",
    "AirlockResult",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditReport",
    "Checkpoint",
    "CheckpointCheck",
    "CheckpointInvalid",
    "GovernanceError",
    "Identity",
    "IssuerKey",
    "IssuerKeyInvalid",
    "Outcome",
    "PolicyInvalid",
    "ReceiptInvalid",
    "ReceiptKey",
    "TokenRejected",
    "TrustedIssuer",
    "check",
    "check_checkpoints",
    "check_cox",
    "check_frequency",
    "check_regression",
    "check_summary",
    "check_survival",
    "issue_token",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_receipt",
    "verify_release",
    "verify_token",
]
