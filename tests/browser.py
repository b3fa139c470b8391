"""Headless Chromium for the browser tests, driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``FEDFLOW_CHROMIUM``):
Playwright's own browser download is not reachable from every machine, a distribution's
package is. When it is missing and this process may run ``apt-get`` (as root), it is
installed on first use, as the storage tests install Azurite. Otherwise the browser tests
skip with the command that installs it; in CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["chromium", "chromium_executable"]

INSTALL = "apt-get install -y chromium"
FLAGS = [
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium keeps dialling Google's hosts, which a closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> Path:
    """Debian's Chromium, installed now with apt-get when missing and possible."""
    path = Path(os.environ.get("FEDFLOW_CHROMIUM", "/usr/bin/chromium"))
    if path.exists():
        return path
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        _unavailable(f"Chromium is not installed at {path}: run `sudo {INSTALL}` (Debian/Ubuntu)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            _unavailable(f"`{' '.join(command)}` failed:\n{done.stderr[-2000:]}")
    if not path.exists():
        _unavailable(f"apt-get installed chromium but {path} does not exist")
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium browser for the duration of the block."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is in the dev extra
        _unavailable("playwright is not installed: pip install -e '.[dev]'")
    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
