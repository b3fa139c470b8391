"""How every benchmark records its figures: the machine beside them, and one JSON results file.

Each results file starts with the machine's CPU count and load average (:func:`machine`) and
ends with the load average when the figures were done (:func:`save`): the machines are shared,
and a figure is read with the load it was measured under.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["machine", "save"]


def machine() -> dict[str, Any]:
    """The CPU count and the load average now, to start a results document with."""
    return {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0]}


def save(path: Path, results: dict[str, Any]) -> None:
    """Add the load average now to ``results`` and write them to ``path`` as indented JSON."""
    results["load_average_end"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
