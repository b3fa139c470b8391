"""The review queue: the policy section, holding results, decisions (final, audited)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from fedflow.core import digest_bytes, to_ipc
from governance.audit import AuditLog
from governance.errors import (
    PolicyInvalid,
    ReviewAlreadyDecided,
    ReviewInvalid,
    ReviewNotFound,
)
from governance.policy import SitePolicy
from governance.review import ReviewItem, ReviewPolicy, ReviewQueue, ReviewState, decide_review

TABLE = pa.table({"gender": ["F", "M", "*"], "count": pa.array([12, None, 30], pa.int64())})


def held(job_id: str = "job1", table: pa.Table = TABLE) -> ReviewItem:
    payload = to_ipc(table)
    return ReviewItem(
        job_id=job_id,
        site="site-a",
        request_id=f"req-{job_id}",
        analysis="cohort_count@1.0",
        output_kind="frequency",
        dataset="omop",
        project="gibleed",
        researcher="alice@uni.example",
        purpose="research",
        outcome="released_with_suppression",
        suppressed_cells=1,
        reasons=("1 cells below the threshold of 10 suppressed",),
        result=payload,
        result_digest=digest_bytes(payload),
        created_at="2026-11-28T10:00:00+00:00",
    )


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    queue = ReviewQueue(tmp_path / "review.db")
    audit = AuditLog(tmp_path / "audit.db", site="site-a")
    yield queue, audit, tmp_path
    queue.close()
    audit.close()


def test_the_policy_section_defaults_to_no_review_and_is_validated() -> None:
    assert not SitePolicy().review.applies("cohort_count", "frequency")
    rule = SitePolicy.parse(
        {"review": {"analyses": ["numeric_summary"], "output_kinds": ["regression"]}}
    ).review
    assert rule.applies("numeric_summary", "summary")
    assert rule.applies("glm_round", "regression")
    assert not rule.applies("cohort_count", "frequency")
    assert ReviewPolicy(always=True).applies("cohort_count", "frequency")
    with pytest.raises(PolicyInvalid, match="review"):
        SitePolicy.parse({"review": {"output_kinds": ["pie"]}})
    with pytest.raises(PolicyInvalid, match="review"):
        SitePolicy.parse({"review": {"sometimes": True}})


def test_a_held_result_is_kept_once_and_survives_reopening(site) -> None:  # type: ignore[no-untyped-def]
    queue, _, folder = site
    item, created = queue.hold(held())
    assert created and item.state is ReviewState.PENDING
    again, created = queue.hold(held())
    assert not created and again == item
    queue.close()
    reopened = ReviewQueue(folder / "review.db")
    try:
        (back,) = reopened.items(ReviewState.PENDING)
        assert back == item and back.table().equals(TABLE)
    finally:
        reopened.close()


def test_a_held_result_must_match_its_digest(site) -> None:  # type: ignore[no-untyped-def]
    queue, _, _ = site
    forged = held()
    forged = ReviewItem(**{**forged.__dict__, "result_digest": "sha256:" + "0" * 64})
    with pytest.raises(ReviewInvalid, match="digest"):
        queue.hold(forged)


def test_approval_is_final_and_audited(site) -> None:  # type: ignore[no-untyped-def]
    queue, audit, _ = site
    queue.hold(held())
    decided = decide_review(queue, audit, "job1", approve=True, reviewer="carol")
    assert decided.state is ReviewState.APPROVED and decided.reviewer == "carol"
    assert queue.get("job1") == decided
    (entry,) = audit.entries(event="review.approved")
    assert entry.actor == "carol" and entry.request_id == "req-job1"
    assert entry.details["decision_digest"] == decided.decision_digest()
    with pytest.raises(ReviewAlreadyDecided, match="already approved by carol"):
        decide_review(queue, audit, "job1", approve=False, reviewer="dave", reason="changed mind")
    assert queue.get("job1") == decided
    (refused,) = audit.entries(event="review.refused")
    assert refused.details == {
        "job_id": "job1",
        "action": "reject",
        "error": "ReviewAlreadyDecided",
    }
    assert audit.verify().ok


def test_rejection_needs_a_reason_and_a_reviewer(site) -> None:  # type: ignore[no-untyped-def]
    queue, audit, _ = site
    queue.hold(held())
    with pytest.raises(ReviewInvalid, match="needs a reason"):
        decide_review(queue, audit, "job1", approve=False, reviewer="carol", reason="  ")
    with pytest.raises(ReviewInvalid, match="reviewer"):
        decide_review(queue, audit, "job1", approve=True, reviewer=" ")
    assert queue.get("job1").state is ReviewState.PENDING
    decided = decide_review(
        queue, audit, "job1", approve=False, reviewer="carol", reason="small cells by sex"
    )
    assert decided.state is ReviewState.REJECTED and decided.reason == "small cells by sex"
    assert [e.details["error"] for e in audit.entries(event="review.refused")] == [
        "ReviewInvalid",
        "ReviewInvalid",
    ]
    (entry,) = audit.entries(event="review.rejected")
    assert entry.details["reason"] == "small cells by sex"


def test_an_unknown_job_is_refused_and_audited(site) -> None:  # type: ignore[no-untyped-def]
    queue, audit, _ = site
    with pytest.raises(ReviewNotFound, match="nope"):
        decide_review(queue, audit, "nope", approve=True, reviewer="carol")
    (entry,) = audit.entries(event="review.refused")
    assert entry.details["job_id"] == "nope" and entry.details["error"] == "ReviewNotFound"
