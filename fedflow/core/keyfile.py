"""Private keys a site keeps on disk: read one, or make it on first start (mode 0600)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from fedflow.core.errors import FedflowError

__all__ = ["load_or_create_key"]

K = TypeVar("K", bound=PrivateKeyTypes)


def load_or_create_key(
    path: Path,
    kind: type,
    generate: Callable[[], K],
    *,
    what: str,
    error: Callable[[str], FedflowError],
) -> K:
    """The PKCS8 PEM private key of type ``kind`` at ``path``, made there by ``generate`` if
    absent (created exclusively, mode 0600); ``error`` names a file that is unreadable or holds
    another kind of key (``what``: e.g. "receipt key")."""
    path = Path(path)
    if not path.exists():
        key = generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise error(f"cannot read {what} {path}: {type(exc).__name__}") from None
    if not isinstance(loaded, kind):
        name = kind.__name__.removesuffix("PrivateKey")
        raise error(f"{path} does not hold an {name} private key")
    return cast(K, loaded)
