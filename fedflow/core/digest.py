"""Content digests: canonical JSON and SHA-256, the identity of everything we sign or audit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["canonical_json", "digest_bytes", "digest_file", "digest_json"]


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to JSON with sorted keys and no spaces, so equal values hash equally."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_json(value: Any) -> str:
    """Digest of the canonical JSON form of ``value``."""
    return digest_bytes(canonical_json(value))


def digest_file(path: Path, chunk: int = 1 << 20) -> str:
    """Digest of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()
