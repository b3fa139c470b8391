"""A site node restarted on the same state folder loses no quarantined job or audit entry, and
its custodian can prune the old finished ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from executors import JobNotFound, SiteNode
from fedflow.cli.site import app as site_app
from fedflow.core.messages import JobState, Request
from fedflow.core.registry import default_registry
from flows.demo import DemoSite
from governance.receipts import verify_release
from tests.one_site import one_site
from tests.quarantined import age

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}


def test_jobs_survive_a_restart_and_interrupted_ones_are_marked_failed(
    tmp_path: Path,
    eunomia,  # type: ignore[no-untyped-def]
) -> None:
    spec = DemoSite("restart-site", "EU", 1.0, 10, ("cohort_count",))
    config, token = one_site(tmp_path, eunomia, spec)

    def request() -> Request:
        ref = default_registry().get("cohort_count").ref()
        return Request(analysis=ref, params=GI_BLEED, dataset="omop", token=token)

    with SiteNode(config) as node:
        quarantined, released = node.submit(request()), node.submit(request())
        assert node.wait(quarantined, 60).state is JobState.QUARANTINED
        assert node.wait(released, 60).state is JobState.QUARANTINED
        first = node.release(released)
        pinned = node.receipt_key.public_pem
    # a job a crashed process left running: its metadata says running, it has no partial
    folder = config.state_dir / "quarantine"
    meta = json.loads((folder / f"{quarantined}.json").read_text())
    (folder / "crashed.json").write_text(
        json.dumps({**meta, "job_id": "crashed", "state": "running"})
    )

    with SiteNode(config) as node:
        assert node.receipt_key.public_pem == pinned
        assert node.status(quarantined).state is JobState.QUARANTINED
        verify_release(node.release(quarantined), pinned, site=spec.name)
        again = node.release(released)
        assert again == first  # the same release and the same signed receipt
        crashed = node.status("crashed")
        assert (crashed.state, crashed.error) == (JobState.FAILED, "interrupted")
        events = [e.event for e in node.audit.entries()]
        assert events.count("site.stopped") == 1 and events.count("site.started") == 2
        assert node.audit.entries(request_id=meta["request"]["request_id"], event="job.failed")
        started = node.audit.entries(event="site.started")[-1].details
        # read back: the open jobs (the quarantined one and the crashed one), not the released
        assert (started["jobs_restored"], started["jobs_interrupted"]) == (2, 1)
        stopped = node.audit.entries(event="site.stopped")[-1].details  # the first run's stop
        assert stopped == {"jobs_finished": 0, "jobs_open": 1}
        assert node.audit.verify().ok

    # The custodian prunes finished jobs older than 30 days: only the first run's release goes.
    age(folder / "finished", released, 40)
    site_yaml = tmp_path / "sites" / spec.name / "site.yaml"
    command = ["prune-jobs", "-c", str(site_yaml), "--older-than", "30"]
    pruned = CliRunner().invoke(site_app, command)
    assert pruned.exit_code == 0 and pruned.output.startswith("deleted 1 finished job(s)")
    with SiteNode(config) as node:
        with pytest.raises(JobNotFound):
            node.release(released)
        verify_release(node.release(quarantined), pinned, site=spec.name)
        assert node.status("crashed").state is JobState.FAILED
        assert node.audit.entries(event="quarantine.pruned")[-1].details["jobs"] == 1
        assert node.audit.verify().ok
