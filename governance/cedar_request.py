"""One pre-gate request as Cedar requests and entities, and Cedar's answers as explained checks.

A request becomes one Cedar request per concern, all sharing one context (:data:`SCHEMA
<governance.cedar.SCHEMA>`): ``run`` the analysis, ``use`` the dataset, ``read`` each column,
``connect`` to the site (the researcher), ``work_on`` the project and ``pursue`` the purpose.
Each concern becomes a check with a sentence a custodian can read: what was allowed and by
which policies, or what was refused and why: the ``@reason`` of each ``forbid`` that matched
(with its id), or, when no ``permit`` matched, what the YAML does not allow.

Columns are classified by their OMOP names (:func:`column_kind`) so policies can name kinds
of columns (a jurisdiction preset refuses birth dates, timestamps and ZIP codes); dates among
the parameters give the request's ``finest_date`` (``year`` when every date is a year's first
or last day), ``min_age``/``max_age`` its age bounds, and ``top_age`` the age from which a
characterization counts one band.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedflow.core import TableColumns
from governance import duo
from governance.cedar import CedarAnswer, CedarEngine, entity
from governance.cedar_compile import ANY, purpose_id
from governance.passport import Passport

if TYPE_CHECKING:
    from governance.policy import SitePolicy

__all__ = ["Check", "Facts", "column_kind", "decide", "finest_date"]

Check = tuple[bool, str, tuple[str, ...]]
"""A concern's outcome: passed, its reason, and the ids of the policies that decided it."""

_GEO = frozenset({"address_1", "address_2", "city", "county", "latitude", "longitude"})


@dataclass(frozen=True)
class Facts:
    """What the pre-gate knows about a request once the token and visas are verified."""

    site: str
    researcher: str
    project: str
    purpose: str
    destination: str
    analysis: str
    version: str
    code_digest: str
    output_kind: str
    dataset: str
    tables: TableColumns
    finest_date: str = "none"
    min_age: int | None = None
    max_age: int | None = None
    top_age: int | None = None
    passport: Passport = field(default_factory=Passport)


def column_kind(name: str) -> str:
    """The kind of an OMOP column, by name: birth_date, datetime, date, zip, geo or other."""
    if name in {"month_of_birth", "day_of_birth", "birth_datetime"}:
        return "birth_date"
    if name.endswith("_datetime"):
        return "datetime"
    if name.endswith("_date"):
        return "date"
    if name == "zip" or name.endswith("_zip"):
        return "zip"
    if name in _GEO or name == "location_source_value":
        return "geo"
    return "other"


def finest_date(values: Iterable[Any]) -> str:
    """``day`` if a value (searched through nested mappings and lists) is a timestamp or a
    date other than a year's first or last day, ``year`` if every date is one of those,
    ``none`` without dates."""
    finest = "none"
    for value in values:
        if isinstance(value, dict):
            inner = finest_date(value.values())
        elif isinstance(value, list | tuple | set):
            inner = finest_date(value)
        elif isinstance(value, dt.datetime):
            inner = "day"
        elif isinstance(value, dt.date):
            inner = "year" if (value.month, value.day) in {(1, 1), (12, 31)} else "day"
        else:
            inner = "none"
        if inner == "day":
            return "day"
        if inner == "year":
            finest = "year"
    return finest


def decide(engine: CedarEngine, policy: SitePolicy, facts: Facts) -> list[Check]:
    """The checks of one request, in the order analysis, dataset, researcher, project, purpose.

    Remembered by ``engine`` for ``policy`` under every fact they depend on
    (:meth:`CedarEngine.recall <governance.cedar.CedarEngine.recall>`).
    """
    key = _key(facts)
    kept = engine.recall(key, policy)
    if kept is not None:
        return list(kept)
    checks = _decide(engine, policy, facts)
    engine.remember(key, policy, tuple(checks))
    return checks


def _key(facts: Facts) -> tuple[Any, ...]:
    """Every fact a decision reads: the request's, and what the visas established."""
    passport = facts.passport
    return (
        facts.site,
        facts.researcher,
        facts.project,
        facts.purpose,
        facts.destination,
        facts.analysis,
        facts.version,
        facts.code_digest,
        facts.output_kind,
        facts.dataset,
        tuple((table, tuple(columns)) for table, columns in facts.tables.items()),
        facts.finest_date,
        facts.min_age,
        facts.max_age,
        facts.top_age,
        passport.bona_fide,
        passport.grants,
        passport.accepted_terms,
    )


def _decide(engine: CedarEngine, policy: SitePolicy, facts: Facts) -> list[Check]:
    columns = [(t, c) for t, cols in facts.tables.items() for c in cols]
    principal = entity("Researcher", facts.researcher)
    context = _context(facts)
    asks: list[tuple[str, dict[str, str]]] = [
        ("run", entity("Analysis", facts.analysis)),
        ("use", entity("Dataset", facts.dataset)),
        ("connect", entity("Site", facts.site)),
        ("work_on", entity("Project", facts.project)),
        ("pursue", entity("Purpose", purpose_id(facts.purpose))),
    ]
    asks += [("read", entity("Column", f"{facts.dataset}/{t}/{c}")) for t, c in columns]
    requests = [
        {"principal": principal, "action": entity("Action", a), "resource": r, "context": context}
        for a, r in asks
    ]
    answers = engine.authorize(requests, _entities(policy, facts, columns))
    run, use, connect, work_on, pursue = answers[:5]
    reads = list(zip(columns, answers[5:], strict=True))
    label = f"{facts.analysis}@{facts.version}"
    seen: set[str] = set()  # a forbid that matches several concerns is reported once
    return [
        _explain(engine, run, f"analysis {label} is allowed", _why_not_run(policy, facts), seen),
        _dataset(engine, policy, facts, use, reads, seen),
        _explain(engine, connect, *_access("researcher", facts.researcher), seen),
        _explain(engine, work_on, *_access("project", facts.project), seen),
        _explain(engine, pursue, *_access("purpose", facts.purpose), seen),
    ]


def _access(kind: str, value: str) -> tuple[str, str]:
    return f"{kind} {value!r} is allowed", f"{kind} {value!r} is not allowed"


def _forbids(engine: CedarEngine, answer: CedarAnswer) -> list[str]:
    return [i for i in answer.policies if engine.by_id[i].effect == "forbid"]


def _new(ids: list[str], seen: set[str]) -> list[str]:
    fresh = [i for i in ids if i not in seen]
    seen.update(ids)
    return fresh


def _because(engine: CedarEngine, policy_id: str, what: str = "") -> str:
    reason = engine.by_id[policy_id].reason or f"forbidden by policy {policy_id}"
    return f"{reason}{': ' + what if what else ''} ({policy_id})"


def _explain(
    engine: CedarEngine, answer: CedarAnswer, allowed: str, refused: str, seen: set[str]
) -> Check:
    """A concern's check; an empty reason when only forbids reported earlier refused it."""
    if answer.allowed:
        return True, allowed, answer.policies
    if answer.errors:
        return False, _unevaluated(answer.errors, seen), answer.errors
    forbids = _forbids(engine, answer)
    if forbids:
        fresh = _new(forbids, seen)
        return False, "; ".join(_because(engine, i) for i in fresh), tuple(fresh)
    return False, refused, ()


def _unevaluated(ids: tuple[str, ...], seen: set[str]) -> str:
    fresh = _new(list(ids), seen)
    return f"policy {', '.join(fresh)} could not be evaluated: refused" if fresh else ""


def _why_not_run(policy: SitePolicy, facts: Facts) -> str:
    label = f"{facts.analysis}@{facts.version}"
    for rule in policy.analyses:
        if rule.name != facts.analysis:
            continue
        if ANY not in rule.versions and facts.version not in rule.versions:
            return f"version {facts.version} of {facts.analysis} is not allowed"
        if rule.code_digests is not None and facts.code_digest not in rule.code_digests:
            return f"the code of {label} is not one this site pinned"
    return f"analysis {facts.analysis} is not allowed at this site"


def _dataset(
    engine: CedarEngine,
    policy: SitePolicy,
    facts: Facts,
    use: CedarAnswer,
    reads: list[tuple[tuple[str, str], CedarAnswer]],
    seen: set[str],
) -> Check:
    name = facts.dataset
    if not use.allowed and not use.errors and not _forbids(engine, use):
        return False, f"dataset {name!r} is not open to federated analysis", ()
    problems: list[str] = []
    deciding: list[str] = []
    if not use.allowed:
        fresh = _new(_forbids(engine, use), seen)
        problems += [_because(engine, i) for i in fresh]
        deciding += fresh
    failed = [i for a in (use, *(a for _, a in reads)) for i in a.errors]
    if failed:
        problems.append(_unevaluated(tuple(dict.fromkeys(failed)), seen))
        deciding += failed
    rule = policy.datasets.get(name)
    unlisted: set[str] = set()
    by_forbid: dict[str, list[str]] = {}
    for (table, column), answer in reads:
        forbids = _forbids(engine, answer)
        for i in forbids:
            by_forbid.setdefault(i, []).append(f"{table}.{column}")
        if not answer.allowed and not forbids and not answer.errors:
            listed = rule is not None and table in rule.tables
            unlisted.add(f"{table}.{column}" if listed else f"table {table}")
    if unlisted:
        problems.insert(0, f"not allowed to read {', '.join(sorted(unlisted))}")
    for i in _new(list(by_forbid), seen):
        problems.append(_because(engine, i, ", ".join(sorted(by_forbid[i]))))
        deciding.append(i)
    if problems or not use.allowed or not all(a.allowed for _, a in reads):
        return False, "; ".join(p for p in problems if p), tuple(dict.fromkeys(deciding))
    ids = dict.fromkeys(use.policies + tuple(i for _, a in reads for i in a.policies))
    tables = ", ".join(sorted(facts.tables))
    return True, f"columns of {tables} in dataset {name!r} are allowed", tuple(ids)


def _context(facts: Facts) -> dict[str, Any]:
    context: dict[str, Any] = {
        "site": {"__entity": entity("Site", facts.site)},
        "dataset": {"__entity": entity("Dataset", facts.dataset)},
        "analysis": {"__entity": entity("Analysis", facts.analysis)},
        "project": {"__entity": entity("Project", facts.project)},
        "purpose": {"__entity": entity("Purpose", purpose_id(facts.purpose))},
        "version": facts.version,
        "code_digest": facts.code_digest,
        "output_kind": facts.output_kind,
        "destination": facts.destination,
        "finest_date": facts.finest_date,
    }
    if facts.min_age is not None:
        context["min_age"] = facts.min_age
    if facts.max_age is not None:
        context["max_age"] = facts.max_age
    if facts.top_age is not None:
        context["top_age"] = facts.top_age
    return context


def _entities(
    policy: SitePolicy, facts: Facts, columns: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    def ref(kind: str, name: str) -> dict[str, Any]:
        return {"__entity": entity(kind, name)}

    def one(kind: str, name: str, attrs: dict[str, Any] | None = None, parents: Any = ()) -> Any:
        return {"uid": entity(kind, name), "attrs": attrs or {}, "parents": list(parents)}

    access = policy.access
    rule = policy.datasets.get(facts.dataset)
    passport = facts.passport
    out = [
        one(
            "Researcher",
            facts.researcher,
            {
                "bona_fide": passport.bona_fide,
                "grants": sorted(passport.grants),
                "accepted_terms": sorted(passport.accepted_terms),
            },
        ),
        one(
            "Site",
            facts.site,
            {
                "destinations": [d for d in access.destinations if d != ANY],
                "any_destination": ANY in access.destinations,
                "named_researchers": [ref("Researcher", r) for r in access.researchers if r != ANY],
                "named_projects": [ref("Project", p) for p in access.projects if p != ANY],
            },
        ),
        one("Project", facts.project),
        one("Analysis", facts.analysis, {"output_kind": facts.output_kind}),
        one(
            "Dataset",
            facts.dataset,
            {
                "purposes": [
                    ref("Purpose", purpose_id(p)) for p in (rule.purposes if rule else [])
                ],
                "consent": [
                    ref("Purpose", duo.normalize(c)) for c in (rule.consent if rule else [])
                ],
            },
        ),
    ]
    for table in facts.tables:
        out.append(
            one("Table", f"{facts.dataset}/{table}", parents=[entity("Dataset", facts.dataset)])
        )
    for table, column in columns:
        out.append(
            one(
                "Column",
                f"{facts.dataset}/{table}/{column}",
                {"kind": column_kind(column)},
                [entity("Table", f"{facts.dataset}/{table}")],
            )
        )
    purposes = {t.id: t.parent for t in duo.DUO_TERMS.values()}
    purposes.setdefault(purpose_id(facts.purpose), None)
    for name, parent in purposes.items():
        out.append(one("Purpose", name, parents=[entity("Purpose", parent)] if parent else []))
    return out
