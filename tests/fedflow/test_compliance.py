"""The compliance report: built from the metadata next to the code, and checked against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedflow.cli import app
from fedflow.compliance import CATALOGUE, build_report, collect, render_markdown
from fedflow.core.controls import Control


def test_every_control_has_a_mechanism_and_a_test_and_every_cited_test_exists() -> None:
    report = build_report()
    assert report.problems == ()
    assert report.gaps == ()
    assert [c.control for c in report.controls] == list(CATALOGUE)


def test_declarations_come_from_the_code_and_the_terraform_metadata() -> None:
    found = collect()
    modules = {where for where, _ in found}
    assert {"governance.audit", "governance.receipts", "infra/terraform"} <= modules
    assert all(isinstance(control, Control) for _, control in found)


def test_a_missing_test_and_an_unknown_control_are_reported(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_real():\n    pass\n")
    infra = tmp_path / "infra" / "terraform"
    infra.mkdir(parents=True)
    (infra / "controls.yaml").write_text(
        "- control: NIST XX-99\n  mechanism: made up\n  tests: [tests/test_x.py::test_real]\n"
        "- control: NIST SC-28\n  mechanism: encrypted\n  tests: [tests/test_x.py::test_gone]\n"
    )
    problems = build_report(tmp_path).problems
    assert "infra/terraform declares 'NIST XX-99', which is not in the catalogue" in problems
    assert "infra/terraform cites tests/test_x.py::test_gone, which does not exist" in problems
    assert not any("test_x.py::test_real" in p for p in problems)


def test_a_malformed_declaration_is_refused() -> None:
    with pytest.raises(ValueError, match=r"tests/<path>\.py::<test>"):
        Control("NIST AU-9", "x", tests=("test_audit.py",))
    with pytest.raises(ValueError, match="control id and a mechanism"):
        Control("", "x")


def test_the_cli_writes_markdown_and_json_and_is_strict(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["compliance", "report", "--output", str(out), "--strict"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text == render_markdown(build_report())
    assert "### HIPAA 164.312(b): Audit controls" in text
    assert "proven by `tests/governance/test_audit.py::" in text
    result = runner.invoke(app, ["compliance", "report", "--format", "json"])
    body = json.loads(result.stdout)
    assert {c["control"] for c in body["controls"]} == set(CATALOGUE)
    assert all(c["covered"] for c in body["controls"])
