"""A small X.509 PKI for mutual TLS between the orchestrator and site services.

``init_ca`` makes a certificate authority (``ca.pem``, ``ca.key.pem``) in a folder; ``issue``
signs a server certificate for a site service (with the host names and IP addresses it is
reached at, by default ``localhost`` and ``127.0.0.1``) or a client certificate for an
orchestrator. Keys are ECDSA P-256 and written mode 0600. This is for demos and tests: a
production federation takes its certificates from its own CA.

Files, for a name ``N`` in folder ``D``: ``D/N.pem`` (the certificate) and ``D/N.key.pem``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedflow.core import ConfigError
from fedflow.core.controls import Control

__all__ = ["CA_NAME", "DEFAULT_HOSTS", "IssuedCert", "init_ca", "issue"]

__controls__ = (
    Control(
        "HIPAA 164.312(e)(1)",
        "Sites serve only over mutual TLS: the client certificate must chain to the site's CA, "
        "and the orchestrator pins the site's CA; plain HTTP is refused unless enabled.",
        tests=(
            "tests/executors/test_service.py::test_a_client_without_a_trusted_certificate_fails_the_handshake",
            "tests/executors/test_service.py::test_plain_http_is_refused_unless_enabled",
        ),
    ),
    Control(
        "GDPR Art. 5(1)(f)",
        "Data stays at its site; what leaves travels only over mutual TLS to a pinned peer.",
        tests=(
            "tests/executors/test_service.py::test_a_client_without_a_trusted_certificate_fails_the_handshake",
            "tests/executors/test_service.py::test_what_leaves_a_site_holds_no_person_ids_or_birth_dates",
        ),
    ),
    Control(
        "NIST SC-8",
        "Mutual TLS between orchestrator and sites.",
        tests=(
            "tests/executors/test_service.py::test_a_client_without_a_trusted_certificate_fails_the_handshake",
        ),
    ),
    Control(
        "GDPR Art. 32",
        "Encrypted, mutually authenticated transport for every request and release.",
        tests=("tests/executors/test_service.py::test_same_results_in_process_and_over_https",),
    ),
    Control(
        "ISO 27001 A.8.24",
        "X.509 certificates (ECDSA P-256) for mutual TLS, Ed25519 for tokens and receipts.",
        tests=("tests/executors/test_service.py::test_plain_http_is_refused_unless_enabled",),
    ),
    Control(
        "NIST SC-13",
        "TLS through Python's ssl module; signatures through `cryptography` and PyJWT.",
        tests=(
            "tests/executors/test_service.py::test_a_client_without_a_trusted_certificate_fails_the_handshake",
        ),
    ),
)

CA_NAME = "ca"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
_VALIDITY = timedelta(days=30)


@dataclass(frozen=True)
class IssuedCert:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def init_ca(directory: Path, *, common_name: str = "fedflow demo CA") -> IssuedCert:
    """Make a CA in ``directory`` (``ca.pem``, ``ca.key.pem``); keep an existing one."""
    directory = Path(directory)
    cert_path, key_path = directory / f"{CA_NAME}.pem", directory / f"{CA_NAME}.key.pem"
    if cert_path.exists() and key_path.exists():
        return IssuedCert(cert_path, key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY * 12)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory, CA_NAME, cert, key)
    return IssuedCert(cert_path, key_path)


def issue(
    directory: Path,
    name: str,
    *,
    kind: Literal["server", "client"],
    hosts: Sequence[str] = DEFAULT_HOSTS,
    out: Path | None = None,
) -> IssuedCert:
    """Sign a ``kind`` certificate for ``name`` with the CA in ``directory``; write to ``out``."""
    directory = Path(directory)
    try:
        ca_cert = x509.load_pem_x509_certificate((directory / f"{CA_NAME}.pem").read_bytes())
        ca_key = serialization.load_pem_private_key(
            (directory / f"{CA_NAME}.key.pem").read_bytes(), None
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no usable CA in {directory} ({type(exc).__name__})") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the CA key in {directory} is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.SERVER_AUTH
                    if kind == "server"
                    else ExtendedKeyUsageOID.CLIENT_AUTH
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if kind == "server":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return _write(Path(out or directory), name, cert, key)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> IssuedCert:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key.pem"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return IssuedCert(cert_path, key_path)
