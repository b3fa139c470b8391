"""The two entry points a site calls: a Synthea export or FHIR bundles into a CDM folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harmonize.accounting import HarmonizeReport
from harmonize.errors import SourceNotFound
from harmonize.fhir import read_fhir
from harmonize.pipeline import harmonize_staged
from harmonize.settings import HarmonizeSettings
from harmonize.synthea import read_synthea

__all__ = ["harmonize_fhir", "harmonize_synthea", "read_cdm"]


def harmonize_synthea(
    raw_dir: Path,
    out: Path,
    *,
    settings: HarmonizeSettings | None = None,
    progress: bool = False,
    min_coverage: float = 0.0,
) -> HarmonizeReport:
    """Build the OMOP CDM folder ``out`` from the Synthea CSV export in ``raw_dir``."""
    return harmonize_staged(
        lambda: read_synthea(raw_dir),
        out,
        source=str(raw_dir),
        kind="synthea",
        settings=settings,
        progress=progress,
        min_coverage=min_coverage,
    )


def harmonize_fhir(
    bundles: Path,
    out: Path,
    *,
    settings: HarmonizeSettings | None = None,
    progress: bool = False,
    min_coverage: float = 0.0,
) -> HarmonizeReport:
    """Build the OMOP CDM folder ``out`` from a FHIR R4 bundle file or a folder of bundles."""
    return harmonize_staged(
        lambda: read_fhir(bundles),
        out,
        source=str(bundles),
        kind="fhir",
        settings=settings,
        progress=progress,
        min_coverage=min_coverage,
    )


def read_cdm(folder: Path, tables: Iterable[str] | None = None) -> dict[str, pa.Table]:
    """The tables of a harmonized CDM folder (all, or the ``tables`` named) as Arrow tables.

    This is the form the demo federation takes for a site (``flows.demo.build_demo``).
    """
    available = {p.stem: p for p in sorted(folder.glob("*.parquet"))}
    if not available:
        raise SourceNotFound(f"no CDM tables in {folder}")
    wanted = list(tables) if tables is not None else list(available)
    missing = [t for t in wanted if t not in available]
    if missing:
        raise SourceNotFound(f"CDM folder {folder} lacks tables: {', '.join(missing)}")
    return {name: pq.read_table(available[name]) for name in wanted}
