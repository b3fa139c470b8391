"""The packages stay lint-clean, formatted and type-checked (ruff and mypy, as in CI)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from fedflow.core.settings import REPO_ROOT

PYTHON_TREES = ["fedflow", "flows", "executors", "governance", "harmonize", "tests", "bench"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", *PYTHON_TREES)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", *PYTHON_TREES)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.integration
def test_mypy_on_the_packages() -> None:
    typed = run("mypy")
    assert typed.returncode == 0, typed.stdout + typed.stderr


def test_every_package_is_packaged() -> None:
    """A wheel holds every package folder: pyproject lists each one explicitly."""
    listed = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for tree in PYTHON_TREES
        if tree not in ("tests", "bench")
        for init in (REPO_ROOT / tree).rglob("__init__.py")
    }
    assert found == listed
