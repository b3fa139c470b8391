"""Every Terraform file parses (python-hcl2), and the modules follow the house rules: typed,
described, validated variables; described outputs; justified checkov skips; a README each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tfparse import MODULES, TERRAFORM_DIRS, TERRAFORM_ROOT, TerraformDir, parse_hcl

TF_FILES = sorted(TERRAFORM_ROOT.rglob("*.tf"))
# Free-form maps of tags/labels and on/off switches need no validation; everything else
# (names, CIDRs, regions, images, ARNs, sizes, retention periods) does.
UNVALIDATED = {"tags", "labels"}


def test_there_is_terraform_to_check() -> None:
    assert {p.parent.name for p in TF_FILES} >= set(MODULES)


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM_ROOT)))
def test_file_parses(path: Path) -> None:
    doc = parse_hcl(path.read_text())
    assert doc, f"{path.name} holds no blocks"


@pytest.mark.parametrize("directory", TERRAFORM_DIRS)
def test_variables_are_typed_described_and_validated(
    directory: str, terraform: dict[str, TerraformDir]
) -> None:
    tf = terraform[directory]
    assert tf.variables, f"{directory} declares no variables"
    for name, var in tf.variables.items():
        assert var.get("type"), f"variable {name} has no type"
        assert len(var.get("description", "")) >= 15, f"variable {name} has no description"
        if name in UNVALIDATED or var["type"] in ("bool", "${bool}"):
            continue
        validations = var.get("validation", [])
        assert validations, f"variable {name} has no validation block"
        for v in validations:
            assert f"var.{name}" in v["condition"], f"{name}'s validation does not test var.{name}"
            assert len(v["error_message"]) >= 15, f"{name}'s validation has no error message"


@pytest.mark.parametrize("directory", TERRAFORM_DIRS)
def test_outputs_are_described(directory: str, terraform: dict[str, TerraformDir]) -> None:
    tf = terraform[directory]
    assert tf.outputs, f"{directory} has no outputs"
    for name, output in tf.outputs.items():
        assert len(output.get("description", "")) >= 15, f"output {name} has no description"


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM_ROOT)))
def test_checkov_skips_are_inline_and_justified(path: Path) -> None:
    for line in path.read_text().splitlines():
        if "checkov:skip" not in line:
            continue
        match = re.search(r"#\s*checkov:skip=(CKV2?_[A-Z0-9]+_\d+):(.+)$", line)
        assert match, f"malformed skip in {path.name}: {line.strip()}"
        assert len(match.group(2).split()) >= 8, f"skip without a justification: {line.strip()}"


@pytest.mark.parametrize("module", MODULES)
def test_module_has_readme(module: str) -> None:
    readme = TERRAFORM_ROOT / "modules" / module / "README.md"
    assert readme.is_file(), f"modules/{module} has no README.md"
    text = readme.read_text()
    tf = TerraformDir.load(readme.parent)
    missing = [v for v in tf.variables if f"`{v}`" not in text]
    assert not missing, f"README of {module} does not document {missing}"


def test_example_uses_every_module_with_its_required_variables(
    terraform: dict[str, TerraformDir],
) -> None:
    used = set()
    for directory, tf in terraform.items():
        for name, call in tf.modules.items():
            target = (tf.path / call["source"]).resolve()
            assert target.is_dir(), f"{directory}: module {name} points at {call['source']}"
            module = terraform[str(target.relative_to(TERRAFORM_ROOT))]
            required = {v for v, body in module.variables.items() if "default" not in body}
            missing = required - set(call)
            assert not missing, f"{directory}: module {name} lacks {sorted(missing)}"
            unknown = set(call) - set(module.variables) - {"source", "providers"}
            assert not unknown, f"{directory}: module {name} sets unknown {sorted(unknown)}"
            used.add(target.name)
    assert used == set(MODULES)
