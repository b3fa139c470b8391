"""The review queue's SACRO export: ACRO's results.json field names, statuses and files."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from fedflow.core import digest_bytes, to_ipc
from governance.review import ReviewItem, ReviewState
from governance.sacro import ACRO_RESULTS_VERSION, write_results_json

TABLE = pa.table({"gender": ["F", "M", "*"], "count": pa.array([12, None, 30], pa.int64())})

# The fields ACRO 1.0.2 writes per output in results.json (acro/record.py, finalise_json).
ACRO_OUTPUT_FIELDS = {
    "uid",
    "status",
    "type",
    "properties",
    "files",
    "outcome",
    "command",
    "summary",
    "timestamp",
    "comments",
    "exception",
    "fair",
}


def held(job_id: str) -> ReviewItem:
    payload = to_ipc(TABLE)
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


def test_export_follows_acro_results_json(tmp_path: Path) -> None:
    pending = held("job1")
    approved = replace(
        held("job2"),
        state=ReviewState.APPROVED,
        reviewer="carol",
        decided_at="2026-11-28T11:00:00+00:00",
    )
    rejected = replace(
        held("job3"),
        state=ReviewState.REJECTED,
        reviewer="carol",
        reason="small cells by sex",
        decided_at="2026-11-28T11:05:00+00:00",
    )
    out = write_results_json(
        [pending, approved, rejected], tmp_path / "out" / "results.json", site="site-a"
    )
    document = json.loads(out.read_text())
    assert document["version"] == ACRO_RESULTS_VERSION
    assert document["tool"]["name"] == "fedflow"
    results = document["results"]
    assert list(results) == ["job1", "job2", "job3"]
    assert {k: v["status"] for k, v in results.items()} == {
        "job1": "review",
        "job2": "pass",
        "job3": "fail",
    }
    for uid, output in results.items():
        assert set(output) == ACRO_OUTPUT_FIELDS
        assert output["uid"] == uid and output["type"] == "frequency"
        assert output["properties"]["researcher"] == "alice@uni.example"
        assert output["exception"] == "" and isinstance(output["comments"], list)
        (file,) = output["files"]
        assert set(file) == {"name", "sdc"} and file["sdc"]["summary"]["suppressed"] is True
        with (out.parent / file["name"]).open() as handle:
            rows = list(csv.DictReader(handle))
        assert [r["gender"] for r in rows] == TABLE["gender"].to_pylist()
        assert [r["count"] for r in rows] == ["12", "", "30"]  # the suppressed cell stays empty
        assert output["outcome"]["count"] == {"0": "ok", "1": "suppressed", "2": "ok"}
    assert results["job3"]["comments"][-1].endswith("small cells by sex")
    assert "rejected by carol" in results["job3"]["comments"][-1]
    assert results["job1"]["summary"] == "review; suppressed: 1 cells"
