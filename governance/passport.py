"""GA4GH Passport v1.2 visas: signed assertions about a researcher that a site can rely on.

A researcher's token may carry a ``ga4gh_passport_v1`` claim: a list of visas, each a compact
JWT signed (EdDSA, like the tokens) by a visa issuer (a data access committee, a signing
official's system). Its ``ga4gh_visa_v1`` claim holds ``type``, ``asserted`` (when the
assertion was made, epoch seconds), ``value``, ``source`` and ``by``. Three types decide
access here:

``ControlledAccessGrants``
    ``value`` names a dataset (its URL or id) the researcher was granted; honoured only when
    asserted ``by`` one of the policy's ``grant_by`` (default ``dac``, ``so``, ``system``).
``AcceptedTermsAndPolicies``
    ``value`` names terms of use the researcher accepted (e.g. a data use agreement's URL).
``ResearcherStatus``
    the researcher is a bona fide researcher.

Other types (``AffiliationAndRole``, ``LinkedIdentities``) are verified and otherwise unused.

The site's policy (``passport`` section, :class:`PassportPolicy`) names the visa issuers it
trusts with their public keys, and optionally the oldest assertion it accepts. Every visa is
checked: issuer trusted, signature, subject (the token's researcher), expiry (``exp``),
``asserted`` not in the future and not older than ``max_assertion_age_days``. One visa that
fails refuses the whole request (a forged visa is an attack, not a missing permission): the
reason names the visa by position and type only (``visa 2 (ControlledAccessGrants) rejected:
bad_signature``), never its other contents.

A site whose policy trusts no visa issuer does not use visas: it leaves them out unexamined.
With ``untrusted_visas: ignore``, a visa from an issuer the site does not list is left out
instead of refusing the request (a federation's tokens may carry visas meant for other
sites); every other failure still refuses.

A visa with ``conditions`` is verified but not honoured: this site does not evaluate visa
conditions, and v1.2 says a visa whose conditions are not understood must not be used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedflow.core.controls import Control
from governance.errors import IssuerKeyInvalid
from governance.identity import ALGORITHM, IssuerKey, TrustedIssuer

__all__ = [
    "CONTROLLED_ACCESS_GRANTS",
    "RESEARCHER_STATUS",
    "TERMS_AND_POLICIES",
    "VISA_REJECTION_REASONS",
    "VISA_TYPES",
    "Passport",
    "PassportPolicy",
    "Visa",
    "VisaIssuer",
    "VisaProblem",
    "issue_visa",
    "verify_passport",
]

__controls__ = (
    Control(
        "ISO 27001 A.5.15",
        "Controlled datasets open only to researchers holding a GA4GH ControlledAccessGrants visa "
        "signed by a visa issuer the site trusts; a forged, untrusted or expired visa refuses the "
        "request and is audited by position and type only.",
        tests=(
            "tests/governance/test_passport.py::test_a_forged_or_stale_visa_refuses_the_request",
            "tests/governance/test_passport_site.py::"
            "test_a_refused_visa_or_purpose_is_refused_and_audited",
        ),
    ),
    Control(
        "GDPR Art. 9",
        "Health data are used only for purposes within the dataset's consent (DUO codes with the "
        "DUO hierarchy).",
        tests=(
            "tests/governance/test_passport.py::test_the_purpose_must_be_within_the_datasets_consent",
        ),
    ),
)

CONTROLLED_ACCESS_GRANTS: Final = "ControlledAccessGrants"
TERMS_AND_POLICIES: Final = "AcceptedTermsAndPolicies"
RESEARCHER_STATUS: Final = "ResearcherStatus"
VISA_TYPES: Final = frozenset(
    {
        CONTROLLED_ACCESS_GRANTS,
        TERMS_AND_POLICIES,
        RESEARCHER_STATUS,
        "AffiliationAndRole",
        "LinkedIdentities",
    }
)
VISA_BY: Final = frozenset({"self", "peer", "system", "so", "dac"})
VISA_REJECTION_REASONS: Final = frozenset(
    {
        "malformed",
        "unsupported_algorithm",
        "untrusted_issuer",
        "bad_signature",
        "wrong_subject",
        "expired",
        "not_yet_valid",
        "assertion_too_old",
    }
)
_REQUIRED = ("iss", "sub", "iat", "exp", "ga4gh_visa_v1")


class VisaIssuer(BaseModel):
    """A visa issuer this site trusts: its URL and its Ed25519 public key (PEM text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1)
    public_key_pem: str = Field(min_length=1)

    @field_validator("public_key_pem")
    @classmethod
    def _ed25519(cls, pem: str) -> str:
        try:
            TrustedIssuer("visa issuer", pem.encode())
        except IssuerKeyInvalid as exc:
            raise ValueError(exc.message) from None
        return pem

    def trusted(self) -> TrustedIssuer:
        """The issuer as a :class:`TrustedIssuer` (the key parsed)."""
        return TrustedIssuer(self.issuer, self.public_key_pem.encode())


class PassportPolicy(BaseModel):
    """The policy's ``passport`` section: trusted visa issuers and expiry rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    visa_issuers: list[VisaIssuer] = Field(default_factory=list)
    max_assertion_age_days: int | None = Field(default=None, ge=1, le=36500)
    """Visas asserted longer ago than this are refused (None: only ``exp`` counts)."""
    grant_by: list[str] = Field(default_factory=lambda: ["dac", "so", "system"], min_length=1)
    """Who may assert a ControlledAccessGrants visa this site honours."""
    untrusted_visas: Literal["refuse", "ignore"] = "refuse"
    """``refuse``: a visa from an issuer not listed here refuses the request; ``ignore``: it is
    left out (for federations whose tokens carry visas meant for other sites)."""
    leeway_seconds: int = Field(default=30, ge=0, le=3600)

    @field_validator("grant_by")
    @classmethod
    def _known_by(cls, values: list[str]) -> list[str]:
        unknown = sorted(set(values) - VISA_BY)
        if unknown:
            raise ValueError(f"unknown visa 'by' values {unknown}; known: {sorted(VISA_BY)}")
        return values

    @staticmethod
    def read_keys(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
        """``raw`` (the section as written) with ``public_key: FILE`` entries read into
        ``public_key_pem`` (paths relative to ``base``), so the policy digest covers the keys."""
        issuers = []
        for entry in raw.get("visa_issuers") or []:
            if isinstance(entry, dict) and "public_key" in entry:
                entry = dict(entry)
                path = Path(str(entry.pop("public_key")))
                path = path if path.is_absolute() else base / path
                try:
                    entry["public_key_pem"] = path.read_text()
                except OSError as exc:
                    raise IssuerKeyInvalid(
                        f"cannot read visa issuer key {path}: {exc.strerror}"
                    ) from None
            issuers.append(entry)
        return {**raw, "visa_issuers": issuers} if "visa_issuers" in raw else dict(raw)


@dataclass(frozen=True)
class Visa:
    """A verified visa."""

    index: int
    type: str
    value: str
    source: str
    by: str | None
    issuer: str
    asserted: datetime
    expires: datetime
    conditional: bool = False


@dataclass(frozen=True)
class VisaProblem:
    """Why visa ``index`` (1-based) was refused; ``type`` is a known type or ``unknown``."""

    index: int
    type: str
    reason: str

    @property
    def message(self) -> str:
        return f"visa {self.index} ({self.type}) rejected: {self.reason}"

    @property
    def ignored_message(self) -> str:
        return f"visa {self.index} ({self.type}) ignored: {self.reason}"


@dataclass(frozen=True)
class Passport:
    """The visas of one token, verified: the usable ones and the problems found."""

    visas: tuple[Visa, ...] = ()
    problems: tuple[VisaProblem, ...] = ()
    ignored: tuple[VisaProblem, ...] = ()
    """Visas left out: from untrusted issuers under ``untrusted_visas: ignore``, or all of
    them at a site that trusts no visa issuer (it does not use visas)."""
    grant_by: frozenset[str] = field(default_factory=lambda: frozenset({"dac", "so", "system"}))

    def _usable(self, kind: str) -> list[Visa]:
        return [v for v in self.visas if v.type == kind and not v.conditional]

    @property
    def grants(self) -> frozenset[str]:
        """Datasets granted by ControlledAccessGrants visas asserted by a trusted role."""
        return frozenset(
            v.value for v in self._usable(CONTROLLED_ACCESS_GRANTS) if v.by in self.grant_by
        )

    @property
    def accepted_terms(self) -> frozenset[str]:
        """Terms and policies the researcher accepted."""
        return frozenset(v.value for v in self._usable(TERMS_AND_POLICIES))

    @property
    def bona_fide(self) -> bool:
        """Whether a ResearcherStatus visa says the researcher is bona fide."""
        return bool(self._usable(RESEARCHER_STATUS))


def issue_visa(
    key: IssuerKey,
    *,
    researcher: str,
    type: str,
    value: str,
    source: str,
    by: str = "dac",
    asserted: datetime | None = None,
    ttl: timedelta = timedelta(days=365),
    now: datetime | None = None,
    conditions: list[Any] | None = None,
) -> str:
    """Sign a visa of ``type`` for ``researcher`` (what a DAC or the demo's CLI does)."""
    if type not in VISA_TYPES:
        raise ValueError(f"unknown visa type {type!r}; known: {sorted(VISA_TYPES)}")
    if by not in VISA_BY:
        raise ValueError(f"unknown visa 'by' {by!r}; known: {sorted(VISA_BY)}")
    issued = now or datetime.now(UTC)
    visa: dict[str, Any] = {
        "type": type,
        "asserted": int((asserted or issued).timestamp()),
        "value": value,
        "source": source,
        "by": by,
    }
    if conditions is not None:
        visa["conditions"] = conditions
    claims = {
        "iss": key.issuer,
        "sub": researcher,
        "iat": int(issued.timestamp()),
        "exp": int((issued + ttl).timestamp()),
        "ga4gh_visa_v1": visa,
    }
    return jwt.encode(claims, key._signing_key(), algorithm=ALGORITHM, headers={"typ": "JWT"})


def verify_passport(
    visas: Sequence[str],
    *,
    policy: PassportPolicy,
    subject: str,
    now: datetime | None = None,
) -> Passport:
    """Verify every visa of a token whose researcher is ``subject``."""
    moment = now or datetime.now(UTC)
    by = frozenset(policy.grant_by)
    if not policy.visa_issuers:
        skipped = tuple(
            VisaProblem(i, "unknown", "no_visa_issuers") for i in range(1, len(visas) + 1)
        )
        return Passport(ignored=skipped, grant_by=by)
    good: list[Visa] = []
    problems: list[VisaProblem] = []
    ignored: list[VisaProblem] = []
    for index, token in enumerate(visas, start=1):
        result = _verify_one(index, token, policy, subject, moment)
        if isinstance(result, Visa):
            good.append(result)
        elif result.reason == "untrusted_issuer" and policy.untrusted_visas == "ignore":
            ignored.append(result)
        else:
            problems.append(result)
    return Passport(tuple(good), tuple(problems), tuple(ignored), by)


def _verify_one(
    index: int, token: str, policy: PassportPolicy, subject: str, now: datetime
) -> Visa | VisaProblem:
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, TypeError, ValueError):
        return VisaProblem(index, "unknown", "malformed")
    claim = unverified.get("ga4gh_visa_v1")
    kind = claim.get("type") if isinstance(claim, dict) else None
    label = kind if kind in VISA_TYPES else "unknown"

    def problem(reason: str) -> VisaProblem:
        return VisaProblem(index, label, reason)

    if header.get("alg") != ALGORITHM:
        return problem("unsupported_algorithm")
    keys = [i.trusted() for i in policy.visa_issuers if i.issuer == unverified.get("iss")]
    if not keys:
        return problem("untrusted_issuer")
    claims: dict[str, Any] | None = None
    for trusted in keys:
        try:
            claims = jwt.decode(
                token,
                trusted.public_key(),
                algorithms=[ALGORITHM],
                options={"require": list(_REQUIRED), "verify_exp": False, "verify_iat": False},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            return problem("malformed")
    if claims is None:
        return problem("bad_signature")
    visa = claims["ga4gh_visa_v1"]
    if label == "unknown" or not _well_formed(claims, visa):
        return problem("malformed")
    if claims["sub"] != subject:
        return problem("wrong_subject")
    slack = policy.leeway_seconds
    moment = now.timestamp()
    if claims["exp"] <= moment - slack:
        return problem("expired")
    if visa["asserted"] > moment + slack or claims["iat"] > moment + slack:
        return problem("not_yet_valid")
    oldest = policy.max_assertion_age_days
    if oldest is not None and moment - visa["asserted"] > oldest * 86400 + slack:
        return problem("assertion_too_old")
    return Visa(
        index=index,
        type=visa["type"],
        value=visa["value"],
        source=visa["source"],
        by=visa.get("by"),
        issuer=claims["iss"],
        asserted=datetime.fromtimestamp(visa["asserted"], UTC),
        expires=datetime.fromtimestamp(claims["exp"], UTC),
        conditional=bool(visa.get("conditions")),
    )


def _well_formed(claims: dict[str, Any], visa: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return (
        isinstance(visa, dict)
        and all(isinstance(visa.get(k), str) for k in ("type", "value", "source"))
        and number(visa.get("asserted"))
        and (visa.get("by") is None or visa.get("by") in VISA_BY)
        and isinstance(claims.get("sub"), str)
        and number(claims.get("exp"))
        and number(claims.get("iat"))
    )
