"""The shared core: a leaf package of message types, formats, settings and errors.

Every layer imports it; it imports no layer.
"""

from fedflow.core.analysis import (
    Analysis,
    AnalysisRef,
    CountsCohort,
    OutputKind,
    Params,
    TableColumns,
)
from fedflow.core.arrowio import from_ipc, to_ipc
from fedflow.core.digest import canonical_json, digest_bytes, digest_file, digest_json
from fedflow.core.errors import (
    ConfigError,
    FedflowError,
    InvalidParameters,
    InvalidRequest,
    PayloadTooLarge,
    UnknownAnalysis,
)
from fedflow.core.settings import REPO_ROOT, Settings, get_settings

__all__ = [
    "REPO_ROOT",
    "Analysis",
    "AnalysisRef",
    "ConfigError",
    "CountsCohort",
    "FedflowError",
    "InvalidParameters",
    "InvalidRequest",
    "OutputKind",
    "Params",
    "PayloadTooLarge",
    "Settings",
    "TableColumns",
    "UnknownAnalysis",
    "canonical_json",
    "digest_bytes",
    "digest_file",
    "digest_json",
    "from_ipc",
    "get_settings",
    "to_ipc",
]
