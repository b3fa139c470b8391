"""The compliance report: which mechanism enforces each control, and which test proves it.

The catalogue below names the controls an auditor asks about (HIPAA 164.312, GDPR, ISO/IEC
27001:2022 Annex A, NIST SP 800-53 Rev. 5). The mapping is not written here: each enforcing
module declares its controls next to its code in ``__controls__`` (see
:mod:`fedflow.core.controls`), and the Terraform modules in ``infra/terraform/controls.yaml``.
:func:`collect` imports every module of the platform's packages and reads those declarations;
:func:`build_report` joins them with the catalogue and checks that every test a declaration
names exists, so the report cannot cite a test that was renamed or deleted.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedflow.core.controls import Control
from fedflow.core.errors import ConfigError
from fedflow.core.settings import REPO_ROOT

__all__ = ["CATALOGUE", "Coverage", "Report", "build_report", "collect", "render_markdown"]

PACKAGES = ("fedflow", "executors", "governance", "flows", "harmonize")
INFRA_CONTROLS = Path("infra/terraform/controls.yaml")

CATALOGUE: dict[str, tuple[str, str]] = {
    # HIPAA Security Rule, technical safeguards (45 CFR 164.312)
    "HIPAA 164.312(a)(1)": ("HIPAA", "Access control"),
    "HIPAA 164.312(a)(2)(i)": ("HIPAA", "Unique user identification"),
    "HIPAA 164.312(a)(2)(iv)": ("HIPAA", "Encryption and decryption"),
    "HIPAA 164.312(b)": ("HIPAA", "Audit controls"),
    "HIPAA 164.312(c)(1)": ("HIPAA", "Integrity"),
    "HIPAA 164.312(d)": ("HIPAA", "Person or entity authentication"),
    "HIPAA 164.312(e)(1)": ("HIPAA", "Transmission security"),
    # GDPR (Regulation (EU) 2016/679)
    "GDPR Art. 5(1)(b)": ("GDPR", "Purpose limitation"),
    "GDPR Art. 5(1)(c)": ("GDPR", "Data minimisation"),
    "GDPR Art. 5(1)(e)": ("GDPR", "Storage limitation"),
    "GDPR Art. 5(1)(f)": ("GDPR", "Integrity and confidentiality"),
    "GDPR Art. 5(2)": ("GDPR", "Accountability"),
    "GDPR Art. 9": ("GDPR", "Processing of special categories (health, genetic data)"),
    "GDPR Art. 25": ("GDPR", "Data protection by design and by default"),
    "GDPR Art. 30": ("GDPR", "Records of processing activities"),
    "GDPR Art. 32": ("GDPR", "Security of processing"),
    "GDPR Art. 44-49": ("GDPR", "Transfers of personal data to third countries"),
    # ISO/IEC 27001:2022 Annex A
    "ISO 27001 A.5.15": ("ISO 27001", "Access control"),
    "ISO 27001 A.5.33": ("ISO 27001", "Protection of records"),
    "ISO 27001 A.5.34": ("ISO 27001", "Privacy and protection of PII"),
    "ISO 27001 A.8.5": ("ISO 27001", "Secure authentication"),
    "ISO 27001 A.8.11": ("ISO 27001", "Data masking"),
    "ISO 27001 A.8.15": ("ISO 27001", "Logging"),
    "ISO 27001 A.8.24": ("ISO 27001", "Use of cryptography"),
    # NIST SP 800-53 Rev. 5
    "NIST AC-3": ("NIST 800-53", "Access enforcement"),
    "NIST AC-4": ("NIST 800-53", "Information flow enforcement"),
    "NIST AC-6": ("NIST 800-53", "Least privilege"),
    "NIST AU-2": ("NIST 800-53", "Event logging"),
    "NIST AU-9": ("NIST 800-53", "Protection of audit information"),
    "NIST AU-10": ("NIST 800-53", "Non-repudiation"),
    "NIST SC-8": ("NIST 800-53", "Transmission confidentiality and integrity"),
    "NIST SC-13": ("NIST 800-53", "Cryptographic protection"),
    "NIST SC-28": ("NIST 800-53", "Protection of information at rest"),
    "NIST SI-7": ("NIST 800-53", "Software, firmware and information integrity"),
    "NIST SI-10": ("NIST 800-53", "Information input validation"),
}
"""Control id -> (framework, title)."""


@dataclass(frozen=True)
class Coverage:
    """One control: the mechanisms that enforce it, and the tests that prove them."""

    control: str
    framework: str
    title: str
    mechanisms: tuple[dict[str, Any], ...]
    tests: tuple[str, ...]

    @property
    def covered(self) -> bool:
        return bool(self.mechanisms) and bool(self.tests)


@dataclass(frozen=True)
class Report:
    """The whole report, and what is wrong with the metadata it was built from."""

    controls: tuple[Coverage, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def gaps(self) -> tuple[str, ...]:
        return tuple(c.control for c in self.controls if not c.covered)

    def to_json(self) -> str:
        body = {
            "controls": [
                {**asdict(c), "covered": c.covered, "mechanisms": list(c.mechanisms)}
                for c in self.controls
            ],
            "gaps": list(self.gaps),
            "problems": list(self.problems),
        }
        return json.dumps(body, indent=2)


def collect(root: Path = REPO_ROOT) -> list[tuple[str, Control]]:
    """Every ``(where, Control)`` declared by the platform's modules and Terraform modules."""
    found: list[tuple[str, Control]] = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names = [package]
        if hasattr(module, "__path__"):
            names += [
                info.name
                for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
                if not info.name.endswith("__main__")
            ]
        for name in sorted(names):
            declared = getattr(importlib.import_module(name), "__controls__", ())
            found += [(name, c) for c in declared]
    infra = root / INFRA_CONTROLS
    if infra.is_file():
        found += [(str(INFRA_CONTROLS.parent), c) for c in _infra_controls(infra)]
    return found


def build_report(root: Path = REPO_ROOT) -> Report:
    """Join the declarations with the catalogue; name unknown controls and missing tests."""
    declared = collect(root)
    existing = _existing_tests(root / "tests")
    problems = []
    for where, control in declared:
        if control.control not in CATALOGUE:
            problems.append(f"{where} declares {control.control!r}, which is not in the catalogue")
        if existing is not None:
            problems += [
                f"{where} cites {test}, which does not exist"
                for test in control.tests
                if test not in existing
            ]
    if existing is None:
        problems.append("no tests/ folder next to the code: run from a source checkout")
    rows = []
    for control_id, (framework, title) in CATALOGUE.items():
        mine = [(where, c) for where, c in declared if c.control == control_id]
        rows.append(
            Coverage(
                control=control_id,
                framework=framework,
                title=title,
                mechanisms=tuple(
                    {"module": where, "how": c.mechanism, "tests": list(c.tests)}
                    for where, c in mine
                ),
                tests=tuple(sorted({t for _, c in mine for t in c.tests})),
            )
        )
    return Report(tuple(rows), tuple(problems))


def render_markdown(report: Report) -> str:
    """The report as Markdown: one section per framework, one entry per control."""
    lines = ["# fedflow compliance report", ""]
    lines.append(
        "Generated by `fedflow compliance report` from the `__controls__` declarations next to "
        "the code and `infra/terraform/controls.yaml`."
    )
    framework = None
    for row in report.controls:
        if row.framework != framework:
            framework = row.framework
            lines += ["", f"## {framework}"]
        status = "" if row.covered else " — **GAP**"
        lines += ["", f"### {row.control}: {row.title}{status}", ""]
        for mechanism in row.mechanisms:
            lines.append(f"- `{mechanism['module']}`: {mechanism['how']}")
            lines += [f"  - proven by `{test}`" for test in mechanism["tests"]]
    if report.problems:
        lines += ["", "## Problems in the metadata", ""]
        lines += [f"- {problem}" for problem in report.problems]
    return "\n".join(lines) + "\n"


def _infra_controls(path: Path) -> list[Control]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ConfigError(f"{path} must hold a list of controls")
    try:
        return [
            Control(item["control"], item["mechanism"], tuple(item.get("tests", ())))
            for item in raw
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: a control entry is malformed ({type(exc).__name__})") from None


def _existing_tests(tests: Path) -> set[str] | None:
    if not tests.is_dir():
        return None
    found = set()
    for path in tests.rglob("test_*.py"):
        relative = path.relative_to(tests.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found |= {
            f"{relative}::{node.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        }
    return found
