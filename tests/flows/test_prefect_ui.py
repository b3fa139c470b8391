"""The Prefect UI, served by ``fedflow server start``'s server, shows a federated flow run and
its result artifact, in headless Chromium.

The server, the deployments and the finished run are the session fixture ``served_demo``
(``tests/served.py``), shared with ``test_deploy.py``.
On a failure the page's screenshot is written to the test's temporary folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from tests.served import ANALYSIS, ServedDemo, served_client

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

WAIT_MS = 60_000  # the UI is a JavaScript app; on a loaded machine it takes its time


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """A browser page; its screenshot is written to ``tmp_path`` when the test fails."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    try:
        yield page
    except BaseException:
        page.screenshot(path=str(tmp_path / "prefect-ui.png"), full_page=True)
        raise
    finally:
        page.close()


def test_the_ui_lists_the_federated_run_and_shows_its_result_artifact(
    served_demo: ServedDemo,
    page: Page,
) -> None:
    ui, run = served_demo.served.ui_url, served_demo.run
    key = f"{ANALYSIS.replace('_', '-')}-result"
    with served_client(served_demo) as client:
        (artifact,) = client.read_artifacts(  # this run's: other tests may run the analysis
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    persons = str(rows[0]["persons"])

    # The runs page lists the run (by its name, linking to its id: other tests' flows may run
    # the same analysis on this server) under its flow and deployment.
    page.goto(f"{ui}/runs")
    listed = page.locator(f'a[href*="/runs/flow-run/{run.id}"]', has_text=ANALYSIS).first
    listed.wait_for()
    for name in ("federated-analysis", "fedflow-demo"):  # its flow, its deployment (loaded later)
        page.get_by_text(name, exact=True).first.wait_for()

    # Its page has the result among its artifacts; the artifact's page shows the table.
    listed.click()
    page.wait_for_url(f"**/runs/flow-run/{run.id}**")
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text(key, exact=True).first.click()
    page.wait_for_url(f"**/artifacts/artifact/{artifact.id}")
    page.get_by_text(f"{ANALYSIS}@").first.wait_for()  # the artifact's description
    header = page.get_by_role("columnheader", name="persons", exact=True)
    header.wait_for()
    assert page.get_by_role("cell", name=persons, exact=True).count() >= 1
