"""The relay's configuration file (``relay.yaml``): who may post calls, who may fetch them.

Relative paths resolve against the file's folder. Example::

    host: 0.0.0.0
    port: 8444
    tls_cert: pki/relay.pem            # the relay's server certificate and key
    tls_key: pki/relay.key.pem
    client_ca: pki/ca.pem              # client certificates must chain to this CA
    state_dir: relay                   # the relay's audit log
    orchestrators: [orchestrator]      # certificate names that may post calls
    sites: [eu-hospital, us-clinic]    # certificate names that may fetch (each its own) calls

A client is known by its certificate's common name: an orchestrator name may only post calls,
a site name may only fetch the calls queued for that same name and answer them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedflow.core import ConfigError
from fedflow.core.configfile import describe_problems, read_yaml_mapping

__all__ = ["RelayConfig"]

CertName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


class RelayConfig(BaseModel):
    """How the relay listens, whom it accepts and its limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8444, ge=0, le=65535)
    tls_cert: Path
    tls_key: Path
    client_ca: Path
    state_dir: Path = Path("relay")
    orchestrators: list[CertName] = Field(default_factory=lambda: ["orchestrator"], min_length=1)
    sites: list[CertName] = Field(min_length=1)
    max_queued_calls: int = Field(default=64, ge=1, le=100_000)
    """Calls that may wait for one site; more get 429 (the site is busy)."""
    max_call_bytes: int = Field(default=2 << 20, ge=1024, le=1 << 30)
    """Largest call the relay accepts from an orchestrator (413 past it)."""
    max_reply_bytes: int = Field(default=256 << 20, ge=1024, le=4 << 30)
    """Largest reply the relay accepts from a site (413 past it)."""
    max_call_s: float = Field(default=600.0, gt=0, le=3600)
    """Longest an orchestrator may wait for one reply."""
    max_poll_s: float = Field(default=20.0, gt=0, le=300)
    """Longest a site's poll is held open when no call is waiting."""
    offline_after_s: float = Field(default=10.0, gt=0, le=3600)
    """A site that has not polled for this long is offline: its calls fail at once (503)."""

    @model_validator(mode="after")
    def _distinct(self) -> RelayConfig:
        both = set(self.orchestrators) & set(self.sites)
        if both:
            raise ValueError(f"a name cannot be both orchestrator and site: {sorted(both)}")
        return self

    @classmethod
    def load(cls, path: Path) -> RelayConfig:
        """Read and validate a relay file, resolving paths against its folder."""
        raw = read_yaml_mapping(path, error=ConfigError, what="relay config")
        return cls.parse(raw, base=path.parent, source=str(path))

    @classmethod
    def parse(cls, raw: Any, *, base: Path, source: str = "relay config") -> RelayConfig:
        """Validate a relay configuration given as a mapping."""
        try:
            config = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"{source} is invalid: {describe_problems(exc)}") from None
        return config.model_copy(
            update={
                f: p if p.is_absolute() else (base / p).resolve()
                for f in ("tls_cert", "tls_key", "client_ca", "state_dir")
                for p in [getattr(config, f)]
            }
        )
