"""The custodian review page: sign in, see held outputs with their disclosure checks, decide.

Server-rendered HTML (Starlette + Jinja2, no script), on its own listener: custodians' browsers
hold no client certificate, so the page never shares the mutual-TLS site API's port.

=======  ===============================  ==============================================
GET      ``/signin``                      the sign-in form
POST     ``/signin``                      user name + password (+ CSRF) → session cookie
POST     ``/signout``                     ends the session
GET      ``/reviews``                     held outputs (``?all=1``: decided ones too)
GET      ``/reviews/{job_id}``            one held output: who asked, the airlock's checks,
                                          the aggregate it would release, the decision form
POST     ``/reviews/{job_id}/decide``     ``action=approve|reject``, ``reason``, CSRF
=======  ===============================  ==============================================

Decisions go through :func:`governance.review.decide_review`, exactly as ``fedflow airlock``
does, with the signed-in user as the reviewer, so receipts and audit entries are the same.
The site's audit log also records ``review_page.signin`` (outcome ``success``, ``failure`` or
``locked``; never the password), ``review_page.signout`` and ``review_page.refused`` (bad
input: missing or wrong CSRF token, ended session, unknown job, oversize or malformed form).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from executors.config import ReviewPageConfig, SiteConfig
from executors.review_web.forms import HEADERS, Refusal, read_form
from executors.review_web.guard import PRE_COOKIE, SESSION_COOKIE, Session, Sessions, Throttle
from executors.review_web.views import item_view
from executors.webusers import USER_NAME, WebUsers
from fedflow.core.controls import Control
from governance.audit import AuditLog
from governance.errors import ReviewAlreadyDecided, ReviewError, ReviewNotFound
from governance.review import ReviewQueue, ReviewState, decide_review

__all__ = ["create_review_app"]

_TESTS = "tests/executors/test_review_web.py::"
__controls__ = (
    Control(
        "ISO 27001 A.8.5",
        "Custodians sign in to the review page with site-local Argon2id-hashed passwords; "
        "sessions are signed, HttpOnly, SameSite=Strict and end on sign-out, expiry or "
        "removal; repeated failures lock the account; every form needs a CSRF token.",
        tests=(
            _TESTS
            + "test_sign_in_sets_a_strict_httponly_cookie_and_is_audited_without_the_password",
            _TESTS + "test_repeated_failures_lock_the_account_until_the_window_passes",
            _TESTS + "test_forms_without_the_csrf_token_are_refused_and_audited",
            _TESTS + "test_sessions_end_on_expiry_sign_out_and_removal",
        ),
    ),
    Control(
        "HIPAA 164.312(d)",
        "A held output is approved or rejected only by a signed-in custodian, who is named as "
        "the reviewer in the decision, its receipt and the audit log.",
        tests=(_TESTS + "test_a_custodian_approves_in_the_browser_and_the_waiting_flow_completes",),
    ),
    Control(
        "NIST AU-2",
        "Review-page sign-ins (success, failure, locked; never the password), sign-outs, "
        "decisions and refused input are recorded in the site's audit log.",
        tests=(
            _TESTS + "test_bad_input_gets_an_error_page_and_is_audited",
            _TESTS + "test_reject_records_the_reason_and_the_reviewer_escaped",
        ),
    ),
)

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
JOB_ID = r"^[A-Za-z0-9_-]{1,64}$"
MESSAGES = {
    "expired": "Your session has ended. Please sign in again.",
    "signedout": "You have signed out.",
    "decided": "Your decision is recorded.",
}


def create_review_app(
    site: SiteConfig,
    page: ReviewPageConfig | None = None,
    *,
    users: WebUsers | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The review page of ``site`` (its ``review_page`` section unless ``page`` is given).

    It opens the site's review queue and audit log (``state_dir``) at start-up, beside a
    running site node or on its own, as ``fedflow airlock`` does. ``users``: the accounts
    (default: the page's users file); ``clock``: monotonic seconds, for sessions and lockouts.
    """
    page = page or site.review_page or ReviewPageConfig()
    users = users or WebUsers(page.users or site.review_users())
    sessions = Sessions(page.session_minutes * 60, clock=clock)
    throttle = Throttle(page.lockout_minutes * 60, clock=clock)
    secure = page.tls if page.secure_cookies is None else page.secure_cookies
    templates = Jinja2Templates(directory=HERE / "templates")
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["queue"] = ReviewQueue(site.state_dir / "review.db")
        state["audit"] = AuditLog(site.state_dir / "audit.db", site=site.site)
        accounts = len(await run_in_threadpool(users.names))
        log.info(json.dumps({"event": "review_page.started", "site": site.site, "users": accounts}))
        if not accounts:
            log.warning(
                "site %s: the review page has no users yet (fedflow site user add --config ...)",
                site.site,
            )
        try:
            yield
        finally:
            state.pop("queue").close()
            state.pop("audit").close()

    def audit(event: str, actor: str, **details: Any) -> None:
        state["audit"].append(f"review_page.{event}", actor=actor, details=details)

    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        response = templates.TemplateResponse(
            request, name, {"site": site.site, **context}, status_code=status
        )
        response.headers.update(HEADERS)
        return response

    def refused(request: Request, exc: Refusal, *, audited: bool = False) -> Response:
        if not audited:
            audit(
                "refused",
                exc.actor,
                path=request.url.path,
                method=request.method,
                error=exc.error,
                status=exc.status,
                client=client(request),
            )
        return render(
            request,
            "error.html",
            exc.status,
            title=exc.title,
            message=exc.message,
            user=None,
        )

    def cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    def current(request: Request) -> tuple[Session | None, bool]:
        session, stale = sessions.find(request.cookies.get(SESSION_COOKIE))
        if session is not None and session.user not in users:
            sessions.end_user(session.user)
            return None, True
        return session, stale

    def signin_redirect(request: Request, stale: bool) -> Response:
        if stale:
            audit(
                "refused",
                "anonymous",
                path=request.url.path,
                method=request.method,
                error="SessionEnded",
                status=303,
                client=client(request),
            )
        response = RedirectResponse("/signin?m=expired" if stale else "/signin", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def signin_form(
        request: Request, status: int = 200, error: str | None = None
    ) -> Response:
        nonce = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        response = render(
            request,
            "signin.html",
            status,
            user=None,
            error=error,
            message=MESSAGES.get(request.query_params.get("m", "")),
            csrf=sessions.signin_token(nonce),
        )
        cookie(response, PRE_COOKIE, nonce, 15 * 60)
        return response

    async def signin(request: Request) -> Response:
        if request.method == "GET":
            session, _ = current(request)
            return RedirectResponse("/reviews", 303) if session else await signin_form(request)
        try:
            form = await read_form(request, page.max_form_bytes)
            if not sessions.signin_token_ok(form.get("csrf"), request.cookies.get(PRE_COOKIE)):
                raise Refusal(
                    403,
                    "CsrfRejected",
                    "Sign-in form expired",
                    "The sign-in form was too old or not from this page. Please try again.",
                )
        except Refusal as exc:
            return refused(request, exc)
        name = form.get("username", "").strip().lower()
        password = form.get("password", "")
        actor = name if USER_NAME.match(name) else "(invalid user name)"
        addr = client(request)
        keys = (f"user:{actor}", page.max_failures), (f"addr:{addr}", 4 * page.max_failures)
        if any(throttle.blocked(k, limit) for k, limit in keys):
            audit("signin", actor, outcome="locked", client=addr)
            return await signin_form(
                request,
                429,
                "Too many failed sign-ins: this account or address is locked for "
                f"up to {page.lockout_minutes:g} minutes.",
            )
        known = bool(USER_NAME.match(name))  # Argon2 is slow by design: off the event loop
        if not (known and await run_in_threadpool(users.verify, name, password)):
            for key, _ in keys:
                throttle.fail(key)
            audit("signin", actor, outcome="failure", client=addr)
            return await signin_form(request, 401, "Wrong user name or password.")
        throttle.clear(f"user:{name}")
        session, value = sessions.start(name)
        audit("signin", name, outcome="success", client=addr)
        response = RedirectResponse("/reviews", 303)
        cookie(response, SESSION_COOKIE, value, int(sessions.lifetime_s))
        response.delete_cookie(PRE_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def signed_in_post(request: Request) -> tuple[Session, dict[str, str]]:
        session, stale = current(request)
        if session is None:
            raise Refusal(
                401,
                "SessionEnded" if stale else "NotSignedIn",
                "Not signed in",
                "Your session has ended or you are not signed in. Please sign in again.",
            )
        try:
            form = await read_form(request, page.max_form_bytes)
        except Refusal as exc:
            exc.actor = session.user
            raise
        if not session.csrf_ok(form.get("csrf")):
            raise Refusal(
                403,
                "CsrfRejected",
                "Form not accepted",
                "The form did not come from this page (its security token is missing or "
                "wrong). Nothing was changed.",
                actor=session.user,
            )
        return session, form

    async def signout(request: Request) -> Response:
        try:
            session, _ = await signed_in_post(request)
        except Refusal as exc:
            return refused(request, exc)
        sessions.end(session)
        audit("signout", session.user, client=client(request))
        response = RedirectResponse("/signin?m=signedout", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def listing(request: Request) -> Response:
        session, stale = current(request)
        if session is None:
            return signin_redirect(request, stale)
        show_all = request.query_params.get("all") == "1"
        queue: ReviewQueue = state["queue"]
        items = queue.items(None if show_all else ReviewState.PENDING)
        return render(
            request,
            "list.html",
            user=session.user,
            csrf=session.csrf,
            show_all=show_all,
            items=items,
        )

    def held(request: Request, session: Session) -> Any:
        job_id = request.path_params["job_id"]
        item = state["queue"].get(job_id) if re.match(JOB_ID, job_id) else None
        if item is None:
            raise Refusal(
                404,
                "ReviewNotFound",
                "No such held output",
                "No output of that job is held for review at this site.",
                actor=session.user,
            )
        return item

    async def detail(request: Request) -> Response:
        session, stale = current(request)
        if session is None:
            return signin_redirect(request, stale)
        try:
            item = held(request, session)
        except Refusal as exc:
            return refused(request, exc)
        return render(
            request,
            "detail.html",
            user=session.user,
            csrf=session.csrf,
            message=MESSAGES.get(request.query_params.get("m", "")),
            **item_view(item),
        )

    async def decide(request: Request) -> Response:
        try:
            session, form = await signed_in_post(request)
            action = form.get("action")
            if action not in ("approve", "reject"):
                raise Refusal(
                    400,
                    "InvalidForm",
                    "No decision",
                    "Choose Approve or Reject.",
                    actor=session.user,
                )
        except Refusal as exc:
            return refused(request, exc)
        job_id = request.path_params["job_id"]
        try:
            await run_in_threadpool(
                decide_review,
                state["queue"],
                state["audit"],
                job_id,
                approve=action == "approve",
                reviewer=session.user,
                reason=form.get("reason"),
            )
        except ReviewError as exc:  # decide_review has audited it (review.refused)
            status = (
                404
                if isinstance(exc, ReviewNotFound)
                else (409 if isinstance(exc, ReviewAlreadyDecided) else 422)
            )
            title = {404: "No such held output", 409: "Already decided"}.get(
                status, "Decision not recorded"
            )
            return refused(
                request,
                Refusal(status, type(exc).__name__, title, exc.message, actor=session.user),
                audited=True,
            )
        return RedirectResponse(f"/reviews/{job_id}?m=decided", 303)

    async def home(request: Request) -> Response:
        return RedirectResponse("/reviews", 303)

    async def not_found(request: Request, exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            404,
            title="Not found",
            message="There is no such page.",
            user=None,
        )

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/signin", signin, methods=["GET", "POST"]),
            Route("/signout", signout, methods=["POST"]),
            Route("/reviews", listing),
            Route("/reviews/{job_id}", detail),
            Route("/reviews/{job_id}/decide", decide, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
    return app
