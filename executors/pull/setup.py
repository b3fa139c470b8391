"""Make some sites of a built federation pull sites: certificates, relay file, profile.

:func:`prepare_pull` is for demos, tests and benchmarks (a production federation takes its
certificates from its own CA). Next to a federation profile whose sites run in-process, it
writes a demo CA and certificates under ``pki/`` (the relay's server certificate, the
orchestrator's client certificate, a client certificate per pull site under ``pki/pull/``),
each pull site's pinned receipt key, ``relay.yaml`` and ``federation-pull.yaml``: the same
profile with the named sites reached through the relay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from executors.config import SiteConfig
from executors.pki import init_ca, issue
from fedflow.core import ConfigError
from governance.receipts import ReceiptKey

__all__ = ["AgentFiles", "PullSetup", "prepare_pull"]


@dataclass(frozen=True)
class AgentFiles:
    """What a site's agent is started with (``fedflow site pull``)."""

    config: Path
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class PullSetup:
    """The files :func:`prepare_pull` wrote."""

    profile: Path
    relay_config: Path
    relay_url: str
    agents: dict[str, AgentFiles]


def prepare_pull(
    profile: Path,
    sites: Sequence[str],
    *,
    relay_port: int,
    host: str = "127.0.0.1",
    relay: dict[str, Any] | None = None,
) -> PullSetup:
    """Reach ``sites`` of ``profile`` through a relay on ``host:relay_port`` (see above).

    ``relay``: more settings for ``relay.yaml`` (``offline_after_s``, limits...).
    """
    root = profile.parent
    raw = yaml.safe_load(profile.read_text())
    entries = {e["name"]: e for e in raw["sites"]}
    unknown = sorted(set(sites) - set(entries))
    if unknown:
        raise ConfigError(f"{profile} has no site {unknown}")
    pki = root / "pki"
    ca = init_ca(pki)
    server = issue(pki, "relay", kind="server", hosts=(host, "localhost", "127.0.0.1"))
    if not (pki / "orchestrator.pem").exists():
        issue(pki, "orchestrator", kind="client")
    agents = {}
    for name in sites:
        config = root / entries[name]["config"]
        client = issue(pki, name, kind="client", out=pki / "pull")
        receipt = ReceiptKey.load_or_create(SiteConfig.load(config).state_dir / "receipt.key.pem")
        (pki / f"{name}.receipt.pub.pem").write_bytes(receipt.public_pem)
        agents[name] = AgentFiles(config, ca.cert, client.cert, client.key)
        entries[name] = {
            "name": name,
            "transport": "pull",
            "url": f"https://{host}:{relay_port}",
            "ca": "pki/ca.pem",
            "cert": "pki/orchestrator.pem",
            "key": "pki/orchestrator.key.pem",
            "receipt_key": f"pki/{name}.receipt.pub.pem",
        }
    relay_config = root / "relay.yaml"
    settings = {
        "host": host,
        "port": relay_port,
        "tls_cert": str(server.cert.relative_to(root)),
        "tls_key": str(server.key.relative_to(root)),
        "client_ca": str(ca.cert.relative_to(root)),
        "state_dir": "relay",
        "orchestrators": ["orchestrator"],
        "sites": list(sites),
        **(relay or {}),
    }
    relay_config.write_text(yaml.safe_dump(settings, sort_keys=False))
    pulled = root / "federation-pull.yaml"
    pulled.write_text(
        yaml.safe_dump(
            {**raw, "sites": [entries[e["name"]] for e in raw["sites"]]}, sort_keys=False
        )
    )
    return PullSetup(pulled, relay_config, f"https://{host}:{relay_port}", agents)
