"""Command-line options that several ``fedflow`` commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["FederationProfile"]

FederationProfile = Annotated[
    Path,
    typer.Option(
        "--federation", "-f", help="Federation profile (YAML).", exists=True, dir_okay=False
    ),
]
"""``--federation/-f``: an existing federation profile file."""
