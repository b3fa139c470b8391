"""The two entry points a site calls: a Synthea export or FHIR bundles into a CDM folder."""

from __future__ import annotations

from pathlib import Path

from harmonize.accounting import HarmonizeReport
from harmonize.fhir import read_fhir
from harmonize.pipeline import harmonize_staged
from harmonize.settings import HarmonizeSettings
from harmonize.synthea import read_synthea

__all__ = ["harmonize_fhir", "harmonize_synthea"]


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
