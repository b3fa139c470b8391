"""A site's real transport, wrapped for fault tests: it counts its calls and fails as told.

Faults (``fault``):

- ``"down"``: every call fails as an unreachable site does;
- ``"slow"``: the pre-gate (``check``) answers after ``slow_seconds``;
- ``"crash"``: ``submit`` fails as a reset connection from a fit's second round on (a request
  with coefficients not all zero: a GLM starts without them, a Cox fit at zero);
- ``"corrupt"``: a release's payload has one byte flipped, so it no longer matches its receipt.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from executors import SiteTransport, SiteUnavailable
from fedflow.core.messages import Decision, JobStatus, Release, Request, SiteInfo
from governance.checkpoints import Checkpoint

__all__ = ["FaultyTransport", "wrap"]


class FaultyTransport(SiteTransport):
    """A site's real transport, counting its calls and failing as ``fault`` says."""

    def __init__(
        self, inner: SiteTransport, fault: str | None = None, slow_seconds: float = 0.0
    ) -> None:
        self.inner, self.fault, self.slow_seconds = inner, fault, slow_seconds
        self.site, self.receipt_key = inner.site, inner.receipt_key
        self.calls: Counter[str] = Counter()
        self.first_round_checks = 0

    def _enter(self, call: str) -> None:
        self.calls[call] += 1
        if self.fault == "down":
            raise SiteUnavailable("cannot reach the site (ConnectError)", site=self.site)

    def info(self) -> SiteInfo:
        self._enter("info")
        return self.inner.info()

    def checkpoint(self, nonce: str | None = None) -> Checkpoint:
        self._enter("checkpoint")
        return self.inner.checkpoint(nonce)

    def check(self, request: Request) -> Decision:
        self._enter("check")
        self.first_round_checks += not any(request.params.get("beta") or ())
        if self.fault == "slow":
            time.sleep(self.slow_seconds)
        return self.inner.check(request)

    def submit(self, request: Request) -> str:
        self._enter("submit")
        if self.fault == "crash" and any(request.params.get("beta") or ()):
            raise SiteUnavailable("the connection was reset: the site crashed", site=self.site)
        return self.inner.submit(request)

    def wait(self, job_id: str, timeout: float) -> JobStatus:
        self._enter("wait")
        return self.inner.wait(job_id, timeout)

    def release(self, job_id: str) -> Release:
        self._enter("release")
        release = self.inner.release(job_id)
        if self.fault == "corrupt" and release.partial is not None:
            flipped = bytearray(release.partial)
            flipped[len(flipped) // 2] ^= 0xFF
            return release.model_copy(update={"partial": bytes(flipped)})
        return release


def wrap(
    session: Any, faults: Mapping[str, str] | None = None, slow_seconds: float = 0.0
) -> dict[str, FaultyTransport]:
    """Wrap every transport of an open session afresh (faults by site); return the wrappers."""
    faults = faults or {}
    wrapped = {}
    for name, transport in list(session.transports.items()):
        inner = transport.inner if isinstance(transport, FaultyTransport) else transport
        wrapped[name] = FaultyTransport(inner, faults.get(name), slow_seconds)
        session.transports[name] = wrapped[name]
    return wrapped
