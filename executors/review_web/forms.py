"""The review page's forms: reading a posted form within a size limit, and refusing bad input.

A :class:`Refusal` is bad input (a missing CSRF token, an ended session, an unknown job, an
oversize or malformed form): the page answers it with an error page of its ``status`` and
audits it as ``review_page.refused`` with its ``error``. Forms are read with the standard
library's ``urllib.parse`` (URL-encoded bodies only: the page posts nothing else), counting
bytes as they arrive so an oversize body is never held in full.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request

from executors.errors import SiteError

__all__ = ["HEADERS", "MAX_FIELDS", "Refusal", "read_form"]

MAX_FIELDS = 16
"""More fields than any of the page's forms has."""

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refusal(SiteError):
    """Bad input: shown as an error page with ``status`` and audited as ``error`` by ``actor``."""

    def __init__(
        self, status: int, error: str, title: str, message: str, *, actor: str = "anonymous"
    ) -> None:
        super().__init__(message, reason=error)
        self.status, self.error, self.title, self.actor = status, error, title, actor


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """The URL-encoded form posted with ``request`` (first value of each field).

    Raises :class:`Refusal`: 413 past ``limit`` bytes (declared or streamed), 400 for a body
    that is not a URL-encoded form or cannot be decoded.
    """
    declared = request.headers.get("content-length")
    too_large = Refusal(
        413,
        "PayloadTooLarge",
        "Form too large",
        f"The form is over {limit} bytes and was not read.",
    )
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refusal(400, "InvalidForm", "Not a form", "This page accepts forms only.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise Refusal(
            400, "InvalidForm", "Unreadable form", "The form could not be read."
        ) from None
    return {k: v[0] for k, v in fields.items()}
