"""Who is on the other end of a mutual-TLS connection, as the ASGI TLS extension says it.

uvicorn verifies client certificates (``ssl_cert_reqs=CERT_REQUIRED``) but does not yet pass
them to the application (encode/uvicorn#1119, #3132). :class:`ClientCertH11Protocol` is
uvicorn's h11 protocol that does: per connection, it puts the verified client certificate in
``scope["extensions"]["tls"]`` as the ASGI TLS extension (version 0.2) specifies it, and
:func:`peer_name` reads the certificate's common name from there. Drop the protocol class once
uvicorn ships the extension.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ClientCertH11Protocol", "peer_name"]


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the verified client certificate to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = _tls_extension(transport)
        if tls is not None:
            inner = self.app

            async def app(scope: Any, receive: Any, send: Any) -> None:
                if scope.get("type") == "http":
                    scope = {**scope, "extensions": {**scope.get("extensions", {}), "tls": tls}}
                await inner(scope, receive, send)

            self.app = app


def _tls_extension(transport: asyncio.Transport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain = [] if der is None else [ssl.DER_cert_to_PEM_cert(der)]
    name = None
    if der is not None:
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


def peer_name(scope: Any) -> str | None:
    """The common name of the client certificate of this request, if it presented one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    cert = x509.load_pem_x509_certificate(chain[0].encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None
