"""Reading validated YAML files (site configs, policies, profiles) with errors that name the fault.

Problems are reported by field location and message only: pydantic's echo of the offending
input is left out, so a mistyped secret or a value from data never reaches a log or a terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedflow.core.errors import FedflowError

__all__ = ["describe_problems", "read_yaml_mapping"]


def describe_problems(exc: ValidationError) -> str:
    """``field.path: message; ...`` for every problem, without the inputs."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


def read_yaml_mapping(path: Path, *, error: type[FedflowError], what: str) -> dict[str, Any]:
    """The mapping in a YAML file; ``error`` (naming ``what`` and the file) if it is not one."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise error(f"{what} {path} must be a mapping")
    return raw
