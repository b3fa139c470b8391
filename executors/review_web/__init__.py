"""The custodian review page: held outputs, their disclosure checks, approve or reject.

See ``docs/review-page.md``. :func:`create_review_app` builds the ASGI app for a site;
:func:`review_server` serves it beside the site API (``fedflow site serve``);
:class:`ReviewPageServer` serves it from a background thread.
"""

from executors.review_web.app import create_review_app
from executors.review_web.server import ReviewPageServer, review_server

__all__ = ["ReviewPageServer", "create_review_app", "review_server"]
