"""What stands between a browser and the review queue: sessions, CSRF tokens, sign-in throttling.

* :class:`Sessions`: a signed-in custodian holds a cookie carrying a random session id signed
  with ``itsdangerous`` (a key made at start-up, so a restart signs everyone out). The session
  itself (user, CSRF token, expiry) lives in this process: signing out ends it here, not only in
  the browser. A session lasts ``session_minutes`` from sign-in, whatever the activity.
* CSRF: every form carries the session's token (synchronizer-token pattern); the sign-in form,
  before any session exists, carries a signed token bound to a pre-session cookie (double
  submit). Both cookies are ``HttpOnly`` and ``SameSite=Strict``.
* :class:`Throttle`: failed sign-ins are counted per user name and per client address within a
  window; past the limit further attempts are refused without checking the password until the
  window has passed.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["PRE_COOKIE", "SESSION_COOKIE", "Session", "Sessions", "Throttle"]

SESSION_COOKIE = "fedflow_review"
PRE_COOKIE = "fedflow_review_pre"
SIGNIN_FORM_SECONDS = 15 * 60
"""How long a sign-in form stays valid."""


@dataclass(frozen=True)
class Session:
    """A signed-in custodian."""

    session_id: str
    user: str
    csrf: str
    expires: float
    """``time.monotonic()`` deadline."""

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    """Sessions of one review-page process (see the module docstring)."""

    def __init__(self, lifetime_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._signer = URLSafeTimedSerializer(secrets.token_bytes(32), salt="fedflow-review")
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, user: str) -> tuple[Session, str]:
        """A new session for ``user`` and the cookie value that names it."""
        session = Session(
            session_id=secrets.token_urlsafe(32),
            user=user,
            csrf=secrets.token_urlsafe(32),
            expires=self._clock() + self.lifetime_s,
        )
        with self._lock:
            now = self._clock()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            self._sessions[session.session_id] = session
        return session, self._signer.dumps(session.session_id)

    def find(self, cookie: str | None) -> tuple[Session | None, bool]:
        """The live session a cookie names; and whether a cookie was presented but is not live
        (expired, signed out, forged or from before a restart)."""
        if not cookie:
            return None, False
        try:
            session_id = self._signer.loads(cookie, max_age=int(self.lifetime_s) + 1)
        except BadSignature:
            return None, True
        with self._lock:
            session = self._sessions.get(str(session_id))
            if session is not None and session.expires <= self._clock():
                del self._sessions[session.session_id]
                session = None
        return session, session is None

    def end(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)

    def end_user(self, user: str) -> None:
        """End every session of ``user`` (removed from the users file)."""
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.user != user}

    # -- the sign-in form's CSRF token (before any session) ----------------------------------

    def signin_token(self, nonce: str) -> str:
        """The token the sign-in form carries, bound to the pre-session cookie's ``nonce``."""
        return self._signer.dumps(nonce, salt="fedflow-review-signin")

    def signin_token_ok(self, token: str | None, nonce: str | None) -> bool:
        if not token or not nonce:
            return False
        try:
            signed = self._signer.loads(
                token, salt="fedflow-review-signin", max_age=SIGNIN_FORM_SECONDS
            )
        except BadSignature:
            return False
        return hmac.compare_digest(str(signed).encode(), nonce.encode())


class Throttle:
    """Counts failed sign-ins per key (``user:<name>``, ``addr:<ip>``) over ``window_s``."""

    def __init__(self, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str, limit: int) -> bool:
        """Whether ``key`` has ``limit`` or more failures within the window."""
        with self._lock:
            return len(self._recent(key)) >= limit

    def fail(self, key: str) -> None:
        with self._lock:
            self._recent(key).append(self._clock())

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.setdefault(key, deque(maxlen=1000))
        cutoff = self._clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        return times
