"""Resume reuses only verified releases of the very same step, and asks every other site."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedflow.cli import app
from fedflow.core.analysis import AnalysisRef
from fedflow.core.messages import Release
from flows import SiteStatus, connect
from flows.demo import ALL, DemoSite, compare_with_pooled, pool, pooled_answer
from flows.federated import CHECKPOINTS, run_analysis
from flows.resume import CheckpointStore
from flows.strategy import StepPolicy
from governance.audit import AuditLog
from tests.transports import wrap

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
SITES = [
    DemoSite(f"site-{c}", "EU", share, 5, ALL)
    for c, share in zip("abc", (0.5, 0.3, 0.2), strict=True)
]


def test_a_step_key_changes_with_everything_that_determines_the_answer() -> None:
    ref = AnalysisRef(name="glm_round", version="1.0", code_digest="sha256:" + "1" * 64)
    base: dict[str, Any] = {
        "flow": "glm",
        "analysis": ref,
        "params": {"formula": "y ~ x", "beta": [0.5], "fit_id": "a"},
        "dataset": "omop",
        "sites": ["s1", "s2"],
        "token": "t",
        "secure": None,
        "step": 2,
    }
    key = CheckpointStore.step_key(**base)
    assert CheckpointStore.step_key(**base | {"params": base["params"] | {"fit_id": "b"}}) == key
    assert CheckpointStore.step_key(**base | {"sites": ["s2", "s1"]}) == key
    changes = {
        "flow": "cox",
        "analysis": ref.model_copy(update={"version": "1.1"}),
        "params": base["params"] | {"beta": [0.5000001]},
        "dataset": "omop-2",
        "sites": ["s1", "s2", "s3"],
        "token": "another researcher",
        "secure": False,
        "step": 3,
    }
    other_code = ref.model_copy(update={"code_digest": "sha256:" + "2" * 64})
    keys = {CheckpointStore.step_key(**base | {k: v}) for k, v in changes.items()}
    keys.add(CheckpointStore.step_key(**base | {"analysis": other_code}))
    assert key not in keys and len(keys) == len(changes) + 1


def test_resume_reuses_verified_releases_and_asks_the_failed_and_the_tampered(
    make_federation: Any, prefect_server: str
) -> None:
    profile, parts = make_federation(SITES)
    fast = StepPolicy(max_retries=0, timeout=60)
    with connect(profile) as session:
        wrap(session, {"site-c": "down"})
        first = run_analysis(
            "cohort_count", GI_BLEED, federation=session, secure=False, policy=fast
        )
        assert first.sites_contributing == ["site-a", "site-b"]
        # Someone edits site-a's kept release: resume must not take it.
        _tamper(Path(profile).parent / "orchestrator" / CHECKPOINTS, "site-a")
        calls = wrap(session)
        again = run_analysis(
            "cohort_count", GI_BLEED, federation=session, secure=False, policy=fast, resume=True
        )
        by_site = {o.site: o for o in again.outcomes}
        assert by_site["site-b"].reused and by_site["site-b"].status is SiteStatus.RELEASED
        assert not by_site["site-a"].reused and not by_site["site-c"].reused
        assert {s for s, t in calls.items() if t.calls["submit"]} == {"site-a", "site-c"}
        assert calls["site-b"].calls["check"] == 0
        pooled = pooled_answer("cohort_count", GI_BLEED, pool(list(parts.values())))
        assert compare_with_pooled(again.result, pooled)["different"] == []
        # resume is opt-in: without it every site is asked
        calls = wrap(session)
        run_analysis("cohort_count", GI_BLEED, federation=session, secure=False, policy=fast)
        assert all(t.calls["submit"] == 1 for t in calls.values())
    with AuditLog(Path(profile).parent / "orchestrator" / "audit.db", site="o") as audit:
        refused = audit.entries(event="resume.refused")
        resumed = audit.entries(event="step.resumed")
    assert [e.details["site"] for e in refused] == ["site-a"]
    assert "receipt does not verify" in refused[0].details["why"]
    assert list(resumed[0].details["reused"]) == ["site-b"]
    assert resumed[0].details["asked"] == ["site-a", "site-c"]


def _tamper(db: Path, site: str) -> None:
    """Flip a byte of ``site``'s kept payload, leaving its receipt as it was."""
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT release FROM releases WHERE site = ?", (site,)).fetchone()
        release = Release.model_validate_json(text)
        assert release.partial is not None
        changed = bytearray(release.partial)
        changed[-8] ^= 0x01
        altered = release.model_copy(update={"partial": bytes(changed)})
        conn.execute(
            "UPDATE releases SET release = ? WHERE site = ?", (altered.model_dump_json(), site)
        )


pytestmark = pytest.mark.integration


def test_releases_show_and_prune_forget_old_releases_and_their_tokens(
    make_federation: Any, prefect_server: str
) -> None:
    profile, _ = make_federation(SITES)
    runner = CliRunner()
    fast = StepPolicy(max_retries=0, timeout=60)
    db = Path(profile).parent / "orchestrator" / CHECKPOINTS
    before_any = runner.invoke(app, ["releases", "show", "-f", str(profile), "--json"])
    assert before_any.exit_code == 0 and json.loads(before_any.stdout)["kept"] == []
    assert not db.exists()  # showing creates nothing
    with connect(profile) as session:
        token = session.token
        run_analysis("cohort_count", GI_BLEED, federation=session, secure=False, policy=fast)
    shown = runner.invoke(app, ["releases", "show", "-f", str(profile), "--json"])
    assert shown.exit_code == 0, shown.output
    kept = json.loads(shown.stdout)["kept"]
    assert [(k["analysis"], k["steps"], k["releases"]) for k in kept] == [("cohort_count", 1, 3)]
    assert token.encode() in db.read_bytes()
    # nothing is older than a day yet; once saved 40 days ago, a 30-day prune forgets it all
    fresh = runner.invoke(app, ["releases", "prune", "-f", str(profile), "--older-than", "1"])
    assert fresh.exit_code == 0 and "forgot 0 release(s)" in fresh.stdout, fresh.output
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE releases SET saved_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days')"
        )
    old = runner.invoke(app, ["releases", "prune", "-f", str(profile), "--older-than", "30"])
    assert old.exit_code == 0 and "forgot 3 release(s)" in old.stdout, old.output
    assert token.encode() not in db.read_bytes()  # overwritten and compacted, not just unlinked
    with connect(profile) as session:
        calls = wrap(session)
        again = run_analysis(
            "cohort_count", GI_BLEED, federation=session, secure=False, policy=fast, resume=True
        )
        assert not any(o.reused for o in again.outcomes)
        assert all(t.calls["submit"] == 1 for t in calls.values())
    with AuditLog(Path(profile).parent / "orchestrator" / "audit.db", site="o") as audit:
        pruned = audit.entries(event="resume.pruned")
    assert [e.details["releases"] for e in pruned] == [0, 3]
    assert pruned[0].actor == "operator"
    # A file that is not a release store is named, exit 2, and left as it was.
    db.write_bytes(b"not a database " * 100)
    broken = runner.invoke(app, ["releases", "prune", "-f", str(profile), "--older-than", "0"])
    assert broken.exit_code == 2
    assert f"{db} is not a readable release store: file is not a database" in broken.output
    assert db.read_bytes() == b"not a database " * 100
