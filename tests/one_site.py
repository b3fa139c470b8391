"""One demo site over given OMOP tables, for tests that drive a site node directly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from executors import SiteConfig
from flows.demo import DemoSite, build_demo

__all__ = ["one_site"]


def one_site(root: Path, tables: Mapping[str, pa.Table], spec: DemoSite) -> tuple[SiteConfig, str]:
    """Write ``spec`` holding ``tables`` under ``root``: its config and the researcher's token."""
    build_demo(root, [tables], sites=[spec])
    config = SiteConfig.load(root / "sites" / spec.name / "site.yaml")
    return config, (root / "researcher.token").read_text().strip()
