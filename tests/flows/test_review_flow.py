"""Human review end to end: a flow waits while a site holds its result; the custodian decides.

Two in-process sites on Eunomia; ``site-0``'s policy holds every ``cohort_count`` result for
review. The custodian works through the ``fedflow airlock`` command in another thread, on the
site's own state folder, while the flow waits in ``gate_after``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from fedflow.cli.airlock import app
from flows import QuorumNotMet, SiteStatus, connect, run_analysis
from flows.demo import ALL, DemoSite, pooled_answer
from governance.audit import AuditLog

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
JOB = re.compile(r"\b[0-9a-f]{32}\b")
runner = CliRunner()


@pytest.fixture
def federation(make_federation) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """(profile, site-0's site.yaml): open sites (exact results), site-0 reviews counts."""
    sites = [DemoSite(f"site-{i}", "EU", s, 1, ALL, True) for i, s in enumerate((0.6, 0.4))]
    profile, _ = make_federation(sites)
    home = profile.parent / "sites" / "site-0"
    policy = yaml.safe_load((home / "policy.yaml").read_text())
    policy["review"] = {"analyses": ["cohort_count"]}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy))
    return profile, home / "site.yaml"


def airlock(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [args[0], "--config", str(config), *args[1:]])
    return result.exit_code, result.output


def custodian(config: Path, decide: Callable[[str], None]) -> tuple[threading.Thread, list[Any]]:
    """A thread that waits for a held result in ``list``, shows it, then calls ``decide``."""
    seen: list[Any] = []

    def work() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                code, out = airlock(config, "list")
                assert code == 0, out
                found = JOB.findall(out)
                if found:
                    break
                time.sleep(0.2)
            (job_id,) = found
            code, shown = airlock(config, "show", job_id)
            assert code == 0, shown
            seen.append((job_id, shown))
            decide(job_id)
        except BaseException as exc:  # reported by the test's main thread
            seen.append(exc)

    thread = threading.Thread(target=work, name="custodian")
    thread.start()
    return thread, seen


def site_audit(config: Path) -> AuditLog:
    return AuditLog(config.parent / "state" / "audit.db", site="site-0")


def test_an_approved_result_completes_the_waiting_flow(federation, eunomia, prefect_server):  # type: ignore[no-untyped-def]
    profile, config = federation

    def approve(job_id: str) -> None:
        code, out = airlock(config, "approve", job_id, "--reviewer", "carol")
        assert code == 0 and "approved by carol" in out, out

    thread, seen = custodian(config, approve)
    with connect(profile) as session:
        result = run_analysis("cohort_count", GI_BLEED, federation=session, review_timeout=60)
    thread.join(10)
    assert not [e for e in seen if isinstance(e, BaseException)], seen
    ((job_id, shown),) = seen
    assert "cohort_count" in shown and "would be released" in shown
    assert "alice@uni.example" in shown and "count" in shown

    site0 = result.outcomes[0]
    assert (site0.site, site0.status, site0.stage) == ("site-0", SiteStatus.RELEASED, "review")
    assert site0.job_id == job_id and "review" in site0.digests
    assert "approved by the reviewer of site site-0" in site0.reasons[-1]
    assert result.sites_contributing == ["site-0", "site-1"]
    assert result.result.equals(pl.from_arrow(pooled_answer("cohort_count", GI_BLEED, eunomia)))

    log = site_audit(config)
    try:
        (held,) = log.entries(event="airlock.review")
        (approved,) = log.entries(event="review.approved")
        (released,) = log.entries(event="airlock.released")
        assert held.details["job_id"] == approved.details["job_id"] == job_id
        assert approved.actor == "carol"
        assert released.details["review"]["reviewer"] == "carol"
        assert released.details["digests"]["review"] == approved.details["decision_digest"]
        assert log.verify().ok
    finally:
        log.close()


def test_a_rejected_result_ends_the_step_with_the_reason(federation, prefect_server):  # type: ignore[no-untyped-def]
    profile, config = federation

    def reject(job_id: str) -> None:
        code, out = airlock(config, "reject", job_id, "--reviewer", "carol")
        assert code == 2 and "needs a reason" in out, out
        code, out = airlock(config, "reject", job_id, "--reason", "too close to last week's")
        assert code == 0 and "rejected" in out, out

    thread, seen = custodian(config, reject)
    with connect(profile) as session, pytest.raises(QuorumNotMet) as caught:
        run_analysis("cohort_count", GI_BLEED, federation=session, min_sites=2, review_timeout=60)
    thread.join(10)
    assert not [e for e in seen if isinstance(e, BaseException)], seen
    ((job_id, _),) = seen
    site0, site1 = caught.value.outcomes
    assert (site0.status, site0.stage) == (SiteStatus.REFUSED, "review")
    assert site0.reasons == ("rejected by the reviewer of site site-0: too close to last week's",)
    assert site1.status is SiteStatus.RELEASED

    # A decision is final; unknown jobs are refused; both are audited.
    code, out = airlock(config, "approve", job_id, "--reviewer", "dave")
    assert code == 2 and "already rejected" in out, out
    code, out = airlock(config, "approve", "0" * 32, "--reviewer", "dave")
    assert code == 2 and "no result of job" in out, out
    log = site_audit(config)
    try:
        errors = [e.details["error"] for e in log.entries(event="review.refused")]
        assert errors == ["ReviewInvalid", "ReviewAlreadyDecided", "ReviewNotFound"]
        (refused,) = log.entries(event="airlock.refused")
        assert refused.details["review"]["state"] == "rejected"
    finally:
        log.close()


def test_an_undecided_result_times_out_by_name_and_quorum_decides(  # type: ignore[no-untyped-def]
    federation, eunomia, tmp_path, prefect_server
):
    profile, config = federation
    with connect(profile) as session:
        result = run_analysis("cohort_count", GI_BLEED, federation=session, review_timeout=1.0)
        site0, site1 = result.outcomes
        assert (site0.status, site0.stage) == (SiteStatus.REVIEW_PENDING, "review")
        assert site1.status is SiteStatus.RELEASED
        assert "site site-0 still holds the result" in site0.reasons[0]
        assert result.sites_contributing == ["site-1"]
        with pytest.raises(QuorumNotMet) as caught:
            run_analysis(
                "cohort_count", GI_BLEED, federation=session, min_sites=2, review_timeout=0.5
            )
    assert caught.value.outcomes[0].status is SiteStatus.REVIEW_PENDING

    # The custodian exports the queue for SACRO: both held results, pending.
    out = tmp_path / "sacro" / "results.json"
    code, text = airlock(config, "export", "--out", str(out))
    assert code == 0 and "2 output(s)" in text, text
    document = json.loads(out.read_text())
    assert [o["status"] for o in document["results"].values()] == ["review", "review"]
    for uid, output in document["results"].items():
        assert output["uid"] == uid and output["type"] == "frequency"
        assert output["properties"]["analysis"].startswith("cohort_count@")
        assert (out.parent / output["files"][0]["name"]).exists()
