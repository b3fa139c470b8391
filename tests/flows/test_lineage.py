"""Lineage and signed checkpoints on a real federation (Eunomia split over two in-process sites).

One module-scoped federation runs two analyses through the Prefect flow: the second with one
site's checkpoints forged on the way to the orchestrator. Lineage is then read back from the
audit logs, and the sites' logs are checked against the checkpoints the orchestrator kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from executors import InProcessSiteTransport, SiteConfig
from fedflow.cli import app
from fedflow.core import digest_bytes, digest_json, to_ipc
from flows import FederatedResult, LineageNotFound, SiteStatus, connect, read_lineage, run_analysis
from flows.demo import ALL, DemoSite, build_demo, split_by_person
from governance.audit import AuditLog
from governance.checkpoints import Checkpoint
from governance.receipts import ReceiptKey
from tests.forgery import rewrite_log

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
SITES = (
    DemoSite("site-a", "EU", 0.6, 1, ALL, release_extremes=True),
    DemoSite("site-b", "UK", 0.4, 1, ("cohort_count",)),
)
runner = CliRunner()


class _Forging(InProcessSiteTransport):
    """A site (or a man in the middle) that hands the orchestrator a doctored checkpoint."""

    def checkpoint(self, nonce: str | None = None) -> Checkpoint:
        genuine = super().checkpoint(nonce)
        return genuine.model_copy(update={"seq": genuine.seq - 3})


@dataclass
class Ran:
    profile: Path
    count: FederatedResult
    summary: FederatedResult

    def site_db(self, site: str) -> Path:
        config = SiteConfig.load(self.profile.parent / "sites" / site / "site.yaml")
        return config.state_dir / "audit.db"

    @property
    def orchestrator_db(self) -> Path:
        return self.profile.parent / "orchestrator" / "audit.db"


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, eunomia, prefect_server) -> Ran:  # type: ignore[no-untyped-def]
    parts = split_by_person(eunomia, [s.share for s in SITES], seed=3)
    profile = build_demo(tmp_path_factory.mktemp("lineage"), parts, sites=SITES)
    with connect(profile) as federation:
        count = run_analysis("cohort_count", GI_BLEED, federation=federation)
        honest = federation.transports["site-b"]
        assert isinstance(honest, InProcessSiteTransport)
        federation.transports["site-b"] = _Forging(honest.node)
        try:
            summary = run_analysis(
                "numeric_summary",
                {"table": "person", "column": "year_of_birth"},
                federation=federation,
            )
        finally:
            federation.transports["site-b"] = honest
    return Ran(profile, count, summary)


def test_lineage_shows_how_the_result_came_to_be(ran: Ran) -> None:
    result = ran.count
    lineage = read_lineage(result.request_id, ran.profile)
    assert lineage.audit_ok and len(lineage.requests) == 1
    request = lineage.requests[0]
    assert request.request_id == result.request_id and request.flow_run_id
    assert request.analysis == str(result.analysis)
    assert request.code_digest == result.analysis.code_digest
    assert request.params_digest == digest_json(result.params)
    # the result digest is the digest of the table the flow returned
    assert request.result is not None
    assert request.result["result_digest"] == result.result_digest
    assert digest_bytes(to_ipc(result.result.to_arrow())) == result.result_digest
    outcomes = {o.site: o for o in result.outcomes}
    for site in request.sites:
        assert site.receipt_verified is True and site.receipt_problem == ""
        assert site.digests == outcomes[site.site].digests  # what the receipt signs
        assert site.job_id == outcomes[site.site].job_id
        assert site.decision is not None and site.decision["verdict"] == "allow"
        assert site.decision["policy_digest"] == site.digests["policy"]
        assert site.checkpoint_status == "verified" and site.site_log == "ok"
        events = [e["event"] for e in site.site_events]
        assert "gate.allowed" in events and "airlock.released" in events
    # the same lineage by the Prefect flow run id
    by_run = read_lineage(str(request.flow_run_id), ran.profile)
    assert [r.request_id for r in by_run.requests] == [result.request_id]


def test_lineage_of_a_refusal_and_a_forged_checkpoint(ran: Ran) -> None:
    lineage = read_lineage(ran.summary.request_id, ran.profile)
    sites = {s.site: s for s in lineage.requests[0].sites}
    refused = sites["site-b"]
    assert refused.outcome == SiteStatus.REFUSED.value and refused.stage == "gate_before"
    assert refused.reasons == ["analysis numeric_summary is not allowed at this site"]
    assert refused.decision is not None and refused.decision["verdict"] == "deny"
    assert refused.receipt_verified is None  # it never reached its airlock
    # the forged checkpoint was refused by the orchestrator, audited, and not kept
    assert refused.checkpoint_status == "refused" and refused.checkpoint is None
    with AuditLog(ran.orchestrator_db, site="orchestrator") as audit:
        entries = audit.entries(request_id=ran.summary.request_id)
    refusals = [e for e in entries if e.event == "site.checkpoint_refused"]
    assert [(e.actor, e.details["reason"]) for e in refusals] == [("site-b", "bad_signature")]
    kept = [e.actor for e in entries if e.event == "site.checkpoint"]
    assert kept == ["site-a"]
    assert sites["site-a"].checkpoint_status == "verified"


def test_fedflow_lineage_prints_a_table_json_and_refuses_unknown_ids(ran: Ran) -> None:
    rid = ran.count.request_id
    table = runner.invoke(app, ["lineage", rid, "-f", str(ran.profile)])
    assert table.exit_code == 0, table.output
    assert rid in table.stdout and "site-a" in table.stdout and "verified" in table.stdout
    assert ran.count.result_digest in table.stdout
    as_json = runner.invoke(app, ["lineage", rid, "-f", str(ran.profile), "--json"])
    assert as_json.exit_code == 0
    document = json.loads(as_json.stdout)
    assert document == json.loads(json.dumps(asdict(read_lineage(rid, ran.profile)), default=str))
    unknown = runner.invoke(app, ["lineage", "no-such-request", "-f", str(ran.profile)])
    assert unknown.exit_code == 2
    assert "no request or flow run 'no-such-request'" in unknown.stderr
    with pytest.raises(LineageNotFound):
        read_lineage("no-such-request", ran.profile)


def test_audit_verify_against_checkpoints_detects_a_complete_rewrite(
    ran: Ran, tmp_path: Path
) -> None:
    site_db = ran.site_db("site-a")
    pem = tmp_path / "site-a.receipt.pub.pem"
    key_path = SiteConfig.load(ran.profile.parent / "sites" / "site-a" / "site.yaml").state_dir
    pem.write_bytes(ReceiptKey.load_or_create(key_path / "receipt.key.pem").public_pem)
    against = ["--checkpoints", str(ran.orchestrator_db), "--site", "site-a"]
    untouched = runner.invoke(app, ["audit", "verify", str(site_db), *against])
    assert untouched.exit_code == 0, untouched.output
    assert "OK: all 2 checkpoints of site-a are in the chain" in untouched.stdout
    signed = runner.invoke(
        app, ["audit", "verify", str(site_db), *against, "--receipt-key", str(pem)]
    )
    assert signed.exit_code == 0 and "signatures re-checked" in signed.stdout

    # Rewrite site-a's log, editing its pre-gate decision on the second request.
    with AuditLog(site_db, site="") as log:
        target = log.entries(request_id=ran.summary.request_id, event="gate.allowed")[0].seq
    forged = tmp_path / "rewritten.db"
    rewrite_log(site_db, forged, alter_seq=target, change={"reasons": ["edited"]})
    alone = runner.invoke(app, ["audit", "verify", str(forged)])
    assert alone.exit_code == 0 and alone.stdout.startswith("OK:")  # a perfect chain
    caught = runner.invoke(app, ["audit", "verify", str(forged), *against])
    assert caught.exit_code == 1
    assert "FAILED: 1 of 2 checkpoints of site-a do not hold" in caught.stdout
    assert f"request {ran.summary.request_id}): rewritten" in caught.stdout
    assert ran.count.request_id not in caught.stdout  # the earlier checkpoint still holds
    # and lineage, pointed at the rewritten log, says so
    lineage = read_lineage(ran.summary.request_id, ran.profile, site_logs={"site-a": forged})
    assert {s.site: s.site_log for s in lineage.requests[0].sites}["site-a"] == "rewritten"


def test_audit_verify_against_checkpoints_needs_a_site(ran: Ran) -> None:
    db = str(ran.site_db("site-b"))
    missing = runner.invoke(app, ["audit", "verify", db, "--checkpoints", str(ran.orchestrator_db)])
    assert missing.exit_code == 2
    # site-b's one kept checkpoint (the forged one was refused) holds against its log
    ok = runner.invoke(
        app, ["audit", "verify", db, "--checkpoints", str(ran.orchestrator_db), "--site", "site-b"]
    )
    assert ok.exit_code == 0 and "OK: all 1 checkpoints of site-b" in ok.stdout
