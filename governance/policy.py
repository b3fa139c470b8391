"""Site policy, version 1: what may run on this site's data, for whom, and what may leave.

A custodian writes the policy as YAML; it is validated when loaded and identified by the digest
of its validated content, which every decision, receipt and audit entry records. The pre-gate
(:meth:`SitePolicy.evaluate`) returns a :class:`~fedflow.core.messages.Decision` with a reason
for every check, passed or failed, and the rules that decided; it never raises for an ordinary
denial.

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
    analyses:
      - name: cohort_count
        versions: ["1.0"]
      - name: characterization   # any version, any code
    datasets:
      omop:
        tables:
          person: [person_id, gender_concept_id, year_of_birth]
          condition_occurrence: "*"
    access:
      projects: [gi-bleed]
      purposes: ["*"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedflow.core import Analysis, TableColumns, digest_json
from fedflow.core.analysis import Params
from fedflow.core.configfile import describe_problems, read_yaml_mapping
from fedflow.core.messages import Decision, Request, Verdict
from governance.differencing import DifferencingPolicy
from governance.errors import PolicyInvalid
from governance.identity import Identity
from governance.resolution import BeaconPolicy, SurvivalPolicy
from governance.review import ReviewPolicy

__all__ = ["AccessRule", "AnalysisRule", "DatasetRule", "SitePolicy"]

ANY = "*"
P = TypeVar("P", bound=Params)


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AnalysisRule(_Rule):
    """An allowed analysis: its name, the versions allowed and, optionally, pinned code digests."""

    name: str = Field(min_length=1)
    versions: list[str] = Field(default_factory=lambda: [ANY], min_length=1)
    code_digests: list[str] | None = None


class DatasetRule(_Rule):
    """The tables of a dataset that may be read, each with its allowed columns (or ``"*"``)."""

    tables: dict[str, list[str] | Literal["*"]]


class AccessRule(_Rule):
    """Who may run analyses: researchers, projects and purposes (``"*"`` allows any)."""

    researchers: list[str] = Field(default_factory=lambda: [ANY])
    projects: list[str] = Field(default_factory=lambda: [ANY])
    purposes: list[str] = Field(default_factory=lambda: [ANY])


class SitePolicy(_Rule):
    """A site's policy: the pre-gate rules and the airlock's parameters."""

    version: str = "1"
    min_cell_count: int = Field(default=10, ge=1, le=1000)
    release_extremes: bool = False
    differencing: DifferencingPolicy = Field(default_factory=DifferencingPolicy)
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)
    survival: SurvivalPolicy = Field(default_factory=SurvivalPolicy)
    beacon: BeaconPolicy = Field(default_factory=BeaconPolicy)
    analyses: list[AnalysisRule] = Field(default_factory=list)
    datasets: dict[str, DatasetRule] = Field(default_factory=dict)
    access: AccessRule = Field(default_factory=AccessRule)

    @classmethod
    def load(cls, path: Path) -> SitePolicy:
        """Read and validate a policy file; errors name the file and the fields at fault."""
        return cls.parse(
            read_yaml_mapping(path, error=PolicyInvalid, what="policy file"), source=str(path)
        )

    @classmethod
    def parse(cls, raw: Any, *, source: str = "policy") -> SitePolicy:
        """Validate a policy given as a mapping."""
        if not isinstance(raw, dict):
            raise PolicyInvalid(f"{source}: a policy must be a mapping")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise PolicyInvalid(f"{source} is invalid: {describe_problems(exc)}") from None

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
    ) -> Decision:
        """Decide whether ``identity`` may run ``analysis`` over ``tables`` of the dataset.

        With ``params`` (the node always passes them), the ``survival`` and ``beacon`` sections
        check the resolution asked for (:mod:`governance.resolution`).
        """
        checks = [
            self._check_analysis(request, analysis),
            self._check_dataset(request.dataset, tables),
            self._check_access("researchers", identity.researcher, self.access.researchers),
            self._check_access("projects", identity.project, self.access.projects),
            self._check_access("purposes", identity.purpose, self.access.purposes),
        ]
        label = f"{analysis.name}@{analysis.version}"
        for check in (
            self.survival.check(label, analysis.output, params),
            self.beacon.check(params),
        ):
            if check is not None:
                checks.append(check)
        allowed = all(ok for ok, _, _ in checks)
        return Decision(
            site=site,
            request_id=request.request_id,
            verdict=Verdict.ALLOW if allowed else Verdict.DENY,
            # A denial lists only what failed; an allowance lists every rule that allowed it.
            reasons=tuple(reason for ok, reason, _ in checks if allowed or not ok),
            rules=tuple(rule for ok, _, rule in checks if ok and rule),
            policy_digest=self.digest,
            researcher=identity.researcher,
            project=identity.project,
            purpose=identity.purpose,
        )

    def answered_params(self, params: P) -> P:
        """The parameters this site runs an allowed request with (a Beacon count query at a
        boolean-only site becomes a boolean one)."""
        return self.beacon.answered(params)

    def _check_analysis(self, request: Request, analysis: Analysis[Any]) -> tuple[bool, str, str]:
        ref = analysis.ref()
        label = f"{ref.name}@{ref.version}"
        if request.analysis.code_digest != ref.code_digest:
            return False, f"the code requested for {label} differs from the code this site runs", ""
        for i, rule in enumerate(self.analyses):
            if rule.name != ref.name:
                continue
            if ANY not in rule.versions and ref.version not in rule.versions:
                return False, f"version {ref.version} of {ref.name} is not allowed", ""
            if rule.code_digests is not None and ref.code_digest not in rule.code_digests:
                return False, f"the code of {label} is not one this site pinned", ""
            return True, f"analysis {label} is allowed", f"analyses[{i}]"
        return False, f"analysis {ref.name} is not allowed at this site", ""

    def _check_dataset(self, dataset: str, tables: TableColumns) -> tuple[bool, str, str]:
        rule = self.datasets.get(dataset)
        if rule is None:
            return False, f"dataset {dataset!r} is not open to federated analysis", ""
        refused: list[str] = []
        for table, columns in tables.items():
            allowed = rule.tables.get(table)
            if allowed is None:
                refused.append(f"table {table}")
            elif allowed != ANY:
                refused += [f"{table}.{c}" for c in columns if c not in allowed]
        if refused:
            return False, f"not allowed to read {', '.join(sorted(refused))}", ""
        names = ", ".join(sorted(tables))
        return True, f"columns of {names} in dataset {dataset!r} are allowed", f"datasets.{dataset}"

    @staticmethod
    def _check_access(kind: str, value: str, allowed: list[str]) -> tuple[bool, str, str]:
        singular = kind.removesuffix("s")
        if ANY in allowed or value in allowed:
            return True, f"{singular} {value!r} is allowed", f"access.{kind}"
        return False, f"{singular} {value!r} is not allowed", ""
