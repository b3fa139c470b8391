"""What crosses the relay: a site-protocol HTTP call, and the site's reply to it.

A :class:`Call` is one request of the site service's API (:mod:`executors.service`) as the
orchestrator made it, wrapped so that it can wait in a mailbox until the site fetches it; a
:class:`Reply` is the site service's HTTP response to it. Both are frozen pydantic models with
a stable JSON form (bodies as base64), like every message between orchestrator and site. Only
the headers the protocol uses cross (:data:`CALL_HEADERS`, :data:`REPLY_HEADERS`).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CALL_HEADERS", "REPLY_HEADERS", "Call", "Reply"]

CALL_HEADERS = frozenset({"authorization", "content-type"})
"""Request headers a call carries to the site (the researcher's token for a release)."""
REPLY_HEADERS = frozenset({"content-type", "retry-after", "x-fedflow-result-digest"})
"""Response headers a reply carries back."""

HeaderValue = Annotated[str, Field(max_length=16_384)]


class _Envelope(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )


class Call(_Envelope):
    """One call of the site protocol, queued for a site at the relay."""

    call_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[0-9a-f]{32}$")
    method: str = Field(pattern=r"^(GET|POST)$")
    path: str = Field(pattern=r"^/v1/[A-Za-z0-9/_-]{1,200}$")
    query: str = Field(default="", max_length=1024)
    headers: dict[str, HeaderValue] = Field(default_factory=dict, max_length=len(CALL_HEADERS))
    body: bytes = b""
    timeout: float = Field(default=30.0, gt=0, le=3600)
    """Seconds the orchestrator waits for the reply (the relay expires the call after it)."""


class Reply(_Envelope):
    """The site service's answer to a :class:`Call`."""

    call_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    status: int = Field(ge=100, le=599)
    headers: dict[str, HeaderValue] = Field(default_factory=dict, max_length=len(REPLY_HEADERS))
    body: bytes = b""
