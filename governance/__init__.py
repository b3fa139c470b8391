"""Governance: identity, site policy (pre-gate), airlock (post-gate), differencing, receipts,
audit log."""

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
from governance.differencing import (
    COMPLEMENT_RULE,
    DIFFERENCING_RULE,
    Cohort,
    DifferencingLedger,
    DifferencingPolicy,
)
from governance.errors import (
    TOKEN_REJECTION_REASONS,
    AuditError,
    CheckpointInvalid,
    DifferencingLedgerError,
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
    "COMPLEMENT_RULE",
    "DIFFERENCING_RULE",
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
    "Cohort",
    "DifferencingLedger",
    "DifferencingLedgerError",
    "DifferencingPolicy",
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
