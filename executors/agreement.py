"""The site's key-agreement key for secure aggregation, and how it masks a release.

A site holds one long-lived X25519 key in its state folder (``agreement.key.pem``, PKCS8,
mode 0600), made on first start like its receipt key. Its public half is published in
:class:`~fedflow.core.messages.SiteInfo` (``agreement_key``); the orchestrator puts the keys of
a step's sites in the request's mask group, and the site derives masks with exactly those
peers (:mod:`fedflow.core.secagg`).

:func:`secure_refusal` is the site's side of the protocol's rules: it masks only an additive
output, for a group that names it with its own key and has at least the sites its policy asks
for (``secure_aggregation.min_group``), and, when its policy requires secure aggregation
(``secure_aggregation.required``), it refuses to release an additive output in the clear
(:class:`~fedflow.core.secagg.SecureAggregationPolicy`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Final

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from executors.errors import SiteError
from fedflow.core import secagg
from fedflow.core.analysis import OutputKind
from fedflow.core.keyfile import load_or_create_key
from fedflow.core.messages import Request
from fedflow.core.secagg import SecureAggregationPolicy

__all__ = ["KEPT_SECRETS", "AgreementKey", "AgreementKeyInvalid", "secure_refusal"]

KEPT_SECRETS: Final = 4096
"""Shared secrets a site keeps (one per peer key met), least recently used dropped first."""


class AgreementKeyInvalid(SiteError):
    """The site's key-agreement key file cannot be read."""


class AgreementKey:
    """A site's X25519 key-agreement key, and its shared secrets with the peers it has met.

    A pair's shared secret depends only on the two long-lived keys; every request's masks
    come from it through HKDF with the request's digest. Keeping the secrets (at most
    :data:`KEPT_SECRETS`, in memory only, beside the private key they come from) saves one
    X25519 exchange per peer and step: a step over 100 sites needs 99 at each site.
    """

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_text = secagg.public_key_text(private_key)
        self._exchange = secagg.exchange_with(private_key)
        self._secrets: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load_or_create(cls, path: Path) -> AgreementKey:
        """Read the PKCS8 PEM key at ``path``, or make one there (mode 0600) if absent."""
        return cls(
            load_or_create_key(
                path,
                X25519PrivateKey,
                X25519PrivateKey.generate,
                what="key-agreement key",
                error=AgreementKeyInvalid,
            )
        )

    def mask(
        self, table: pa.Table, kind: OutputKind, *, site: str, request: Request, threshold: int
    ) -> pa.Table:
        """``table`` masked for ``request``'s group (the request's digest is the context)."""
        assert request.secure is not None
        return secagg.mask_table(
            table,
            kind,
            private_key=self.private_key,
            site=site,
            spec=request.secure,
            context=request.digest(),
            threshold=threshold,
            exchange=self.shared_secret,
        )

    def shared_secret(self, peer_public_key: str) -> bytes:
        """The X25519 shared secret with the peer key ``peer_public_key`` (base64, raw)."""
        with self._lock:
            secret = self._secrets.get(peer_public_key)
            if secret is not None:
                self._secrets.move_to_end(peer_public_key)
                return secret
        secret = self._exchange(peer_public_key)
        with self._lock:
            self._secrets[peer_public_key] = secret
            while len(self._secrets) > KEPT_SECRETS:
                self._secrets.popitem(last=False)
        return secret

    def __repr__(self) -> str:
        return f"AgreementKey(public={self.public_text!r})"


def secure_refusal(
    request: Request,
    kind: OutputKind,
    *,
    site: str,
    key: AgreementKey,
    policy: SecureAggregationPolicy,
) -> str | None:
    """Why the site must refuse to release ``request``'s output as asked, or None."""
    spec = request.secure
    if spec is None:
        if policy.required and kind in secagg.MASKABLE:
            return "the site's policy requires secure aggregation of additive outputs"
        return None
    if kind not in secagg.MASKABLE:
        return f"secure aggregation was asked for output kind {kind.value}, which is not additive"
    member = {m.site: m.public_key for m in spec.group}
    if member.get(site) != key.public_text:
        return "the mask group does not name this site with its key-agreement key"
    if len(spec.group) < policy.min_group:
        return (
            f"the mask group has {len(spec.group)} sites; this site masks only for groups "
            f"of at least {policy.min_group}"
        )
    return None
