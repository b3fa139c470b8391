"""checkov passes on every Terraform module and example with zero failed checks.

checkov runs from its own virtual environment (its pinned dependencies would downgrade the
project's): ``.ci/checkov.sh`` creates ``.cache/checkov-venv`` on first use (with uv from the
``infra`` extra, ~5-25 s; with pip ~2.5 min) and scans each module and example with checkov's
Terraform runner inside one Python process (~30-40 s on two busy cores). Skips are inline
``checkov:skip`` comments with a justification (checked in test_terraform_hcl.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from tfparse import TERRAFORM_DIRS, TERRAFORM_ROOT

SCRIPT = TERRAFORM_ROOT.parents[1] / ".ci" / "checkov.sh"


@pytest.fixture(scope="session")
def checkov_reports() -> dict[str, dict[str, Any]]:
    """One checkov report per module and example directory, keyed like ``modules/aws-site``."""
    env = {**os.environ, "PYTHON": sys.executable}
    started = time.monotonic()
    install = subprocess.run(
        ["bash", str(SCRIPT), "--install-only"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    if install.returncode != 0:
        pytest.fail(f"could not install checkov:\n{install.stderr[-3000:]}")
    installed = time.monotonic()
    scan = subprocess.run(
        ["bash", str(SCRIPT), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    if scan.returncode not in (0, 1):  # 1: failed checks, reported below; else checkov broke
        pytest.fail(f"checkov did not run (exit {scan.returncode}):\n{scan.stderr[-3000:]}")
    scanned = time.monotonic()
    print(f"\ncheckov: install {installed - started:.1f} s, scan {scanned - installed:.1f} s")
    reports: dict[str, dict[str, Any]] = json.loads(scan.stdout)
    return reports


def test_every_directory_was_scanned(checkov_reports: dict[str, dict[str, Any]]) -> None:
    assert set(checkov_reports) == set(TERRAFORM_DIRS)


@pytest.mark.parametrize("directory", TERRAFORM_DIRS)
def test_checkov_finds_no_failed_checks(
    directory: str, checkov_reports: dict[str, dict[str, Any]]
) -> None:
    report = checkov_reports[directory]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, f"checkov could not parse {directory}"
    assert report["resource_count"] > 0 and summary["passed"] > 0, "checkov saw no resources"
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['line']}): {c['check_name']}"
        for c in report["failed_checks"]
    ]
    assert not failed, f"{directory}: {len(failed)} failed checks:\n" + "\n".join(failed)
