"""Errors of the orchestration layer.

::

    FedflowError
    └── FlowError                 a federated step could not produce a result
        ├── QuorumNotMet          fewer sites released a partial than the step needs
        ├── SiteFailed            a site failed under the ``terminate`` error strategy
        ├── StageFailed           one site's stage failed for good (after its retries)
        ├── StageTimedOut (TimeoutError)  one attempt of a site stage overran its timeout
        ├── ReviewPending         a site still holds the result for review when the wait ends
        ├── LineageNotFound (LookupError)  no request or flow run with that id was audited
        └── ProfileInvalid (ConfigError)  a federation profile is invalid
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedflow.core import ConfigError, FedflowError

if TYPE_CHECKING:
    from flows.outcomes import SiteOutcome

__all__ = [
    "FlowError",
    "LineageNotFound",
    "ProfileInvalid",
    "QuorumNotMet",
    "ReviewPending",
    "SiteFailed",
    "StageFailed",
    "StageTimedOut",
]


class FlowError(FedflowError):
    """A federated step could not produce a result."""


class QuorumNotMet(FlowError):
    """Fewer sites released a partial than the step needs; ``outcomes`` says what each did."""

    def __init__(self, message: str, *, outcomes: list[SiteOutcome], request_id: str) -> None:
        super().__init__(message, request_id=request_id, reason="quorum_not_met")
        self.outcomes = outcomes


class SiteFailed(FlowError):
    """A site failed and the step's error strategy is ``terminate``; ``outcomes`` says what
    each site did."""

    def __init__(
        self, message: str, *, outcomes: list[SiteOutcome], request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id, reason="site_failed")
        self.outcomes = outcomes


class StageFailed(FlowError):
    """One site's stage failed for good. ``reason`` is the failure's kind
    (:class:`flows.strategy.FailureKind`), ``stage`` where, ``attempts`` how many tries."""

    def __init__(
        self,
        message: str,
        *,
        site: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
        stage: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(message, site=site, request_id=request_id, reason=reason)
        self.stage = stage
        self.attempts = attempts


class StageTimedOut(FlowError, TimeoutError):
    """One attempt of a site stage did not finish within the step's timeout."""


class ReviewPending(FlowError):
    """A site's custodian had not decided on a held result when the step stopped waiting."""


class ProfileInvalid(FlowError, ConfigError):
    """A federation profile is invalid."""


class LineageNotFound(FlowError, LookupError):
    """No request or flow run with that id is in the orchestrator's audit log."""
