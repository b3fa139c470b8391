"""Terraform directories parsed with python-hcl2, for the tests in this folder.

No Terraform binary is needed. ``TerraformDir`` holds one directory's blocks (variables, locals,
outputs, resources) in the shape python-hcl2 gives them, with quotes stripped from strings. (A
module of its own, not conftest.py, so test modules import it by a name no other folder uses.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

TERRAFORM_ROOT = Path(__file__).resolve().parents[2] / "infra" / "terraform"
MODULES = ("aws-site", "azure-site", "gcp-site", "orchestrator")
SITE_MODULES = ("aws-site", "azure-site", "gcp-site")
EXAMPLES = tuple(sorted(p.name for p in (TERRAFORM_ROOT / "examples").iterdir() if p.is_dir()))
TERRAFORM_DIRS = tuple(f"modules/{m}" for m in MODULES) + tuple(f"examples/{e}" for e in EXAMPLES)

OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)


def parse_hcl(text: str) -> dict[str, Any]:
    """Parse HCL text into python-hcl2's dict form (strings unquoted)."""
    return hcl2.loads(text, serialization_options=OPTIONS)


def _name(key: str) -> str:
    return key.strip('"')


@dataclass
class TerraformDir:
    """The blocks of one Terraform directory, merged across its ``.tf`` files."""

    path: Path
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyed ``type.name``."""
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str = ""

    @classmethod
    def load(cls, path: Path) -> TerraformDir:
        tf = cls(path=path)
        for file in sorted(path.glob("*.tf")):
            text = file.read_text()
            tf.text += text
            doc = parse_hcl(text)
            for block in doc.get("variable", []):
                tf.variables.update({_name(k): v for k, v in block.items()})
            for block in doc.get("locals", []):
                tf.locals.update(block)
            for block in doc.get("output", []):
                tf.outputs.update({_name(k): v for k, v in block.items()})
            for block in doc.get("module", []):
                tf.modules.update({_name(k): v for k, v in block.items()})
            for kind, target in (("resource", tf.resources), ("data", tf.data)):
                for block in doc.get(kind, []):
                    for rtype, named in block.items():
                        for rname, body in named.items():
                            target[f"{_name(rtype)}.{_name(rname)}"] = body
        return tf
