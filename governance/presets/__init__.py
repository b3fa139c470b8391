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
from fedflow.core.controls import Control
from fedflow.core.errors import FedflowError

__all__ = ["PRESETS", "apply", "load"]

FOLDER: Final = Path(__file__).parent
PRESETS: Final = ("gdpr", "hipaa", "uk-five-safes")

__controls__ = (
    Control(
        "GDPR Art. 5(1)(b)",
        "The gdpr preset refuses a purpose the dataset does not declare (Cedar policy "
        "gdpr.purpose_limitation).",
        tests=("tests/governance/test_presets.py::test_gdpr_purpose_limitation",),
    ),
    Control(
        "GDPR Art. 44-49",
        "Results are released only to the destinations (token audiences) the site lists; the gdpr "
        "preset lists none by default.",
        tests=(
            "tests/governance/test_presets.py::test_gdpr_releases_only_to_allowed_destinations",
        ),
    ),
    Control(
        "ISO 27001 A.5.34",
        "The hipaa preset applies Safe Harbor before anything runs: no date finer than a year, "
        "ages over 89 as one category, no ZIP or finer geography; CMS threshold 11.",
        tests=(
            "tests/governance/test_presets.py::test_hipaa_safe_harbor_dates_in_columns",
            "tests/governance/test_presets.py::test_hipaa_zip3_rule",
            "tests/governance/test_presets.py::test_hipaa_date_parameters_and_ages_over_89",
        ),
    ),
)


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
