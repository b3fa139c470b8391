"""Ranking candidate standard concepts for local terms, lexical and with embeddings."""

from __future__ import annotations

import pytest

from harmonize import ConceptIndex, VocabularyStore, evaluate, labelled_terms
from harmonize.embedding import embedding_available, load_embedder


def test_lexical_ranking_finds_the_concept_within_its_domain(store: VocabularyStore) -> None:
    index = ConceptIndex(store)
    [height], [glucose] = (
        index.rank(["body height measured"], ["Measurement"]),
        index.rank(["Glucose [Mass/volume] in Blood"], ["Measurement"]),
    )
    assert height[0].concept_name.lower() == "body height"
    assert all(c.domain_id == "Measurement" for c in height)
    assert glucose[0].concept_name.startswith("Glucose")
    assert height[0].semantic is None
    assert height[0].score >= height[-1].score


def test_labelled_set_and_lexical_accuracy(store: VocabularyStore) -> None:
    terms = labelled_terms(store)
    assert len(terms) > 300
    assert {t.origin for t in terms} == {"synonym", "maps_to"}
    assert all(t.term.lower() != "" for t in terms)
    result = evaluate(ConceptIndex(store), terms)
    assert result["terms"] == len(terms)
    assert 0.5 < result["top1"] <= result["top5"] <= 1.0


@pytest.mark.integration
@pytest.mark.skipif(not embedding_available(), reason="extra harmonize-ai not installed")
def test_embeddings_rank_a_paraphrase_the_lexical_score_misses(store: VocabularyStore) -> None:
    embedder = load_embedder()
    lexical = ConceptIndex(store, domains=["Condition"])
    semantic = ConceptIndex(store, embedder, domains=["Condition"])
    term = ["heart attack"]
    best_semantic = semantic.rank(term, ["Condition"], top=5)[0]
    best_lexical = lexical.rank(term, ["Condition"], top=5)[0]
    assert any("myocardial infarction" in c.concept_name.lower() for c in best_semantic)
    assert not any("myocardial infarction" in c.concept_name.lower() for c in best_lexical)
    assert best_semantic[0].semantic is not None
