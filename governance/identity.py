"""Researcher identity: EdDSA (Ed25519) JWTs signed by an issuer the site trusts.

An issuer (a project's access committee, or the demo's CLI) holds an :class:`IssuerKey` and
signs tokens with :func:`issue_token`. A site holds only the public keys of the issuers it
trusts (:class:`TrustedIssuer`) and turns a token into an :class:`Identity` with
:func:`verify_token`, or raises :class:`~governance.errors.TokenRejected` with a reason.

Only ``EdDSA`` is accepted: a token whose header names ``none``, an HMAC or an RSA algorithm
is refused before any key is used, so the public key can never serve as an HMAC secret.
The signature must verify with the key of the issuer the token names. PyJWT does the
signature and audience checks; time checks use ``now`` so they can be tested.

A token may carry GA4GH Passport v1.2 visas in its ``ga4gh_passport_v1`` claim (a list of
compact JWTs). They are kept, unverified, in :attr:`Identity.passport`: each site verifies
them against the visa issuers its policy trusts (:mod:`governance.passport`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedflow.core.controls import Control
from governance.errors import IssuerKeyInvalid, TokenRejected

__all__ = [
    "ALGORITHM",
    "PASSPORT_CLAIM",
    "Identity",
    "IssuerKey",
    "TrustedIssuer",
    "issue_token",
    "verify_token",
]

__controls__ = (
    Control(
        "HIPAA 164.312(d)",
        "Every request carries an EdDSA token signed by an issuer the site trusts; the signature, "
        "issuer, audience and expiry are verified before anything else, and only EdDSA is "
        "accepted (no alg none, no HMAC with the public key).",
        tests=(
            "tests/governance/test_identity.py::"
            "test_a_token_forged_with_another_key_under_the_same_issuer_name",
            "tests/governance/test_identity.py::"
            "test_hs256_signed_with_the_public_pem_as_secret_is_refused",
            "tests/executors/test_node.py::test_bad_tokens_are_refused_and_audited",
        ),
    ),
    Control(
        "HIPAA 164.312(a)(2)(i)",
        "Each token names one researcher (sub) and has its own id (jti); decisions and audit "
        "entries record the researcher.",
        tests=("tests/governance/test_identity.py::test_tokens_get_distinct_ids",),
    ),
    Control(
        "ISO 27001 A.8.5",
        "Short-lived signed tokens (Ed25519) verified against pinned issuer keys; a trusted "
        "issuer's key cannot sign for another issuer.",
        tests=(
            "tests/governance/test_identity.py::"
            "test_the_key_of_one_trusted_issuer_cannot_sign_for_another",
            "tests/governance/test_identity.py::test_expiry_and_not_before_with_leeway",
        ),
    ),
)

ALGORITHM = "EdDSA"
PASSPORT_CLAIM = "ga4gh_passport_v1"
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "project", "purpose")
_STRING_CLAIMS = ("iss", "sub", "jti", "project", "purpose")
_TIME_CLAIMS = ("iat", "nbf", "exp")


@dataclass(frozen=True)
class Identity:
    """Who asks, for which project and purpose, as a verified token says."""

    researcher: str
    project: str
    purpose: str
    issuer: str
    audience: str
    expires_at: datetime
    token_id: str
    passport: tuple[str, ...] = ()
    """The token's visas (compact JWTs), not yet verified: the site's policy verifies them."""


class IssuerKey:
    """An issuer's Ed25519 signing key and the issuer URL it signs as."""

    def __init__(self, private_key: Ed25519PrivateKey, issuer: str) -> None:
        self._private_key = private_key
        self.issuer = issuer

    @classmethod
    def generate(cls, issuer: str) -> IssuerKey:
        """A fresh key for ``issuer``."""
        return cls(Ed25519PrivateKey.generate(), issuer)

    @classmethod
    def load(cls, private_key_path: Path, issuer: str) -> IssuerKey:
        """Read a PKCS8 PEM private key written by :meth:`save`."""
        try:
            key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise IssuerKeyInvalid(
                f"cannot read issuer key {private_key_path}: {type(exc).__name__}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IssuerKeyInvalid(f"{private_key_path} does not hold an Ed25519 private key")
        return cls(key, issuer)

    @property
    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM: what a site adds to its trust list."""
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def save(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.key.pem`` (PKCS8, mode 0600) and ``<name>.pub.pem``; return both."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        private_path = directory / f"{name}.key.pem"
        public_path = directory / f"{name}.pub.pem"
        pem = self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(private_path, 0o600)
        public_path.write_bytes(self.public_pem)
        return private_path, public_path

    def _signing_key(self) -> Ed25519PrivateKey:
        return self._private_key

    def __repr__(self) -> str:
        return f"IssuerKey(issuer={self.issuer!r})"


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer a site trusts: its URL and its Ed25519 public key (PEM)."""

    issuer: str
    public_key_pem: bytes

    def __post_init__(self) -> None:
        self.public_key()

    @classmethod
    def from_file(cls, issuer: str, path: Path) -> TrustedIssuer:
        """Trust ``issuer`` with the public key in ``path``."""
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise IssuerKeyInvalid(f"cannot read public key {path}: {exc.strerror}") from None
        return cls(issuer, pem)

    def public_key(self) -> Ed25519PublicKey:
        """The parsed public key."""
        try:
            key = serialization.load_pem_public_key(self.public_key_pem)
        except (ValueError, TypeError):
            raise IssuerKeyInvalid(f"the key of issuer {self.issuer} is not a PEM key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise IssuerKeyInvalid(f"the key of issuer {self.issuer} is not an Ed25519 key")
        return key


def issue_token(
    key: IssuerKey,
    *,
    researcher: str,
    project: str,
    purpose: str,
    audience: str,
    ttl: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    visas: Sequence[str] = (),
) -> str:
    """Sign a token for ``researcher`` valid for ``ttl`` at ``audience`` (a site or federation),
    carrying ``visas`` (GA4GH Passport visas, see :func:`governance.passport.issue_visa`)."""
    if ttl <= timedelta(0):
        raise ValueError("a token's time to live must be positive")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": key.issuer,
        "sub": researcher,
        "aud": audience,
        "iat": int(issued.timestamp()),
        "nbf": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "jti": uuid.uuid4().hex,
        "project": project,
        "purpose": purpose,
    }
    if visas:
        claims[PASSPORT_CLAIM] = list(visas)
    return jwt.encode(claims, key._signing_key(), algorithm=ALGORITHM)


def verify_token(
    token: str,
    *,
    trusted: Sequence[TrustedIssuer],
    audience: str,
    now: datetime | None = None,
    leeway: timedelta = timedelta(seconds=30),
) -> Identity:
    """Verify ``token`` and return who it names; raise :class:`TokenRejected` otherwise."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise TokenRejected("the token is not a compact JWT", reason="malformed")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRejected("the token cannot be decoded", reason="malformed") from None
    if header.get("alg") != ALGORITHM:
        raise TokenRejected(f"only {ALGORITHM} tokens are accepted", reason="unsupported_algorithm")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise TokenRejected("the token names no issuer", reason="missing_claim")
    keys = [t for t in trusted if t.issuer == issuer]
    if not keys:
        raise TokenRejected(f"issuer {issuer} is not trusted here", reason="untrusted_issuer")
    claims = _decode_with_any(token, keys, audience)
    return _identity(claims, audience, now or datetime.now(UTC), leeway)


def _decode_with_any(token: str, keys: Sequence[TrustedIssuer], audience: str) -> dict[str, Any]:
    last: TokenRejected | None = None
    for trusted in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                trusted.public_key(),
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=trusted.issuer,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
            return claims
        except jwt.InvalidSignatureError:
            last = TokenRejected(
                f"the signature does not verify with the key of {trusted.issuer}",
                reason="bad_signature",
            )
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(
                f"the token lacks the {exc.claim!r} claim", reason="missing_claim"
            ) from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(
                f"the token is not meant for {audience}", reason="wrong_audience"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(
                f"only {ALGORITHM} tokens are accepted", reason="unsupported_algorithm"
            ) from None
        except jwt.PyJWTError:
            raise TokenRejected("the token cannot be decoded", reason="malformed") from None
    assert last is not None
    raise last


def _identity(claims: dict[str, Any], audience: str, now: datetime, leeway: timedelta) -> Identity:
    for name in _STRING_CLAIMS:
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise TokenRejected(
                f"the {name!r} claim must be a non-empty string", reason="malformed"
            )
    for name in _TIME_CLAIMS:
        if isinstance(claims.get(name), bool) or not isinstance(claims.get(name), int | float):
            raise TokenRejected(f"the {name!r} claim must be a number", reason="malformed")
    moment = now.timestamp()
    slack = leeway.total_seconds()
    if claims["exp"] <= moment - slack:
        raise TokenRejected("the token has expired", reason="expired")
    if claims["nbf"] > moment + slack:
        raise TokenRejected("the token is not valid yet", reason="not_yet_valid")
    passport = claims.get(PASSPORT_CLAIM, [])
    if not isinstance(passport, list) or not all(isinstance(v, str) for v in passport):
        raise TokenRejected(
            f"the {PASSPORT_CLAIM!r} claim must be a list of visas", reason="malformed"
        )
    return Identity(
        researcher=claims["sub"],
        project=claims["project"],
        purpose=claims["purpose"],
        issuer=claims["iss"],
        audience=audience,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        token_id=claims["jti"],
        passport=tuple(passport),
    )
