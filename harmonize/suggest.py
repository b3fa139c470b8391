"""Rank candidate standard concepts for local terms (AI-assisted mapping, in the spirit of Usagi).

Candidates are the standard concepts of the store within the right domain. Each is scored by
lexical similarity (rapidfuzz ``token_sort_ratio`` over normalised text) and, when the optional
model is installed, by the cosine similarity of sentence embeddings; the score is their weighted
mean (embedding weight 0.7 by default: the best of 0.3 / 0.5 / 0.7 / 1.0 on the labelled
set, see ``bench/harmonize_mapping_eval.py``). ``evaluate`` measures top-k accuracy on a
labelled set built from the vocabulary itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel
from rapidfuzz import fuzz, process, utils

from harmonize.embedding import Embedder
from harmonize.vocabulary import VocabularyStore

__all__ = ["Candidate", "ConceptIndex", "LabelledTerm", "evaluate", "labelled_terms"]


class Candidate(BaseModel):
    """One ranked standard concept for a term."""

    concept_id: int
    concept_name: str
    domain_id: str
    vocabulary_id: str
    lexical: float
    semantic: float | None
    score: float


@dataclass(frozen=True)
class LabelledTerm:
    """A term whose right standard concept is known (for evaluation)."""

    term: str
    domain_id: str
    concept_id: int
    origin: str


class ConceptIndex:
    """The standard concepts of a store, ready to rank against terms."""

    def __init__(
        self,
        vocab: VocabularyStore,
        embedder: Embedder | None = None,
        weight: float = 0.7,
        domains: Sequence[str] | None = None,
    ) -> None:
        concept = vocab.table("concept")
        standard = concept.filter(pc.equal(concept["standard_concept"], "S"))
        if domains is not None:
            standard = standard.filter(pc.is_in(standard["domain_id"], pa.array(list(domains))))
        self.ids = np.asarray(standard["concept_id"].to_numpy(), dtype=np.int64)
        self.names: list[str] = standard["concept_name"].to_pylist()
        self.domains = np.asarray(standard["domain_id"].to_pylist(), dtype=object)
        self.vocabularies: list[str] = standard["vocabulary_id"].to_pylist()
        self._clean = [utils.default_process(n) for n in self.names]
        self.embedder = embedder
        self.weight = weight
        self._vectors = embedder.encode(self.names) if embedder is not None else None

    def rank(
        self, terms: Sequence[str], domains: Sequence[str | None], top: int = 5
    ) -> list[list[Candidate]]:
        """The ``top`` candidates per term, restricted to its domain (None: any domain)."""
        if not terms:
            return []
        clean = [utils.default_process(t) for t in terms]
        lexical = process.cdist(clean, self._clean, scorer=fuzz.token_sort_ratio, workers=1)
        lexical = np.asarray(lexical, dtype=np.float32) / 100.0
        semantic = None
        if self.embedder is not None and self._vectors is not None:
            semantic = self.embedder.encode(list(terms)) @ self._vectors.T
        score = (
            lexical if semantic is None else (1 - self.weight) * lexical + self.weight * semantic
        )
        out: list[list[Candidate]] = []
        for i, domain in enumerate(domains):
            row = score[i].copy()
            if domain is not None:
                row[self.domains != domain] = -np.inf
            best = [j for j in np.argsort(-row, kind="stable")[:top] if np.isfinite(row[j])]
            out.append(
                [
                    Candidate(
                        concept_id=int(self.ids[j]),
                        concept_name=self.names[j],
                        domain_id=str(self.domains[j]),
                        vocabulary_id=self.vocabularies[j],
                        lexical=round(float(lexical[i, j]), 4),
                        semantic=None if semantic is None else round(float(semantic[i, j]), 4),
                        score=round(float(row[j]), 4),
                    )
                    for j in best
                ]
            )
        return out


def labelled_terms(vocab: VocabularyStore) -> list[LabelledTerm]:
    """Terms with known standard concepts, built from the vocabulary (names never identical).

    Two sources: synonyms of standard concepts (``concept_synonym``), and names of non-standard
    concepts with a ``Maps to`` standard concept (``concept_relationship``).
    """
    concept = vocab.table("concept")
    standard = {
        cid: (name, domain)
        for cid, name, domain, std in zip(
            *(concept[c].to_pylist() for c in ("concept_id", "concept_name", "domain_id")),
            concept["standard_concept"].to_pylist(),
            strict=True,
        )
        if std == "S"
    }
    names = dict(
        zip(concept["concept_id"].to_pylist(), concept["concept_name"].to_pylist(), strict=False)
    )
    seen: set[tuple[str, int]] = set()
    out: list[LabelledTerm] = []

    def add(term: str, cid: int, origin: str) -> None:
        name, domain = standard[cid]
        key = (term.lower(), cid)
        if term.lower() != name.lower() and key not in seen:
            seen.add(key)
            out.append(LabelledTerm(term, domain, cid, origin))

    synonym = vocab.table("concept_synonym")
    for cid, term in zip(
        synonym["concept_id"].to_pylist(), synonym["concept_synonym_name"].to_pylist(), strict=False
    ):
        if cid in standard and term:
            add(term, cid, "synonym")
    rel = vocab.table("concept_relationship")
    maps = rel.filter(pc.equal(rel["relationship_id"], "Maps to"))
    for a, b in zip(
        maps["concept_id_1"].to_pylist(), maps["concept_id_2"].to_pylist(), strict=False
    ):
        if a != b and a in names and b in standard:
            add(names[a], b, "maps_to")
    return out


def evaluate(index: ConceptIndex, terms: Sequence[LabelledTerm], top: int = 5) -> dict[str, float]:
    """Top-1 and top-``top`` accuracy of ``index`` on ``terms``."""
    ranked = index.rank([t.term for t in terms], [t.domain_id for t in terms], top=top)
    hits1 = sum(
        1 for t, r in zip(terms, ranked, strict=False) if r and r[0].concept_id == t.concept_id
    )
    hitsk = sum(
        1
        for t, r in zip(terms, ranked, strict=False)
        if any(c.concept_id == t.concept_id for c in r)
    )
    n = len(terms)
    return {"terms": n, "top1": hits1 / n if n else 0.0, f"top{top}": hitsk / n if n else 0.0}
