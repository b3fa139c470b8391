"""Fixtures for the Terraform tests: every module and example parsed once per session."""

from __future__ import annotations

import pytest
from tfparse import TERRAFORM_DIRS, TERRAFORM_ROOT, TerraformDir


@pytest.fixture(scope="session")
def terraform() -> dict[str, TerraformDir]:
    """Every module and example directory, parsed, keyed like ``modules/aws-site``."""
    return {d: TerraformDir.load(TERRAFORM_ROOT / d) for d in TERRAFORM_DIRS}
