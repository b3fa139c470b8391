"""The site configuration file (``site.yaml``): what a custodian writes to run a site node.

Relative paths are resolved against the folder of the file. Example::

    site: eu-hospital
    jurisdiction: EU
    datasets:
      omop: {location: data/omop}            # a folder, s3://, az:// or gs:// URL
    policy: policy.yaml
    state_dir: state                         # audit log and quarantine
    dask: {workers: 1, threads_per_worker: 2}   # or {scheduler_address: tcp://host:8786}
    trusted_issuers:
      - {issuer: https://issuer.example.org, public_key: issuer.pub.pem}
    review_page: {host: 127.0.0.1, port: 8444}   # the custodian's review page (optional)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedflow.core import ConfigError
from fedflow.core.configfile import describe_problems, read_yaml_mapping

__all__ = [
    "AuditConfig",
    "DaskConfig",
    "DatasetConfig",
    "ReviewPageConfig",
    "ServiceConfig",
    "SiteConfig",
    "TrustedIssuerConfig",
]


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetConfig(_Config):
    """Where a dataset's OMOP tables lie (one ``<table>.parquet`` per table)."""

    location: str = Field(min_length=1)


class DaskConfig(_Config):
    """The site's own Dask cluster: a LocalCluster, or the address of an existing scheduler."""

    scheduler_address: str | None = None
    workers: int = Field(default=1, ge=1, le=256)
    threads_per_worker: int = Field(default=2, ge=1, le=256)
    processes: bool = False
    partitions: int | None = Field(default=None, ge=1, le=10_000)
    """Person partitions per job; by default two per worker thread, or, where the node keeps
    prepared partitions and computes their rounds itself (in-process workers,
    :class:`~executors.cluster.SiteCluster`), one per worker thread for a site alone in its
    process and one for each of several in-process sites."""

    @property
    def threads(self) -> int:
        """Worker threads of the LocalCluster this section starts (not of a scheduler's)."""
        return self.workers * self.threads_per_worker

    @model_validator(mode="after")
    def _consistent(self) -> DaskConfig:
        if self.scheduler_address and self.processes:
            raise ValueError("processes applies to a LocalCluster, not to a scheduler_address")
        return self


class TrustedIssuerConfig(_Config):
    """A token issuer this site trusts, with the public key its tokens must verify against."""

    issuer: str = Field(min_length=1)
    public_key: Path


class ServiceConfig(_Config):
    """How the site service listens (``fedflow site serve``) and what it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    """Largest request body accepted (413 past it)."""
    max_running_jobs: int = Field(default=4, ge=1, le=1024)
    """Jobs that may run at once; more get 429 with ``Retry-After``."""
    retry_after_s: int = Field(default=5, ge=1, le=3600)
    graceful_timeout_s: float = Field(default=5.0, ge=0, le=3600)
    """On SIGTERM, how long open connections get to finish before the node stops."""


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewPageConfig(_Config):
    """The custodian review page (``docs/review-page.md``): its own listener, no client certs.

    Plain HTTP is accepted on a loopback address only (development, or behind a local
    TLS-terminating proxy); any other ``host`` needs ``tls_cert`` and ``tls_key``.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8444, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    users: Path | None = None
    """The users file (``fedflow site user add``); default ``<state_dir>/review-users.json``."""
    session_minutes: float = Field(default=30, gt=0, le=24 * 60)
    """A sign-in lasts this long, then the custodian signs in again."""
    max_failures: int = Field(default=5, ge=1, le=100)
    """Failed sign-ins (per user name, and per client address x4) before a lockout."""
    lockout_minutes: float = Field(default=15, gt=0, le=24 * 60)
    """How long a lockout lasts; failures older than this are forgotten."""
    max_form_bytes: int = Field(default=16 * 1024, ge=1024, le=1 << 20)
    """Largest form body accepted (413 past it)."""
    secure_cookies: bool | None = None
    """Mark the session cookie ``Secure``; default: when TLS is configured."""

    @model_validator(mode="after")
    def _consistent(self) -> ReviewPageConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("review_page: tls_cert and tls_key go together")
        if self.tls_cert is None and not _is_loopback(self.host):
            raise ValueError(
                f"review_page: plain HTTP is for a loopback host only; {self.host!r} needs "
                "tls_cert and tls_key"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class AuditConfig(_Config):
    """Where audit checkpoints are exported (the live log stays in ``state_dir``)."""

    location: str | None = None


class SiteConfig(_Config):
    """A site node's configuration."""

    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    jurisdiction: str = ""
    audience: str = Field(default="fedflow", min_length=1)
    """The token audience this site accepts: its federation's name."""
    datasets: dict[str, DatasetConfig] = Field(min_length=1)
    policy: Path
    state_dir: Path
    dask: DaskConfig = Field(default_factory=DaskConfig)
    trusted_issuers: list[TrustedIssuerConfig] = Field(default_factory=list)
    service: ServiceConfig | None = None
    audit: AuditConfig | None = None
    review_page: ReviewPageConfig | None = None

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        """Read a site file, resolving relative paths against its folder."""
        raw = read_yaml_mapping(path, error=ConfigError, what="site config")
        return cls.parse(raw, base=path.parent, source=str(path))

    @classmethod
    def parse(cls, raw: Any, *, base: Path, source: str = "site config") -> SiteConfig:
        """Validate a site configuration given as a mapping."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a site config must be a mapping")
        try:
            config = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{source} is invalid: {describe_problems(exc)}") from None
        return config._resolved(base)

    def _resolved(self, base: Path) -> SiteConfig:
        def at(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        datasets = {
            name: DatasetConfig(
                location=d.location
                if "://" in d.location or Path(d.location).is_absolute()
                else str((base / d.location).resolve())
            )
            for name, d in self.datasets.items()
        }
        issuers = [
            TrustedIssuerConfig(issuer=t.issuer, public_key=at(t.public_key) or t.public_key)
            for t in self.trusted_issuers
        ]
        service = self.service
        if service is not None:
            service = service.model_copy(
                update={
                    "tls_cert": at(service.tls_cert),
                    "tls_key": at(service.tls_key),
                    "client_ca": at(service.client_ca),
                }
            )
        state_dir = at(self.state_dir) or self.state_dir
        page = self.review_page
        if page is not None:
            page = page.model_copy(
                update={
                    "tls_cert": at(page.tls_cert),
                    "tls_key": at(page.tls_key),
                    "users": at(page.users) or state_dir / "review-users.json",
                }
            )
        return self.model_copy(
            update={
                "datasets": datasets,
                "policy": at(self.policy),
                "state_dir": state_dir,
                "trusted_issuers": issuers,
                "service": service,
                "review_page": page,
            }
        )

    def review_users(self) -> Path:
        """The review page's users file (also when the page is not configured yet)."""
        page = self.review_page
        if page is not None and page.users is not None:
            return page.users
        return self.state_dir / "review-users.json"
