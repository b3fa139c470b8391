"""Governance: identity and GA4GH Passport visas, site policy decided by Cedar (pre-gate), the
airlock (post-gate), differencing, differential privacy, receipts, audit log, human review of
held results."""

from governance.airlock import (
    AirlockResult,
    Outcome,
    check,
    check_cox,
    check_frequency,
    check_magnitude,
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
    ReviewAlreadyDecided,
    ReviewError,
    ReviewInvalid,
    ReviewNotFound,
    TokenRejected,
)
from governance.identity import (
    Identity,
    IssuerKey,
    TrustedIssuer,
    issue_token,
    verify_token,
)
from governance.passport import PassportPolicy, VisaIssuer, issue_visa, verify_passport
from governance.privacy import PrivacyLedger, PrivacyPolicy, privatize
from governance.receipts import ReceiptKey, verify_receipt, verify_release
from governance.resolution import BeaconPolicy, SurvivalPolicy
from governance.review import ReviewItem, ReviewPolicy, ReviewQueue, ReviewState, decide_review
from governance.sacro import write_results_json

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
    "BeaconPolicy",
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
    "PassportPolicy",
    "PolicyInvalid",
    "PrivacyLedger",
    "PrivacyPolicy",
    "ReceiptInvalid",
    "ReceiptKey",
    "ReviewAlreadyDecided",
    "ReviewError",
    "ReviewInvalid",
    "ReviewItem",
    "ReviewNotFound",
    "ReviewPolicy",
    "ReviewQueue",
    "ReviewState",
    "SurvivalPolicy",
    "TokenRejected",
    "TrustedIssuer",
    "VisaIssuer",
    "check",
    "check_checkpoints",
    "check_cox",
    "check_frequency",
    "check_magnitude",
    "check_regression",
    "check_summary",
    "check_survival",
    "decide_review",
    "issue_token",
    "issue_visa",
    "privatize",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_passport",
    "verify_receipt",
    "verify_release",
    "verify_token",
    "write_results_json",
]
