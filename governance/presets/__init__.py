"""Jurisdiction presets: policy defaults and Cedar rules a site picks with ``jurisdiction:``.

Each preset is a YAML file in this folder written like a site policy (``gdpr.yaml``,
``hipaa.yaml``, ``uk-five-safes.yaml``): its settings are defaults the site's own file
overrides (mappings merge key by key, other values are replaced), and its ``cedar`` policies
join the site's, named by their ``@id`` so a site can switch one off with
``disabled_rules``. The merged mapping is validated and compiled like any site policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fedflow.core.configfile import read_yaml_mapping
from fedflow.core.errors import FedflowError

__all__ = ["PRESETS", "apply", "load"]

FOLDER: Final = Path(__file__).parent
PRESETS: Final = ("gdpr", "hipaa", "uk-five-safes")


def load(name: str, *, error: type[FedflowError]) -> dict[str, Any]:
    """The preset ``name`` as a mapping."""
    if name not in PRESETS:
        raise error(f"unknown jurisdiction {name!r}; presets: {', '.join(PRESETS)}")
    return read_yaml_mapping(FOLDER / f"{name}.yaml", error=error, what="jurisdiction preset")


def apply(raw: dict[str, Any], *, error: type[FedflowError], source: str) -> dict[str, Any]:
    """The site's policy ``raw`` over its jurisdiction's preset; the preset's Cedar policies
    in ``jurisdiction_rules``."""
    name = raw.get("jurisdiction")
    if not isinstance(name, str):
        raise error(f"{source}: jurisdiction must be one of {', '.join(PRESETS)}")
    preset = load(name, error=error)
    rules = preset.pop("cedar", "")
    merged = _merge(preset, raw)
    merged["jurisdiction_rules"] = rules
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
