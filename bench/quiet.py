"""What every benchmark sets before Prefect and Dask start: their console logs at errors only.

(``flows.prefect_api``, which every benchmark starts its Prefect server with, turns Prefect's
telemetry off.)
"""

from __future__ import annotations

import os

__all__ = ["quiet_logs"]


def quiet_logs() -> None:
    """Prefect's console and Dask's distributed logs at errors only, unless already set."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
