"""The fits a site's gate allowed, whose later rounds the site runs as light steps.

A fit (a GLM or Cox model by federated Newton) asks every site for the same statistics round
after round, with new coefficients each time. The gate's questions (who, which analysis,
which columns, which purpose, which jurisdiction) have the same answers in every round, so a
site decides them once: when its gate allows a round of an analysis that declares its
``iterated`` parameters (:attr:`fedflow.core.Analysis.iterated`), the node opens a fit here,
keyed by :meth:`~fedflow.core.messages.Request.fit_digest` (the request without its id,
nonce, time, mask group and iterated parameters, the token included).

A later request with the same key is a step of that fit (:meth:`executors.node.SiteNode.step`)
only while everything the decision rested on still holds: the same policy object (a reloaded
policy closes every fit), a token that has not expired, and at most :data:`IDLE` seconds since
the fit's last round. Otherwise :meth:`OpenFits.find` answers None and the request goes
through the full protocol again (pre-gate, quarantine, airlock), which decides afresh. The
airlock, the masks, the signed receipt and the audit log still run on every step.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from executors.catalogue import Dataset
from fedflow.core import Analysis, TableColumns
from fedflow.core.controls import Control
from fedflow.core.messages import Decision, Request
from governance.policy import SitePolicy

__all__ = ["IDLE", "KEPT", "OpenFit", "OpenFits"]

__controls__ = (
    Control(
        "NIST AC-3",
        "A fit's later round runs without a new pre-gate decision only as a step of a round the "
        "gate allowed: the same token, analysis, code, dataset and parameters but the "
        "coefficients, under the same policy object, before the token expires and within 10 "
        "idle minutes; anything else goes through the gate again. Every step still passes the "
        "replay guard and the airlock, and is audited.",
        tests=(
            "tests/executors/test_node_fits.py::test_what_the_gate_decided_on_cannot_change_in_a_step",
            "tests/executors/test_node_fits.py::test_a_reloaded_policy_or_an_expired_token_closes_the_fit",
            "tests/executors/test_node_fits.py::test_a_replayed_or_invalid_step_is_refused_and_audited",
            "tests/executors/test_service.py::test_a_fit_steps_over_https_and_only_for_its_researcher",
        ),
    ),
)

IDLE = 600.0
"""Seconds after its last round that a fit stays open."""
KEPT = 1024
"""Open fits a site keeps; the least recently used one closes first."""


@dataclass
class OpenFit:
    """What the gate decided for a fit's first round, and what its steps reuse."""

    job_id: str
    """The job whose request opened the fit."""
    decision: Decision
    analysis: Analysis[Any]
    dataset: Dataset
    tables: TableColumns
    policy: SitePolicy
    """The policy object the decision was made under."""
    expires_at: datetime
    """When the token the decision was made for expires."""
    used: float
    """``time.monotonic()`` of the fit's last round."""
    rounds: int = 1
    """Rounds run so far: the gate's, and the steps the site ran (:meth:`OpenFits.find` does
    not count one: the node does, once the step passed the replay guard)."""


class OpenFits:
    """A site's open fits, keyed by their requests' fit digest (thread-safe)."""

    def __init__(self, *, idle: float = IDLE, kept: int = KEPT) -> None:
        self._idle = idle
        self._kept = kept
        self._fits: OrderedDict[str, OpenFit] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, request: Request, fit: OpenFit) -> None:
        """Open (or reopen) the fit ``request`` is a round of."""
        key = request.fit_digest(fit.analysis.iterated)
        with self._lock:
            self._fits[key] = fit
            self._fits.move_to_end(key)
            while len(self._fits) > self._kept:
                self._fits.popitem(last=False)

    def find(self, request: Request, analysis: Analysis[Any], policy: SitePolicy) -> OpenFit | None:
        """The open fit ``request`` (of ``analysis``) is a later round of, marked as used;
        None when there is none, or when it may no longer stand (policy changed, token
        expired, idle too long): then it is closed."""
        if not analysis.iterated:
            return None
        key = request.fit_digest(analysis.iterated)
        now = time.monotonic()
        with self._lock:
            fit = self._fits.get(key)
            if fit is None:
                return None
            if (
                fit.policy is not policy
                or now - fit.used > self._idle
                or datetime.now(UTC) >= fit.expires_at
            ):
                del self._fits[key]
                return None
            fit.used = now
            self._fits.move_to_end(key)
            return fit

    def __len__(self) -> int:
        with self._lock:
            return len(self._fits)
