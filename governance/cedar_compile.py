"""The site's YAML policy compiled to Cedar: one readable policy per rule, named by its path.

Each section of the YAML becomes policies whose ``@id`` is the rule's place in the YAML, so a
decision names the rule a custodian wrote (``analyses[0]``, ``datasets.omop``,
``access.projects``):

=========================================  ===================================================
YAML                                       Cedar
=========================================  ===================================================
``access.researchers: [a, b]``             ``permit connect when [a, b] contains principal``
``access.projects``, ``access.purposes``   ``permit work_on`` / ``permit pursue`` (a DUO
                                           purpose is also allowed by its ancestors)
``access.destinations``                    ``forbid connect unless destination is listed``
``analyses[i]``                            ``permit run`` of that analysis, versions, digests
``datasets.<d>``                           ``permit use`` of the dataset and ``read`` of the
                                           listed columns (``"*"``: every column of a table)
``datasets.<d>.consent`` (DUO codes)       ``forbid use unless the purpose is in consent``
``datasets.<d>.controlled_access``         ``forbid use unless a ControlledAccessGrants visa``
``datasets.<d>.terms``                     ``forbid use unless AcceptedTermsAndPolicies``
=========================================  ===================================================

Cedar denies by default: a request no ``permit`` matches is refused, and any ``forbid`` that
matches refuses it whatever permits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from governance import duo
from governance.cedar import NAMESPACE, PolicyBlock, cedar_string

if TYPE_CHECKING:
    from governance.policy import AccessRule, AnalysisRule, DatasetRule

__all__ = ["ANY", "compile_rules", "purpose_id"]

ANY = "*"


def _uid(kind: str, name: str) -> str:
    return f"{NAMESPACE}::{kind}::{cedar_string(name)}"


def _action(name: str) -> str:
    return f'{NAMESPACE}::Action::"{name}"'


def _set(kind: str, names: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(_uid(kind, n) for n in names) + "]"


def _strings(values: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(cedar_string(v) for v in values) + "]"


def _policy(rule: str, reason: str, effect: str, action: str, body: str = "", **scope: str) -> str:
    resource = scope.get("resource", "resource")
    head = f"@id({cedar_string(rule)})\n@reason({cedar_string(reason)})\n"
    return f"{head}{effect}(principal, {action}, {resource}){body};"


def purpose_id(purpose: str) -> str:
    """The Purpose entity id of a purpose: its DUO id if it names a DUO term, else itself."""
    return duo.normalize(purpose)


def compile_rules(
    access: AccessRule, analyses: list[AnalysisRule], datasets: dict[str, DatasetRule]
) -> PolicyBlock:
    """The Cedar policies of the YAML's ``access``, ``analyses`` and ``datasets`` sections."""
    out = [*_access(access)]
    out += [_analysis(i, rule) for i, rule in enumerate(analyses)]
    for name, dataset in datasets.items():
        out += _dataset(name, dataset)
    return PolicyBlock("policy", "\n".join(out))


def _access(access: AccessRule) -> list[str]:
    out = []
    for kind, action, variable, entity, values in (
        ("researchers", "connect", "principal", "Researcher", access.researchers),
        ("projects", "work_on", "resource", "Project", access.projects),
        ("purposes", "pursue", "resource", "Purpose", access.purposes),
    ):
        rule = f"access.{kind}"
        reason = f"the {kind} named in {rule}"
        if ANY in values:
            out.append(
                _policy(rule, f"any {kind[:-1]} ({rule})", "permit", f"action == {_action(action)}")
            )
        elif values:
            if kind == "purposes":
                test = f"{variable} in {_set(entity, [purpose_id(v) for v in values])}"
            else:
                test = f"{_set(entity, values)}.contains({variable})"
            out.append(
                _policy(
                    rule, reason, "permit", f"action == {_action(action)}", f" when {{ {test} }}"
                )
            )
    out.append(
        _policy(
            "access.destinations",
            "results may leave only to the destinations in access.destinations",
            "forbid",
            f"action == {_action('connect')}",
            " unless { resource.any_destination || "
            "resource.destinations.contains(context.destination) }",
        )
    )
    return out


def _analysis(i: int, rule: AnalysisRule) -> str:
    tests = []
    if ANY not in rule.versions:
        tests.append(f"{_strings(rule.versions)}.contains(context.version)")
    if rule.code_digests is not None:
        tests.append(f"{_strings(rule.code_digests)}.contains(context.code_digest)")
    body = f" when {{ {' && '.join(tests)} }}" if tests else ""
    return _policy(
        f"analyses[{i}]",
        f"analysis {rule.name} is allowed",
        "permit",
        f"action == {_action('run')}",
        body,
        resource=f"resource == {_uid('Analysis', rule.name)}",
    )


def _dataset(name: str, rule: DatasetRule) -> list[str]:
    whole = [f"{name}/{t}" for t, cols in rule.tables.items() if cols == ANY]
    columns = [f"{name}/{t}/{c}" for t, cols in rule.tables.items() if cols != ANY for c in cols]
    tests = [f"action == {_action('use')}"]
    if whole:
        tests.append(f"resource in {_set('Table', whole)}")
    if columns:
        tests.append(f"{_set('Column', columns)}.contains(resource)")
    key = f"datasets.{name}"
    out = [
        _policy(
            key,
            f"dataset {name} and its listed tables and columns are open",
            "permit",
            f"action in [{_action('use')}, {_action('read')}]",
            f" when {{ {' || '.join(tests)} }}",
            resource=f"resource in {_uid('Dataset', name)}",
        )
    ]
    use = f"action == {_action('use')}"
    this = f"resource == {_uid('Dataset', name)}"
    all_codes = [duo.normalize(c) for c in rule.consent]
    codes = [c for c in all_codes if c in duo.DUO_TERMS and not duo.DUO_TERMS[c].modifier]
    if codes and duo.NO_RESTRICTION not in codes:
        out.append(
            _policy(
                f"{key}.consent",
                f"the purpose is not within the consent of dataset {name} "
                f"({', '.join(duo.DUO_TERMS[c].shorthand for c in codes)}; DUO hierarchy)",
                "forbid",
                use,
                f" unless {{ context.purpose in {_set('Purpose', codes)} }}",
                resource=this,
            )
        )
    if rule.controlled_access:
        out.append(
            _policy(
                f"{key}.controlled_access",
                f"dataset {name} needs a valid ControlledAccessGrants visa for it",
                "forbid",
                use,
                f" unless {{ principal.grants.containsAny({_strings(rule.controlled_access)}) }}",
                resource=this,
            )
        )
    if rule.terms:
        out.append(
            _policy(
                f"{key}.terms",
                f"dataset {name} needs AcceptedTermsAndPolicies visas for its terms of use",
                "forbid",
                use,
                f" unless {{ principal.accepted_terms.containsAll({_strings(rule.terms)}) }}",
                resource=this,
            )
        )
    return out
