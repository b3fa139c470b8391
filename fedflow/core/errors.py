"""The root of fedflow's error tree and the errors every layer shares.

::

    FedflowError
    ├── ConfigError (ValueError)          a settings, site, policy or profile file is invalid
    └── InvalidRequest (ValueError)       a request cannot be served as written
        ├── UnknownAnalysis (LookupError) no analysis has that name or version
        ├── InvalidParameters             parameters fail the analysis's schema
        └── PayloadTooLarge               a payload is over the size limit

Each layer hangs its own subtree from :class:`FedflowError` (``GovernanceError``,
``SiteError``, ``FlowError``, ``HarmonizeError``). Errors carry context (``site``,
``request_id``, ``reason``) and never row-level values.
"""

from __future__ import annotations

from fedflow.core.controls import Control

__all__ = [
    "ConfigError",
    "FedflowError",
    "InvalidParameters",
    "InvalidRequest",
    "PayloadTooLarge",
    "UnknownAnalysis",
]

__controls__ = (
    Control(
        "ISO 27001 A.5.34",
        "Errors name the field and the rule, never a row-level value.",
        tests=(
            "tests/fedflow/core/test_registry.py::test_parameter_errors_name_fields_and_never_echo_values",
            "tests/executors/test_node.py::test_a_failing_analysis_fails_its_job_without_leaking_values",
        ),
    ),
)


class FedflowError(Exception):
    """Root of every error fedflow raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        site: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.site = site
        self.request_id = request_id
        self.reason = reason

    def __str__(self) -> str:
        context = [f"{k}={v}" for k, v in (("site", self.site), ("request", self.request_id)) if v]
        return f"{self.message} ({', '.join(context)})" if context else self.message


class ConfigError(FedflowError, ValueError):
    """A settings, site, policy or federation profile file is invalid."""


class InvalidRequest(FedflowError, ValueError):
    """A request cannot be served as written."""


class UnknownAnalysis(InvalidRequest, LookupError):
    """No registered analysis has the requested name (or version)."""


class InvalidParameters(InvalidRequest):
    """The parameters do not satisfy the analysis's parameter schema."""


class PayloadTooLarge(InvalidRequest):
    """A payload is larger than the configured limit."""
