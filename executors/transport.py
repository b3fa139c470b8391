"""How the orchestrator reaches a site: one protocol, several transports.

:class:`SiteTransport` is the site protocol as the orchestrator sees it. Flows use only this
class, so a federation profile can switch a site between in-process, HTTPS and pull without
touching a flow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TypeVar

from pydantic import BaseModel

from executors.node import SiteNode
from fedflow.core.messages import Decision, JobStatus, Release, Request, SiteInfo

__all__ = ["InProcessSiteTransport", "SiteTransport"]

M = TypeVar("M", bound=BaseModel)


class SiteTransport(ABC):
    """The site protocol: pre-gate, run into quarantine, wait, release through the airlock."""

    site: str

    @abstractmethod
    def info(self) -> SiteInfo:
        """What the site says about itself."""

    @abstractmethod
    def check(self, request: Request) -> Decision:
        """Ask the site's pre-gate for a decision."""

    @abstractmethod
    def submit(self, request: Request) -> str:
        """Have the site run the request into quarantine; returns a job id."""

    @abstractmethod
    def wait(self, job_id: str, timeout: float) -> JobStatus:
        """Wait up to ``timeout`` seconds for the job to leave the running state."""

    @abstractmethod
    def release(self, job_id: str) -> Release:
        """Ask the site's airlock to check and release the quarantined partial."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the transport holds (connections, an owned site node)."""


class InProcessSiteTransport(SiteTransport):
    """A site node in this process (tests and the embedded demo).

    Messages still cross as JSON, exactly as they would over the network, so a flow that works
    in-process does not depend on sharing objects with the site.
    """

    def __init__(self, node: SiteNode, *, owned: bool = False) -> None:
        self.node = node
        self.site = node.name
        self._owned = owned

    def info(self) -> SiteInfo:
        return _copy(self.node.info())

    def check(self, request: Request) -> Decision:
        return _copy(self.node.check(_copy(request)))

    def submit(self, request: Request) -> str:
        return self.node.submit(_copy(request))

    def wait(self, job_id: str, timeout: float) -> JobStatus:
        return _copy(self.node.wait(job_id, timeout))

    def release(self, job_id: str) -> Release:
        return _copy(self.node.release(job_id))

    def close(self) -> None:
        if self._owned:
            self.node.close()


def _copy(message: M) -> M:
    return type(message).model_validate_json(message.model_dump_json())
