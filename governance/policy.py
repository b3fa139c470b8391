"""Site policy, version 1: what may run on this site's data, for whom, and what may leave.

A custodian writes the policy as YAML; it is validated when loaded and identified by the digest
of its validated content, which every decision, receipt and audit entry records. The access
rules (``analyses``, ``datasets``, ``access``) are compiled to Cedar policies, joined by the
rules of the jurisdiction preset the site picks (``jurisdiction``, :mod:`governance.presets`)
and the custodian's own Cedar (``cedar``, or a ``cedar_file`` beside the policy), and the whole
set is validated against the Cedar schema when the policy is loaded (:mod:`governance.cedar`).
The pre-gate (:meth:`SitePolicy.evaluate`) verifies the token's visas
(:mod:`governance.passport`), asks Cedar, and returns a
:class:`~fedflow.core.messages.Decision` with a reason for every check, passed or failed, and
the ids of the policies that decided; it never raises for an ordinary denial. The resolution
limits (``survival``, ``beacon``) stay plain checks (:mod:`governance.resolution`).

Example::

    version: "2026-11-01"
    min_cell_count: 10          # airlock: frequency cells under this are suppressed
    release_extremes: false     # airlock: withhold min/max of numeric summaries
    differencing:               # airlock: refuse counts of near-identical cohorts (default on)
      enabled: true
      k: 10                     # default: min_cell_count
    review:                     # airlock: results a custodian approves before release
      analyses: [numeric_summary]
      output_kinds: [regression]
      always: false             # default: nothing is held for review
    survival:                   # pre-gate: the finest survival/Cox time grid (default: any)
      min_interval_days: 30
    beacon:                     # pre-gate: Beacon v2 granularity, boolean or count (default)
      granularity: boolean      # a count query is answered at boolean granularity
    privacy:                    # airlock: OpenDP noise and a budget (default off)
      enabled: true
      epsilon: 1.0              # per (project, dataset); query_epsilon 0.1 per release
    secure_aggregation:         # release: masked sums only (default: mask when asked)
      required: true            # refuse an additive output asked in the clear
      min_group: 3              # the smallest mask group this site masks for
    analyses:
      - name: cohort_count
        versions: ["1.0"]
      - name: characterization   # any version, any code
    datasets:
      omop:
        tables:
          person: [person_id, gender_concept_id, year_of_birth]
          condition_occurrence: "*"
        purposes: [DUO:0000006]          # declared purposes (GDPR purpose limitation)
        consent: [DUO:0000042]           # consent codes (DUO): the purposes it may serve
        controlled_access: [https://dac.example.org/datasets/omop]   # needs this visa grant
        terms: [https://dac.example.org/dua/v1]                      # needs these terms accepted
    access:
      projects: [gi-bleed]
      purposes: ["*"]
      destinations: ["*"]       # token audiences results may be released to
    jurisdiction: gdpr          # a preset: gdpr, hipaa or uk-five-safes (default: none)
    disabled_rules: []          # ids of preset policies this site switches off
    passport:                   # GA4GH visas: issuers trusted here and expiry rules
      visa_issuers: [{issuer: https://dac.example.org, public_key: dac.pub.pem}]
      max_assertion_age_days: 365
    cedar: |                    # the custodian's own Cedar policies
      @id("no-mallory")
      @reason("mallory is barred from this site")
      forbid(principal == Fedflow::Researcher::"mallory", action, resource);
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedflow.core import Analysis, TableColumns, digest_json
from fedflow.core.analysis import Params
from fedflow.core.configfile import describe_problems, read_yaml_mapping
from fedflow.core.controls import Control
from fedflow.core.messages import Decision, Request, Verdict
from fedflow.core.secagg import SecureAggregationPolicy
from governance import duo, presets
from governance.cedar import CedarEngine, PolicyBlock
from governance.cedar_compile import ANY, compile_rules
from governance.cedar_request import Check, Facts, decide, finest_date
from governance.differencing import DifferencingPolicy
from governance.errors import PolicyInvalid
from governance.identity import Identity
from governance.passport import PassportPolicy, verify_passport
from governance.privacy import PrivacyPolicy
from governance.resolution import BeaconPolicy, SurvivalPolicy
from governance.review import ReviewPolicy

__all__ = ["AccessRule", "AnalysisRule", "DatasetRule", "SitePolicy"]

__controls__ = (
    Control(
        "NIST AC-3",
        "Every request is decided by Cedar over the policies compiled from the site's YAML, its "
        "jurisdiction preset and the custodian's own Cedar, validated against a schema when the "
        "site starts (a fit's later round by the decision on the round it continues: "
        "executors.fits); each decision names the policies that decided it and is audited.",
        tests=(
            "tests/governance/test_cedar.py::test_a_custodian_forbid_refuses_with_its_id_and_reason",
            "tests/governance/test_cedar.py::test_a_site_with_an_invalid_policy_refuses_to_start",
            "tests/governance/test_cedar.py::test_an_evaluation_error_denies_instead_of_failing_open",
        ),
    ),
    Control(
        "HIPAA 164.312(a)(1)",
        "Access to a dataset's tables and columns is granted only by the site's policy, decided "
        "by Cedar per column; Cedar denies by default.",
        tests=(
            "tests/governance/test_cedar.py::test_a_column_outside_the_yaml_is_refused_by_default",
        ),
    ),
)

P = TypeVar("P", bound=Params)
_ENGINES: dict[str, CedarEngine] = {}
"""Compiled engines by policy digest (a site loads one policy; tests load many)."""


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AnalysisRule(_Rule):
    """An allowed analysis: its name, the versions allowed and, optionally, pinned code digests."""

    name: str = Field(min_length=1)
    versions: list[str] = Field(default_factory=lambda: [ANY], min_length=1)
    code_digests: list[str] | None = None


class DatasetRule(_Rule):
    """The tables of a dataset that may be read, each with its allowed columns (or ``"*"``),
    and what using it needs: declared purposes, consent codes, visa grants, accepted terms."""

    tables: dict[str, list[str] | Literal["*"]]
    purposes: list[str] = Field(default_factory=list)
    """The purposes the dataset may serve (a jurisdiction's purpose limitation checks them)."""
    consent: list[str] = Field(default_factory=list)
    """Consent codes (DUO ids or shorthands); the request's purpose must be within them."""
    controlled_access: list[str] = Field(default_factory=list)
    """Dataset ids/URLs; a ControlledAccessGrants visa for one of them is needed."""
    terms: list[str] = Field(default_factory=list)
    """Terms of use that AcceptedTermsAndPolicies visas must show accepted."""

    @field_validator("consent")
    @classmethod
    def _known_codes(cls, codes: list[str]) -> list[str]:
        unknown = [c for c in codes if not duo.is_duo(c)]
        if unknown:
            raise ValueError(f"unknown DUO consent codes {unknown}; known: {sorted(duo.DUO_TERMS)}")
        return codes


class AccessRule(_Rule):
    """Who may run analyses: researchers, projects and purposes (``"*"`` allows any), and
    the destinations (token audiences) results may be released to."""

    researchers: list[str] = Field(default_factory=lambda: [ANY])
    projects: list[str] = Field(default_factory=lambda: [ANY])
    purposes: list[str] = Field(default_factory=lambda: [ANY])
    destinations: list[str] = Field(default_factory=lambda: [ANY])


class SitePolicy(_Rule):
    """A site's policy: the pre-gate rules and the airlock's parameters."""

    version: str = "1"
    jurisdiction: Literal["gdpr", "hipaa", "uk-five-safes"] | None = None
    min_cell_count: int = Field(default=10, ge=1, le=1000)
    release_extremes: bool = False
    differencing: DifferencingPolicy = Field(default_factory=DifferencingPolicy)
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)
    survival: SurvivalPolicy = Field(default_factory=SurvivalPolicy)
    beacon: BeaconPolicy = Field(default_factory=BeaconPolicy)
    privacy: PrivacyPolicy = Field(default_factory=PrivacyPolicy)
    secure_aggregation: SecureAggregationPolicy = Field(default_factory=SecureAggregationPolicy)
    analyses: list[AnalysisRule] = Field(default_factory=list)
    datasets: dict[str, DatasetRule] = Field(default_factory=dict)
    access: AccessRule = Field(default_factory=AccessRule)
    passport: PassportPolicy = Field(default_factory=PassportPolicy)
    cedar: str = ""
    """The custodian's own Cedar policies (with ``cedar_file``, that file's text follows)."""
    disabled_rules: list[str] = Field(default_factory=list)
    """Ids of policies (a preset's) this site switches off."""
    jurisdiction_rules: str = ""
    """The Cedar policies of the jurisdiction preset, filled in by :meth:`parse`."""

    @classmethod
    def load(cls, path: Path) -> SitePolicy:
        """Read and validate a policy file; errors name the file and the fields at fault.

        Files it names (``cedar_file``, visa issuers' ``public_key``) are read relative to it.
        """
        raw = read_yaml_mapping(path, error=PolicyInvalid, what="policy file")
        return cls.parse(raw, source=str(path), base=Path(path).parent)

    @classmethod
    def parse(cls, raw: Any, *, source: str = "policy", base: Path | None = None) -> SitePolicy:
        """Validate a policy given as a mapping, with its preset, and its Cedar policies."""
        if not isinstance(raw, dict):
            raise PolicyInvalid(f"{source}: a policy must be a mapping")
        raw = _read_files(raw, base or Path.cwd(), source)
        if "jurisdiction_rules" in raw:
            raise PolicyInvalid(f"{source}: jurisdiction_rules come from the preset, not the file")
        if raw.get("jurisdiction") is not None:
            raw = presets.apply(raw, error=PolicyInvalid, source=source)
        try:
            policy = cls.model_validate(raw)
        except ValidationError as exc:
            raise PolicyInvalid(f"{source} is invalid: {describe_problems(exc)}") from None
        try:
            policy.engine  # noqa: B018 - compile and validate the Cedar policies now
        except PolicyInvalid as exc:
            raise PolicyInvalid(f"{source}: {exc.message}") from None
        return policy

    @property
    def engine(self) -> CedarEngine:
        """The policy's Cedar policies, compiled and validated against the schema (kept per
        policy digest, so a copy with other content never reuses a stale engine)."""
        digest = self.digest
        engine = _ENGINES.get(digest)
        if engine is None:
            blocks = [compile_rules(self.access, self.analyses, self.datasets)]
            if self.jurisdiction_rules:
                name = f"jurisdiction {self.jurisdiction}"
                blocks.append(PolicyBlock(name, self.jurisdiction_rules))
            if self.cedar:
                blocks.append(PolicyBlock("cedar", self.cedar))
            engine = CedarEngine(blocks, disabled=self.disabled_rules)
            if len(_ENGINES) >= 64:
                _ENGINES.pop(next(iter(_ENGINES)))
            _ENGINES[digest] = engine
        return engine

    @property
    def digest(self) -> str:
        """The policy's identity: the digest of its validated content."""
        return digest_json(self.model_dump(mode="json"))

    def evaluate(
        self,
        *,
        site: str,
        request: Request,
        identity: Identity,
        analysis: Analysis[Any],
        tables: TableColumns,
        params: Params | None = None,
        now: datetime | None = None,
    ) -> Decision:
        """Decide whether ``identity`` may run ``analysis`` over ``tables`` of the dataset.

        The token's visas are verified first (one that fails refuses the request); Cedar
        decides the analysis, dataset and columns, researcher, project and purpose. With
        ``params`` (the node always passes them), the ``survival`` and ``beacon`` sections
        check the resolution asked for (:mod:`governance.resolution`).
        """
        passport = verify_passport(
            identity.passport, policy=self.passport, subject=identity.researcher, now=now
        )
        checks: list[Check] = [(False, p.message, ("passport",)) for p in passport.problems]
        if passport.ignored and not self.passport.visa_issuers:
            why = f"{len(passport.ignored)} visa(s) not examined: this site trusts no visa issuer"
            checks.append((True, why, ()))
        else:
            checks += [
                (True, p.ignored_message, ("passport.untrusted_visas",)) for p in passport.ignored
            ]
        if passport.visas and not passport.problems:
            kinds = ", ".join(sorted({v.type for v in passport.visas}))
            why = f"{len(passport.visas)} visa(s) verified ({kinds})"
            checks.append((True, why, ("passport.visa_issuers",)))
        ref = analysis.ref()
        values = params.model_dump().values() if params is not None else ()
        facts = Facts(
            site=site,
            researcher=identity.researcher,
            project=identity.project,
            purpose=identity.purpose,
            destination=identity.audience,
            analysis=ref.name,
            version=ref.version,
            code_digest=ref.code_digest,
            output_kind=analysis.output.value,
            dataset=request.dataset,
            tables=tables,
            finest_date=finest_date(values),
            min_age=_int(params, "min_age"),
            max_age=_int(params, "max_age"),
            top_age=_int(params, "top_age"),
            passport=passport,
        )
        decided = decide(self.engine, self, facts)
        if request.analysis.code_digest != ref.code_digest:
            label = f"{ref.name}@{ref.version}"
            why = f"the code requested for {label} differs from the code this site runs"
            decided[0] = (False, why, ())
        checks += decided
        label = f"{analysis.name}@{analysis.version}"
        for check in (
            self.survival.check(label, analysis.output, params),
            self.beacon.check(params),
        ):
            if check is not None:
                ok, why, rule = check
                checks.append((ok, why, (rule,) if rule else ()))
        allowed = all(ok for ok, _, _ in checks)
        # A denial lists what failed and the policies that refused it; an allowance lists
        # every reason and every policy that allowed it.
        kept = [c for c in checks if allowed or not c[0]]
        return Decision(
            site=site,
            request_id=request.request_id,
            verdict=Verdict.ALLOW if allowed else Verdict.DENY,
            reasons=tuple(why for _, why, _ in kept if why),
            rules=tuple(dict.fromkeys(rule for _, _, rules in kept for rule in rules)),
            policy_digest=self.digest,
            researcher=identity.researcher,
            project=identity.project,
            purpose=identity.purpose,
        )

    def answered_params(self, params: P) -> P:
        """The parameters this site runs an allowed request with (a Beacon count query at a
        boolean-only site becomes a boolean one)."""
        return self.beacon.answered(params)


def _int(params: Params | None, name: str) -> int | None:
    value = getattr(params, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_files(raw: dict[str, Any], base: Path, source: str) -> dict[str, Any]:
    """``raw`` with ``cedar_file`` read into ``cedar`` and visa issuer keys read in."""
    raw = dict(raw)
    if "cedar_file" in raw:
        path = Path(str(raw.pop("cedar_file")))
        path = path if path.is_absolute() else base / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyInvalid(
                f"{source}: cannot read cedar_file {path}: {exc.strerror}"
            ) from None
        raw["cedar"] = "\n".join(t for t in (raw.get("cedar") or "", text) if t)
    if isinstance(raw.get("passport"), dict):
        raw["passport"] = PassportPolicy.read_keys(raw["passport"], base)
    return raw
