"""Federation profiles: which sites take part and how each is reached.

A profile is a YAML file, like a Nextflow profile: the flows stay the same when it changes.
Relative paths resolve against the profile's folder. Example::

    name: fedflow-demo            # the token audience every site of the federation accepts
    dataset: omop                 # the dataset name analyses run on by default
    token_file: researcher.token  # optional; FEDFLOW_TOKEN or an explicit token wins
    state_dir: orchestrator       # the orchestrator's audit log
    sites:
      - {name: eu-hospital, transport: in-process, config: sites/eu-hospital/site.yaml}
      - name: us-clinic               # a site service reached over HTTPS with mutual TLS
        transport: https
        url: https://clinic.example.org:8443
        ca: pki/us-clinic-ca.pem      # the site's CA, pinned
        cert: pki/orchestrator.pem    # the orchestrator's client certificate and key
        key: pki/orchestrator.key.pem
        receipt_key: keys/us-clinic.receipt.pub.pem   # the site's receipt key, pinned

      - name: nl-biobank              # a site that accepts no connection: it dials out to a
        transport: pull               # relay (fedflow site pull), which carries its calls
        url: https://relay.example.org:8444   # the relay
        ca: pki/relay-ca.pem          # the relay's CA, pinned
        cert: pki/orchestrator.pem    # the orchestrator's client certificate at the relay
        key: pki/orchestrator.key.pem
        receipt_key: keys/nl-biobank.receipt.pub.pem

An ``https`` site needs ``url``, ``ca``, ``cert``, ``key`` and ``receipt_key``; an ``http://``
url is refused unless ``allow_insecure_http: true`` (local development only). A ``pull`` site
needs the same, ``url`` being the relay's, always ``https://`` (see ``docs/pull.md``).

Opening a profile (:func:`connect`) starts in-process sites and connects to remote ones; the
open session is registered, so a flow run in this process reuses it instead of starting the
sites again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from executors import InProcessSiteTransport, SiteConfig, SiteNode, SiteTransport
from executors.pull import PullSiteTransport
from executors.transport import HttpsSiteTransport
from fedflow.core import ConfigError
from fedflow.core.configfile import describe_problems, read_yaml_mapping
from flows.errors import ProfileInvalid
from governance.audit import AuditLog

__all__ = ["Federation", "FederationSession", "SiteEntry", "connect", "open_session"]

TOKEN_ENV = "FEDFLOW_TOKEN"


class SiteEntry(BaseModel):
    """One site of a federation and how to reach it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    transport: Literal["in-process", "https", "pull"] = "in-process"
    config: Path | None = None
    url: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    receipt_key: Path | None = None
    timeout: float = Field(default=30.0, gt=0, le=3600)
    allow_insecure_http: bool = False

    @model_validator(mode="after")
    def _complete(self) -> SiteEntry:
        if self.transport == "in-process":
            if self.config is None:
                raise ValueError(f"in-process site {self.name} needs config")
            return self
        if not self.url:
            raise ValueError(f"{self.transport} site {self.name} needs url")
        if self.transport == "pull" and not self.url.startswith("https://"):
            raise ValueError(f"pull site {self.name}: url (the relay) must start with https://")
        if self.url.startswith("http://"):
            if not self.allow_insecure_http:
                raise ValueError(
                    f"site {self.name}: plain HTTP is refused unless allow_insecure_http: true"
                )
        elif not self.url.startswith("https://"):
            raise ValueError(f"site {self.name}: url must start with https://")
        else:
            missing = [f for f in ("ca", "cert", "key") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{self.transport} site {self.name} needs {', '.join(missing)}")
        if self.receipt_key is None:
            raise ValueError(
                f"{self.transport} site {self.name} needs receipt_key (the pinned public key)"
            )
        return self

    def resolved(self, base: Path) -> SiteEntry:
        """This entry with its paths resolved against ``base``."""

        def at(p: Path | None) -> Path | None:
            return None if p is None else base / p

        return self.model_copy(
            update={f: at(getattr(self, f)) for f in ("config", "ca", "cert", "key", "receipt_key")}
        )


class Federation(BaseModel):
    """A federation profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    dataset: str = "omop"
    token_file: Path | None = None
    state_dir: Path = Path("orchestrator")
    sites: list[SiteEntry] = Field(min_length=1)
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> Federation:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        return self

    @classmethod
    def load(cls, path: Path) -> Federation:
        """Read and validate a profile, resolving paths against its folder."""
        path = path.resolve()
        raw = read_yaml_mapping(path, error=ProfileInvalid, what="federation profile")
        try:
            profile = cls.model_validate(raw)
        except ValidationError as exc:
            raise ProfileInvalid(f"profile {path} is invalid: {describe_problems(exc)}") from None
        base = path.parent
        return profile.model_copy(
            update={
                "path": path,
                "token_file": None if profile.token_file is None else base / profile.token_file,
                "state_dir": base / profile.state_dir,
                "sites": [s.resolved(base) for s in profile.sites],
            }
        )

    def token(self, explicit: str | None = None) -> str:
        """The researcher token: ``explicit``, else ``$FEDFLOW_TOKEN``, else the token file."""
        if explicit:
            return explicit.strip()
        if os.environ.get(TOKEN_ENV):
            return os.environ[TOKEN_ENV].strip()
        if self.token_file is not None and self.token_file.is_file():
            return self.token_file.read_text().strip()
        raise ProfileInvalid(
            f"no researcher token: pass one, set {TOKEN_ENV}, or set token_file in the profile"
        )


SITE_THREADS = 64
"""Site stages of a session that run at once (in its threads)."""


@dataclass
class FederationSession:
    """An open federation: a transport per site, the orchestrator's audit log, and threads
    for the site stages of its steps (:meth:`site_threads`)."""

    profile: Federation
    transports: dict[str, SiteTransport]
    audit: AuditLog
    token: str
    _threads: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def site_threads(self) -> ThreadPoolExecutor:
        """The threads that run site stages (one per site, at most :data:`SITE_THREADS`).

        Made on first use and kept until :meth:`close`: every step and every round of a fit
        runs its stages there instead of starting threads of its own.
        """
        with self._lock:
            if self._threads is None:
                size = min(max(len(self.transports), 1), SITE_THREADS)
                self._threads = ThreadPoolExecutor(size, thread_name_prefix="site")
            return self._threads

    def close(self) -> None:
        with self._lock:
            if self._threads is not None:
                self._threads.shutdown(wait=False, cancel_futures=True)
        for transport in self.transports.values():
            transport.close()
        self.audit.close()


_sessions: dict[Path, FederationSession] = {}
_lock = threading.Lock()


def _open_transport(entry: SiteEntry) -> SiteTransport:
    if entry.transport in ("https", "pull"):
        assert entry.url is not None and entry.receipt_key is not None
        try:
            pinned = entry.receipt_key.read_bytes()
        except OSError as exc:
            raise ProfileInvalid(
                f"site {entry.name}: cannot read receipt_key {entry.receipt_key}: {exc.strerror}"
            ) from None
        if entry.transport == "pull":
            assert entry.ca is not None and entry.cert is not None and entry.key is not None
            return PullSiteTransport(
                entry.name,
                entry.url,
                ca=entry.ca,
                cert=entry.cert,
                key=entry.key,
                receipt_key=pinned,
                timeout=entry.timeout,
            )
        return HttpsSiteTransport(
            entry.name,
            entry.url,
            ca=entry.ca,
            cert=entry.cert,
            key=entry.key,
            receipt_key=pinned,
            timeout=entry.timeout,
            allow_insecure_http=entry.allow_insecure_http,
        )
    assert entry.config is not None
    config = SiteConfig.load(entry.config)
    if config.site != entry.name:
        raise ConfigError(f"profile names site {entry.name!r} but its config says {config.site!r}")
    return InProcessSiteTransport(SiteNode(config), owned=True)


@contextmanager
def connect(profile: Federation | Path, *, token: str | None = None) -> Iterator[FederationSession]:
    """Open a federation for the duration of the block (and register it for flows to reuse)."""
    fed = profile if isinstance(profile, Federation) else Federation.load(profile)
    fed.state_dir.mkdir(parents=True, exist_ok=True)
    transports: dict[str, SiteTransport] = {}
    audit = AuditLog(fed.state_dir / "audit.db", site="orchestrator")
    try:
        for entry in fed.sites:
            transports[entry.name] = _open_transport(entry)
        session = FederationSession(fed, transports, audit, fed.token(token))
    except BaseException:
        for transport in transports.values():
            transport.close()
        audit.close()
        raise
    key = fed.path or Path(fed.name)
    with _lock:
        _sessions[key] = session
    try:
        yield session
    finally:
        with _lock:
            _sessions.pop(key, None)
        session.close()


@contextmanager
def open_session(profile_path: str | Path) -> Iterator[FederationSession]:
    """The registered session for a profile, or a new one for the duration of the block."""
    path = Path(profile_path).resolve()
    with _lock:
        existing = _sessions.get(path)
    if existing is not None:
        yield existing
        return
    with connect(path) as session:
        yield session
