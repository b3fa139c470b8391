"""Researcher tokens: good ones verify, every kind of bad one is rejected with its reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from fedflow.core.errors import ConfigError, FedflowError
from governance import (
    GovernanceError,
    IssuerKey,
    IssuerKeyInvalid,
    TokenRejected,
    TrustedIssuer,
    issue_token,
    verify_token,
)

ISSUER = "https://aai.example.org"
AUDIENCE = "site-eu"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key() -> IssuerKey:
    return IssuerKey.generate(ISSUER)


@pytest.fixture(scope="module")
def trusted(key: IssuerKey) -> list[TrustedIssuer]:
    return [TrustedIssuer(ISSUER, key.public_pem)]


def _token(key: IssuerKey, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "researcher": "alice",
        "project": "gi-bleed",
        "purpose": "research",
        "audience": AUDIENCE,
        "now": NOW,
    }
    args.update(overrides)
    return issue_token(key, **args)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 3600,
        "jti": "abc",
        "project": "gi-bleed",
        "purpose": "research",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _reason(token: str, trusted: list[TrustedIssuer], **kw: Any) -> str:
    with pytest.raises(TokenRejected) as info:
        verify_token(token, trusted=trusted, audience=kw.pop("audience", AUDIENCE), now=NOW, **kw)
    assert not token or token not in str(info.value)
    assert info.value.reason is not None
    return info.value.reason


def test_a_good_token_verifies_into_an_identity(
    key: IssuerKey, trusted: list[TrustedIssuer]
) -> None:
    identity = verify_token(_token(key), trusted=trusted, audience=AUDIENCE, now=NOW)
    assert identity.researcher == "alice"
    assert identity.project == "gi-bleed"
    assert identity.purpose == "research"
    assert identity.issuer == ISSUER
    assert identity.audience == AUDIENCE
    assert identity.expires_at == NOW + timedelta(hours=1)
    assert identity.expires_at.tzinfo is not None
    assert len(identity.token_id) >= 16


def test_tokens_get_distinct_ids(key: IssuerKey, trusted: list[TrustedIssuer]) -> None:
    ids = {
        verify_token(_token(key), trusted=trusted, audience=AUDIENCE, now=NOW).token_id
        for _ in range(3)
    }
    assert len(ids) == 3


def test_a_token_forged_with_another_key_under_the_same_issuer_name(
    trusted: list[TrustedIssuer],
) -> None:
    forger = IssuerKey.generate(ISSUER)
    assert _reason(_token(forger), trusted) == "bad_signature"


def test_the_key_of_one_trusted_issuer_cannot_sign_for_another(key: IssuerKey) -> None:
    other = IssuerKey.generate("https://other.example.org")
    both = [TrustedIssuer(ISSUER, key.public_pem), TrustedIssuer(other.issuer, other.public_pem)]
    impostor = IssuerKey(other._signing_key(), ISSUER)
    assert _reason(_token(impostor), both) == "bad_signature"
    assert (
        verify_token(_token(other), trusted=both, audience=AUDIENCE, now=NOW).issuer == other.issuer
    )


def test_expiry_and_not_before_with_leeway(key: IssuerKey, trusted: list[TrustedIssuer]) -> None:
    token = _token(key, ttl=timedelta(minutes=5))
    verify_token(token, trusted=trusted, audience=AUDIENCE, now=NOW, leeway=timedelta(0))
    later = NOW + timedelta(minutes=5, seconds=31)
    with pytest.raises(TokenRejected) as info:
        verify_token(token, trusted=trusted, audience=AUDIENCE, now=later)
    assert info.value.reason == "expired"
    # within the leeway it still passes
    verify_token(
        token, trusted=trusted, audience=AUDIENCE, now=NOW + timedelta(minutes=5, seconds=20)
    )
    future = _token(key, now=NOW + timedelta(minutes=10))
    assert _reason(future, trusted) == "not_yet_valid"


def test_wrong_audience(key: IssuerKey, trusted: list[TrustedIssuer]) -> None:
    assert _reason(_token(key), trusted, audience="site-us") == "wrong_audience"


def test_untrusted_issuer(trusted: list[TrustedIssuer]) -> None:
    stranger = IssuerKey.generate("https://stranger.example.org")
    assert _reason(_token(stranger), trusted) == "untrusted_issuer"
    assert _reason(_token(stranger), []) == "untrusted_issuer"


def test_alg_none_is_refused(trusted: list[TrustedIssuer]) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    assert _reason(token, trusted) == "unsupported_algorithm"


def test_hs256_signed_with_the_public_pem_as_secret_is_refused(
    key: IssuerKey, trusted: list[TrustedIssuer]
) -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(key.public_pem, signing_input, hashlib.sha256).digest())
    assert _reason(f"{header}.{payload}.{signature}", trusted) == "unsupported_algorithm"


def test_rs256_is_refused(trusted: list[TrustedIssuer]) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    assert _reason(token, trusted) == "unsupported_algorithm"


def test_a_tampered_payload_fails_the_signature(
    key: IssuerKey, trusted: list[TrustedIssuer]
) -> None:
    header, _payload, signature = _token(key).split(".")
    forged = _b64(json.dumps(_claims(sub="mallory")).encode())
    assert _reason(f"{header}.{forged}.{signature}", trusted) == "bad_signature"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.bm90IGpzb24.c2ln", "x" * 50 + ".y.z"],
)
def test_malformed_strings(token: str, trusted: list[TrustedIssuer]) -> None:
    assert _reason(token, trusted) == "malformed"


@pytest.mark.parametrize("claim", ["sub", "aud", "exp", "nbf", "iat", "jti", "project", "purpose"])
def test_missing_claims(claim: str, key: IssuerKey, trusted: list[TrustedIssuer]) -> None:
    token = jwt.encode(_claims(**{claim: None}), key._signing_key(), algorithm="EdDSA")
    assert _reason(token, trusted) == "missing_claim"


def test_missing_issuer(key: IssuerKey, trusted: list[TrustedIssuer]) -> None:
    token = jwt.encode(_claims(iss=None), key._signing_key(), algorithm="EdDSA")
    assert _reason(token, trusted) == "missing_claim"


def test_claims_of_the_wrong_type_are_malformed(
    key: IssuerKey, trusted: list[TrustedIssuer]
) -> None:
    token = jwt.encode(_claims(project=["a", "b"]), key._signing_key(), algorithm="EdDSA")
    assert _reason(token, trusted) == "malformed"


def test_keys_round_trip_through_files(tmp_path: Path, key: IssuerKey) -> None:
    private_path, public_path = key.save(tmp_path / "keys", "demo")
    assert private_path.name == "demo.key.pem" and public_path.name == "demo.pub.pem"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private_path.read_bytes()
    loaded = IssuerKey.load(private_path, ISSUER)
    assert loaded.public_pem == key.public_pem
    trusted = [TrustedIssuer.from_file(ISSUER, public_path)]
    assert (
        verify_token(_token(loaded), trusted=trusted, audience=AUDIENCE, now=NOW).researcher
        == "alice"
    )


def test_bad_key_files_raise_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a key")
    with pytest.raises(IssuerKeyInvalid):
        IssuerKey.load(junk, ISSUER)
    with pytest.raises(ConfigError):
        TrustedIssuer.from_file(ISSUER, junk)
    with pytest.raises(IssuerKeyInvalid):
        TrustedIssuer.from_file(ISSUER, tmp_path / "absent.pem")


def test_error_tree() -> None:
    rejected = TokenRejected("no", reason="expired")
    assert isinstance(rejected, GovernanceError)
    assert isinstance(rejected, FedflowError)
    assert isinstance(rejected, PermissionError)
    with pytest.raises(ValueError):
        TokenRejected("no", reason="because")
