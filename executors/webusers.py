"""Site-local credentials for the custodian review page: a users file of Argon2id hashes.

The file (``review_page.users`` in ``site.yaml``, by default ``<state_dir>/review-users.json``)
is JSON, written atomically with mode 0600::

    {"version": 1, "users": {"carol": {"hash": "$argon2id$v=19$m=65536,t=3,p=4$...",
                                       "created_at": "2026-11-28T16:00:00+00:00"}}}

It holds no password, only hashes made by ``argon2-cffi`` (the reference Argon2 binding, with
its RFC 9106 default parameters); hashes made with older parameters are upgraded at the next
successful sign-in. Passwords come from a prompt or stdin (``fedflow site user add``), never
from the command line. :meth:`WebUsers.verify` spends the same Argon2 work on an unknown user
name as on a known one, so timing does not tell which names exist.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from executors.errors import SiteError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "USER_NAME",
    "InvalidWebUser",
    "UnknownWebUser",
    "WebUserError",
    "WebUserExists",
    "WebUsers",
]

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
"""Allowed user names: lower-case letters, digits and ``._@-``, up to 64 characters."""
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024


class WebUserError(SiteError):
    """A review-page user cannot be added, removed or read."""


class InvalidWebUser(WebUserError, ValueError):
    """A user name or password does not meet the rules (the message never holds the password)."""


class UnknownWebUser(WebUserError, LookupError):
    """No such user in the users file."""


class WebUserExists(WebUserError):
    """The user already exists (pass ``replace=True`` to set a new password)."""


class WebUsers:
    """The users file at ``path``; reads follow changes made by another process.

    ``hasher`` sets the Argon2 parameters of new hashes (default: argon2-cffi's, RFC 9106).
    """

    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, dict[str, Any]]] | None = None

    @functools.cached_property
    def _dummy(self) -> str:
        """A hash to verify against for unknown names (same work as for a known one)."""
        return self._hasher.hash(secrets.token_urlsafe(16))

    def names(self) -> list[str]:
        """The user names, sorted."""
        return sorted(self._users())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._users()

    def add(self, name: str, password: str, *, replace: bool = False) -> None:
        """Add ``name`` with ``password`` (or set a new password with ``replace``)."""
        if not USER_NAME.match(name):
            raise InvalidWebUser(
                "a user name is 1-64 lower-case letters, digits or ._@- starting with a letter "
                "or digit"
            )
        if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise InvalidWebUser(
                f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
            )
        if password.strip() != password or password.lower() == name:
            raise InvalidWebUser("a password may not be the user name or start/end with spaces")
        with self._lock:
            users = self._read()
            if name in users and not replace:
                raise WebUserExists(f"user {name!r} already exists (use --replace)")
            users[name] = {
                "hash": self._hasher.hash(password),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self._write(users)

    def remove(self, name: str) -> None:
        """Remove ``name``; its open sessions end at their next request."""
        with self._lock:
            users = self._read()
            if name not in users:
                raise UnknownWebUser(f"no user {name!r} in {self.path.name}")
            del users[name]
            self._write(users)

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s; an unknown name costs the same work and is False."""
        record = self._users().get(name)
        stored = record["hash"] if record else self._dummy
        try:
            self._hasher.verify(stored, password[:MAX_PASSWORD_LENGTH])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        if record is None:
            return False
        if self._hasher.check_needs_rehash(stored):
            with self._lock:
                users = self._read()
                if name in users:
                    users[name] = {**users[name], "hash": self._hasher.hash(password)}
                    self._write(users)
        return True

    # -- the file ----------------------------------------------------------------------------

    def _users(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._read())

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return dict(self._cache[1])
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            users = document["users"]
            if document.get("version") != 1 or not isinstance(users, dict):
                raise ValueError("unknown layout")
            users = {
                str(n): {"hash": str(r["hash"]), "created_at": str(r.get("created_at", ""))}
                for n, r in users.items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WebUserError(
                f"cannot read the users file {self.path}: {type(exc).__name__}"
            ) from None
        self._cache = (stamp, users)
        return dict(users)

    def _write(self, users: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": 1, "users": users}, indent=2, sort_keys=True) + "\n"
        fd, temp = tempfile.mkstemp(prefix=".users-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self._cache = None
