"""The policy engine: site policies decided by Cedar (through ``cedarpy``), validated at start.

Every access decision of the pre-gate is a Cedar authorization: a researcher (principal)
asks to ``connect`` to the site, ``work_on`` a project, ``pursue`` a purpose, ``run`` an
analysis, ``use`` a dataset and ``read`` each column, all with the same request context.
:data:`SCHEMA` declares those entities, actions and the context; the site's YAML is compiled
to Cedar policies (:mod:`governance.cedar_compile`), a jurisdiction preset and the custodian
may add raw Cedar, and :class:`CedarEngine` validates the whole set against the schema when
the policy is loaded: a policy that does not parse or does not type-check refuses to start
with :class:`~governance.errors.PolicyInvalid` naming the policy's id and the problem.

Each policy is named by its ``@id("...")`` annotation (ids must be unique; a raw policy
without one is named ``<source>[<n>]``) and may explain itself with ``@reason("...")``; a
decision returns the ids of the policies that decided it. Cedar ignores a policy whose
evaluation fails, which would let a ``forbid`` fail open: here any evaluation error denies.

The engine remembers its decisions (:meth:`CedarEngine.recall`, :meth:`CedarEngine.remember`):
the pre-gate asks the same questions at ``check`` and ``submit``, and again for a fit's round
that goes through the gate (a later round is a step of the fit it allowed,
:mod:`executors.fits`). An answer is kept for at most :data:`DECISION_TTL` seconds,
:data:`DECISIONS_KEPT` at most, for the very policy object that asked (a reloaded policy
never reuses one) and under a key made of every fact the decision reads; Cedar has no
clock, so an answer depends on nothing else. Expiry of the token or of a visa is checked
before Cedar is asked, at every request.

Why Cedar: a small, analysable language with a schema validator, default deny and
"forbid wins", deterministic, and embeddable in-process (``cedarpy`` wraps the Rust
reference implementation); OPA/Rego would need a server or a WASM runtime and has no
schema validation of policies.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cedarpy

from governance.errors import PolicyInvalid

__all__ = [
    "DECISIONS_KEPT",
    "DECISION_TTL",
    "NAMESPACE",
    "SCHEMA",
    "CedarAnswer",
    "CedarEngine",
    "CedarPolicy",
    "PolicyBlock",
    "cedar_string",
    "entity",
]

NAMESPACE: Final = "Fedflow"
SCHEMA: Final = """
namespace Fedflow {
  // The facts of one request, the same for every action it is decided on.
  type Request = {
    site: Site,
    dataset: Dataset,
    analysis: Analysis,
    project: Project,
    purpose: Purpose,
    version: String,          // the analysis version
    code_digest: String,      // the analysis code's digest
    output_kind: String,      // frequency, summary, regression, survival, cox, ...
    destination: String,      // who receives released results (the token's audience)
    finest_date: String,      // "none", "year" or "day": the finest date among the parameters
    min_age?: Long,           // the cohort's age bounds, when the request has them
    max_age?: Long,
    top_age?: Long,           // the age from which a characterization counts one band
  };
  entity Researcher = {
    bona_fide: Bool,                  // holds a valid ResearcherStatus visa
    grants: Set<String>,              // datasets of valid ControlledAccessGrants visas
    accepted_terms: Set<String>,      // values of valid AcceptedTermsAndPolicies visas
  };
  entity Purpose in [Purpose];        // DUO terms sit in their DUO ancestors
  entity Project;
  entity Site = {
    destinations: Set<String>,        // access.destinations
    any_destination: Bool,            // access.destinations is "*"
    named_researchers: Set<Researcher>,
    named_projects: Set<Project>,
  };
  entity Dataset = {
    purposes: Set<Purpose>,           // the purposes the dataset declares (GDPR)
    consent: Set<Purpose>,            // its consent codes (DUO)
  };
  entity Table in [Dataset];
  entity Column in [Table] = {
    kind: String,                     // birth_date, datetime, date, zip, geo or other
  };
  entity Analysis = { output_kind: String };
  action "connect" appliesTo { principal: Researcher, resource: Site, context: Request };
  action "work_on" appliesTo { principal: Researcher, resource: Project, context: Request };
  action "pursue" appliesTo { principal: Researcher, resource: Purpose, context: Request };
  action "run" appliesTo { principal: Researcher, resource: Analysis, context: Request };
  action "use" appliesTo { principal: Researcher, resource: Dataset, context: Request };
  action "read" appliesTo { principal: Researcher, resource: Column, context: Request };
}
"""
_SCHEMA = cedarpy.Schema.from_str(SCHEMA)
DECISION_TTL: Final = 300.0
"""Seconds an engine keeps a decision."""
DECISIONS_KEPT: Final = 1024
"""Decisions an engine keeps at most (the least recently used go first)."""
_FAILED = re.compile(r"policy `(policy\d+)`")


def cedar_string(text: str) -> str:
    """``text`` as a Cedar string literal (quotes and backslashes escaped)."""
    if any(ord(c) < 0x20 for c in text):
        raise PolicyInvalid(f"a name in the policy contains a control character: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class PolicyBlock:
    """Cedar text from one source: the compiled YAML, a preset, or the custodian's own."""

    source: str
    text: str


@dataclass(frozen=True)
class CedarPolicy:
    """One policy of the set: its id, effect, explanation and where it came from."""

    id: str
    effect: str
    reason: str | None
    source: str


@dataclass(frozen=True)
class CedarAnswer:
    """Cedar's answer to one request: allowed, the ids of the policies that decided, and
    the ids of policies whose evaluation failed (any failure denies)."""

    allowed: bool
    policies: tuple[str, ...]
    errors: tuple[str, ...] = ()


class CedarEngine:
    """A validated Cedar policy set; :meth:`authorize` decides batches of requests."""

    def __init__(self, blocks: Sequence[PolicyBlock], *, disabled: Sequence[str] = ()) -> None:
        texts: list[str] = []
        self.policies: list[CedarPolicy] = []
        split = [item for block in blocks for item in _split(block)]
        for policy_id, policy, text in split:
            if policy_id not in disabled:
                self.policies.append(policy)
                texts.append(text)
        ids = [p.id for p in self.policies]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise PolicyInvalid(f"Cedar policy ids must be unique: {', '.join(duplicated)}")
        unknown = sorted(set(disabled) - {i for i, _, _ in split})
        if unknown:
            raise PolicyInvalid(f"disabled_rules names no policy: {', '.join(unknown)}")
        self.text = "\n".join(texts)
        result = cedarpy.validate_policies(self.text, _SCHEMA)
        if not result.validation_passed:
            problems: dict[str, list[str]] = {}
            for error in result.errors:
                name = self._name(error.policy_id)
                text = str(error.error).replace(f"`{error.policy_id}`", f"`{name}`")
                problems.setdefault(name, []).append(text)
            raise PolicyInvalid(
                "Cedar policies do not validate against the schema: "
                + "; ".join(
                    f"policy {name}: {texts[0]}"
                    + (f" (and {len(texts) - 1} more)" if len(texts) > 1 else "")
                    for name, texts in problems.items()
                )
            )
        self._set = cedarpy.PolicySet.from_str(self.text) if self.text else None
        self.by_id = {p.id: p for p in self.policies}
        self._decided: OrderedDict[Hashable, tuple[object, float, Any]] = OrderedDict()
        self._decided_lock = threading.Lock()

    def recall(self, key: Hashable, owner: object) -> Any:
        """The decision remembered under ``key`` for ``owner`` (the very object), or None."""
        with self._decided_lock:
            kept = self._decided.get(key)
            if kept is None:
                return None
            if kept[0] is not owner or time.monotonic() - kept[1] > DECISION_TTL:
                del self._decided[key]
                return None
            self._decided.move_to_end(key)
            return kept[2]

    def remember(self, key: Hashable, owner: object, decision: Any) -> None:
        """Keep ``decision`` (immutable) under ``key`` for ``owner``; see the module docstring."""
        with self._decided_lock:
            self._decided[key] = (owner, time.monotonic(), decision)
            self._decided.move_to_end(key)
            while len(self._decided) > DECISIONS_KEPT:
                self._decided.popitem(last=False)

    def _name(self, cedar_id: str) -> str:
        if cedar_id.startswith("policy") and cedar_id[6:].isdigit():
            index = int(cedar_id[6:])
            if index < len(self.policies):
                return self.policies[index].id
        return cedar_id or "(unknown)"

    def authorize(
        self, requests: Sequence[dict[str, Any]], entities: list[dict[str, Any]]
    ) -> list[CedarAnswer]:
        """Decide ``requests`` (Cedar JSON requests) over ``entities`` (Cedar JSON entities)."""
        if self._set is None:
            return [CedarAnswer(False, ()) for _ in requests]
        results = cedarpy.is_authorized_batch(list(requests), self._set, entities, _SCHEMA)
        answers = []
        for result in results:
            # Only the failing policies' ids: an error's text may quote request values.
            errors = tuple(
                dict.fromkeys(
                    self._name(m.group(1)) if (m := _FAILED.search(str(e))) else "(unknown)"
                    for e in result.diagnostics.errors
                )
            )
            ids = tuple(self._name(r) for r in result.diagnostics.reasons)
            answers.append(CedarAnswer(result.allowed and not errors, ids, errors))
        return answers


def entity(kind: str, name: str) -> dict[str, str]:
    """A Cedar entity reference in JSON form."""
    return {"type": f"{NAMESPACE}::{kind}", "id": name}


def _split(block: PolicyBlock) -> list[tuple[str, CedarPolicy, str]]:
    """The policies of a block, one text each, with their ids (checked to parse)."""
    if not block.text.strip():
        return []
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(block.text))
    except (ValueError, RuntimeError) as exc:
        raise PolicyInvalid(f"{block.source}: Cedar policies do not parse: {exc}") from None
    if parsed.get("templates"):
        raise PolicyInvalid(f"{block.source}: Cedar templates are not supported")
    out = []
    static = parsed.get("staticPolicies", {})
    for n, key in enumerate(sorted(static, key=lambda k: int(k.removeprefix("policy")))):
        body = static[key]
        notes = body.get("annotations") or {}
        policy_id = notes.get("id") or f"{block.source}[{n}]"
        policy = CedarPolicy(policy_id, body["effect"], notes.get("reason"), block.source)
        one = {"staticPolicies": {key: body}, "templates": {}, "templateLinks": []}
        text = cedarpy.policies_from_json_str(json.dumps(one))
        out.append((policy_id, policy, text))
    return out
