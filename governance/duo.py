"""The part of the Data Use Ontology (DUO) this site needs: purposes and their hierarchy.

A dataset's consent codes and a researcher's purpose are DUO terms (``DUO:0000006``, or the
shorthand ``HMB``). A purpose is within consent if a consent code is the purpose itself or
one of its ancestors, or is ``NRES`` (no restriction): consent for general research use
(GRU) covers health/medical/biomedical research (HMB), which covers disease-specific
research (DS); population origins or ancestry research (POA) is a kind of GRU but not of HMB.

Source: the DUO ontology (EBISPOT/DUO, ``src/ontology/duo.owl``, the ``rdfs:subClassOf``
axioms of the data use permissions; shorthands and labels from its ``duo.csv``). Only the
terms below are known here; the data use modifiers (e.g. RS ``DUO:0000012``, NCU
``DUO:0000046``) are kept as labels: they add conditions a custodian checks with terms of use
(AcceptedTermsAndPolicies visas), they do not widen or narrow a purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DUO_TERMS", "NO_RESTRICTION", "DuoTerm", "ancestors", "is_duo", "normalize", "permits"]


@dataclass(frozen=True)
class DuoTerm:
    """One DUO term: its id, shorthand, label and parent (None for a root of this subset)."""

    id: str
    shorthand: str
    label: str
    parent: str | None = None
    modifier: bool = False


NO_RESTRICTION: Final = "DUO:0000004"
_TERMS = (
    DuoTerm(NO_RESTRICTION, "NRES", "no restriction"),
    DuoTerm("DUO:0000042", "GRU", "general research use"),
    DuoTerm("DUO:0000006", "HMB", "health or medical or biomedical research", "DUO:0000042"),
    DuoTerm("DUO:0000007", "DS", "disease specific research", "DUO:0000006"),
    DuoTerm("DUO:0000011", "POA", "population origins or ancestry research only", "DUO:0000042"),
    DuoTerm("DUO:0000043", "CC", "clinical care use", modifier=True),
    DuoTerm("DUO:0000012", "RS", "research specific restrictions", modifier=True),
    DuoTerm("DUO:0000015", "NMDS", "no general methods research", modifier=True),
    DuoTerm("DUO:0000016", "GSO", "genetic studies only", modifier=True),
    DuoTerm("DUO:0000021", "IRB", "ethics approval required", modifier=True),
    DuoTerm("DUO:0000046", "NCU", "non-commercial use only", modifier=True),
    DuoTerm("DUO:0000045", "NPU", "not for profit organisation use only", modifier=True),
    DuoTerm("DUO:0000019", "PUB", "publication required", modifier=True),
)
DUO_TERMS: Final = {t.id: t for t in _TERMS}
"""The known terms by id."""
_BY_SHORTHAND: Final = {t.shorthand: t.id for t in _TERMS}


def normalize(code: str) -> str:
    """``code`` as a DUO id if it names a known term (id, shorthand, or ``DUO_`` form)."""
    text = code.strip()
    if text.upper() in _BY_SHORTHAND:
        return _BY_SHORTHAND[text.upper()]
    text = text.replace("DUO_", "DUO:")
    return text if text in DUO_TERMS else code


def is_duo(code: str) -> bool:
    """Whether ``code`` names a known DUO term."""
    return normalize(code) in DUO_TERMS


def ancestors(code: str) -> tuple[str, ...]:
    """The term's ancestors in this subset, nearest first (empty for unknown terms)."""
    out: list[str] = []
    parent = DUO_TERMS[code].parent if code in DUO_TERMS else None
    while parent is not None:
        out.append(parent)
        parent = DUO_TERMS[parent].parent
    return tuple(out)


def permits(consent: list[str] | tuple[str, ...], purpose: str) -> bool:
    """Whether a dataset with ``consent`` codes may be used for ``purpose`` (a DUO term)."""
    codes = {normalize(c) for c in consent}
    if NO_RESTRICTION in codes:
        return True
    wanted = normalize(purpose)
    return wanted in DUO_TERMS and bool(codes & {wanted, *ancestors(wanted)})
