"""The site node's gates on real data: every refusal has a reason and is audited."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from executors import JobNotFound, RequestRefused, SiteConfig, SiteError, SiteNode
from fedflow.core import InvalidParameters, UnknownAnalysis, to_ipc
from fedflow.core.analysis import AnalysisRef
from fedflow.core.messages import (
    JobState,
    MaskMember,
    MaskSpec,
    ReleaseOutcome,
    Request,
    Verdict,
)
from fedflow.core.registry import AnalysisRegistry, default_registry
from flows.analyses.cohort_count import CohortCount
from flows.demo import ALL, FEDERATION, ISSUER, DemoSite, build_demo
from governance.identity import IssuerKey, issue_token
from governance.policy import SitePolicy
from tests.one_site import one_site

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}


@pytest.fixture
def site(tmp_path: Path, eunomia):  # type: ignore[no-untyped-def]
    """One site holding all of Eunomia, allowing cohort_count and characterization only."""
    spec = DemoSite("test-site", "EU", 1.0, 10, ("cohort_count", "characterization"))
    config, token = one_site(tmp_path, eunomia, spec)
    with SiteNode(config) as node:
        node.token = token  # type: ignore[attr-defined]
        node.root = tmp_path  # type: ignore[attr-defined]
        yield node


def request(
    node: SiteNode, analysis: str, params: dict, *, token: str | None = None, **kw
) -> Request:  # type: ignore[type-arg]
    return Request(
        analysis=kw.pop("ref", None) or default_registry().get(analysis).ref(),
        params=params,
        dataset=kw.pop("dataset", "omop"),
        token=token or node.token,  # type: ignore[attr-defined]
    )


def events(node: SiteNode, request_id: str) -> list[str]:
    return [e.event for e in node.audit.entries(request_id=request_id)]


def test_allowed_request_runs_into_quarantine_and_is_released(site):
    req = request(site, "cohort_count", GI_BLEED)
    decision = site.check(req)
    assert decision.verdict is Verdict.ALLOW
    assert "analysis cohort_count@1.0 is allowed" in decision.reasons
    assert decision.rules and decision.policy_digest == site.policy.digest
    job = site.submit(req)
    assert site.wait(job, 60).state is JobState.QUARANTINED
    release = site.release(job)
    assert release.outcome is ReleaseOutcome.RELEASED
    assert release.table().to_pylist() == [{"count": 479}]
    assert set(release.digests) == {"request", "decision", "policy", "dataset", "code", "result"}
    assert site.release(job) == release  # idempotent
    assert events(site, req.request_id) == [
        "request.received",
        "gate.allowed",
        "request.received",
        "gate.allowed",
        "job.started",
        "job.quarantined",
        "airlock.released",
    ]
    assert site.audit.verify().ok


def test_refused_analysis_is_refused_with_its_reason_and_audited(site):
    req = request(site, "numeric_summary", {"table": "person", "column": "year_of_birth"})
    decision = site.check(req)
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == ("analysis numeric_summary is not allowed at this site",)
    # The orchestrator cannot skip the gate: the site re-checks when asked to run.
    with pytest.raises(RequestRefused) as refused:
        site.submit(req)
    assert refused.value.reasons == decision.reasons
    assert events(site, req.request_id) == [
        "request.received",
        "gate.denied",
        "request.received",
        "gate.denied",
    ]
    denied = site.audit.entries(request_id=req.request_id, event="gate.denied")[-1]
    assert denied.details["step"] == "submit"
    assert denied.details["reasons"] == list(decision.reasons)


@pytest.mark.parametrize("case", ["forged", "expired", "wrong_audience", "garbage"])
def test_bad_tokens_are_refused_and_audited(site, case):
    key = IssuerKey.load(site.root / "issuer" / "demo-issuer.key.pem", ISSUER)
    claims = {"researcher": "mallory", "project": "gibleed-study", "purpose": "x"}
    token = {
        "forged": lambda: issue_token(IssuerKey.generate(ISSUER), audience=FEDERATION, **claims),
        "expired": lambda: issue_token(
            key,
            audience=FEDERATION,
            now=datetime.now(UTC) - timedelta(hours=3),
            ttl=timedelta(hours=1),
            **claims,
        ),
        "wrong_audience": lambda: issue_token(key, audience="another-federation", **claims),
        "garbage": lambda: "not.a.token",
    }[case]()
    req = request(site, "cohort_count", GI_BLEED, token=token)
    decision = site.check(req)
    assert decision.verdict is Verdict.DENY
    expected = {
        "forged": "bad_signature",
        "expired": "expired",
        "wrong_audience": "wrong_audience",
        "garbage": "malformed",
    }[case]
    assert decision.reasons == (f"token rejected: {expected}",)
    with pytest.raises(RequestRefused):
        site.submit(req)
    assert "gate.denied" in events(site, req.request_id)
    assert token not in str(site.audit.entries(request_id=req.request_id))


def test_unknown_analysis_and_malformed_parameters_get_clear_errors(site):
    unknown = request(
        site,
        "x",
        {},
        ref=AnalysisRef(name="no_such_analysis", version="1.0", code_digest="sha256:0"),
    )
    with pytest.raises(UnknownAnalysis, match="unknown analysis 'no_such_analysis'"):
        site.check(unknown)
    assert events(site, unknown.request_id) == ["request.received", "request.invalid"]

    bad = request(
        site, "cohort_count", {"domain": "condition", "concept_ids": "secret-value-123", "bogus": 1}
    )
    with pytest.raises(InvalidParameters) as raised:
        site.check(bad)
    message = str(raised.value)
    assert "concept_ids" in message and "bogus" in message
    assert "secret-value-123" not in message  # errors never echo the values
    invalid = site.audit.entries(request_id=bad.request_id, event="request.invalid")
    assert invalid and "secret-value-123" not in str(invalid[0].details)


def test_code_digest_mismatch_and_unlisted_columns_are_denied(site):
    ref = default_registry().get("cohort_count").ref()
    stale = request(
        site, "cohort_count", GI_BLEED, ref=ref.model_copy(update={"code_digest": "sha256:00"})
    )
    assert "differs from the code this site runs" in site.check(stale).reasons[0]

    # drug_exposure.days_supply is allowed, but quantity is not in the site's column list.
    decision = site.check(
        request(site, "cohort_count", {"domain": "procedure", "concept_ids": [1]})
    )
    assert decision.verdict is Verdict.ALLOW
    wide = request(site, "characterization", {"domain": "measurement", "concept_ids": [3006322]})
    denied = site.check(wide)
    assert denied.verdict is Verdict.DENY
    assert denied.reasons == ("not allowed to read table measurement",)


class Exploding(CohortCount):
    """An analysis whose local step fails with a message holding a (pretend) row value."""

    name = "exploding"
    version = "1.0"

    def local(self, tables, params):  # type: ignore[no-untyped-def]
        raise ValueError("row value 1234567 leaked into an error")


def test_a_failing_analysis_fails_its_job_without_leaking_values(tmp_path: Path, eunomia):
    spec = DemoSite("fail-site", "EU", 1.0, 10, ("cohort_count",))
    config, token = one_site(tmp_path, eunomia, spec)
    policy = config.policy
    policy.write_text(policy.read_text().replace("- name: cohort_count", "- name: exploding"))
    registry = AnalysisRegistry((Exploding,))
    with SiteNode(config, registry=registry) as node:
        with pytest.raises(JobNotFound):
            node.release("no-such-job")
        req = Request(analysis=Exploding.ref(), params=GI_BLEED, dataset="omop", token=token)
        job = node.submit(req)
        status = node.wait(job, 60)
        assert status.state is JobState.FAILED
        assert status.error == "analysis failed: ValueError"
        with pytest.raises(SiteError, match="failed, not quarantined"):
            node.release(job)
        failed = node.audit.entries(request_id=req.request_id, event="job.failed")
        assert failed and "1234567" not in str(failed[0].details)


def test_released_payloads_hold_no_person_ids_or_birth_dates(tmp_path: Path, eunomia):
    """With the most permissive policy, nothing released is a person id or a birth date."""
    offset = 987_654_321_000
    remapped = {
        name: t.set_column(
            t.schema.get_field_index("person_id"),
            "person_id",
            pc.add(pc.multiply(t["person_id"], 1_000_003), offset),
        )
        if "person_id" in t.column_names
        else t
        for name, t in eunomia.items()
    }
    spec = DemoSite("open-site", "EU", 1.0, 1, ALL, release_extremes=True)
    build_demo(tmp_path, [remapped], sites=[spec])
    person = remapped["person"]
    ids = set(person["person_id"].to_pylist())
    births = {str(d) for d in person["birth_datetime"].to_pylist() if d is not None}
    assert len(births) > 1000
    token = (tmp_path / "researcher.token").read_text().strip()
    runs = [
        ("cohort_count", GI_BLEED),
        ("characterization", {**GI_BLEED, "age_band_width": 1}),
        ("numeric_summary", {"table": "person", "column": "year_of_birth"}),
        ("numeric_summary", {"table": "drug_exposure", "column": "days_supply"}),
    ]
    with SiteNode(SiteConfig.load(tmp_path / "sites" / "open-site" / "site.yaml")) as node:
        for name, params in runs:
            req = Request(
                analysis=default_registry().get(name).ref(),
                params=params,
                dataset="omop",
                token=token,
            )
            job = node.submit(req)
            assert node.wait(job, 60).state is JobState.QUARANTINED
            release = node.release(job)
            table = release.table()
            values = _flatten(table.to_pylist())
            assert not ids & {v for v in values if isinstance(v, int | float)}
            assert not any(str(v) in births for v in values)
            raw = to_ipc(table)
            assert not any(b.encode() in raw for b in births)
            assert "person_id" not in table.column_names


def test_identifier_columns_cannot_be_summarised(site):
    with pytest.raises(InvalidParameters, match="identifier"):
        site.check(request(site, "numeric_summary", {"table": "person", "column": "person_id"}))


def _flatten(value: object) -> list[object]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _gates(node: SiteNode, request_id: str) -> list[tuple[str, str, object]]:
    return [
        (e.event, e.details["step"], e.details.get("decided_at"))
        for e in node.audit.entries(request_id=request_id)
        if e.event.startswith("gate.")
    ]


def test_submit_reuses_only_the_decision_check_made_on_the_same_request(site):
    checked = request(site, "cohort_count", GI_BLEED)
    assert site.check(checked).allowed
    site.submit(checked)
    assert _gates(site, checked.request_id) == [
        ("gate.allowed", "check", None),
        ("gate.allowed", "submit", "check"),
    ]
    # The mask group the orchestrator adds once it knows which sites allowed is not decided on.
    masked = request(site, "cohort_count", GI_BLEED)
    assert site.check(masked).allowed
    group = MaskSpec(
        group=(
            MaskMember(site="other-site", public_key="A" * 43 + "="),
            MaskMember(site=site.name, public_key=site.desk.agreement_key.public_text),
        )
    )
    site.submit(masked.model_copy(update={"secure": group}))
    assert _gates(site, masked.request_id)[-1] == ("gate.allowed", "submit", "check")
    changed = request(site, "cohort_count", GI_BLEED)  # other parameters than were checked
    assert site.check(changed).allowed
    changed_params = GI_BLEED | {"include_descendants": False}
    site.submit(changed.model_copy(update={"secure": group, "params": changed_params}))
    assert _gates(site, changed.request_id)[-1] == ("gate.allowed", "submit", None)
    unchecked = request(site, "cohort_count", GI_BLEED)  # never checked: decided in full
    site.submit(unchecked)
    assert _gates(site, unchecked.request_id) == [("gate.allowed", "submit", None)]
    # A policy reloaded between check and submit decides again: its refusal stands.
    reloaded = request(site, "cohort_count", GI_BLEED)
    assert site.check(reloaded).allowed
    raw = yaml.safe_load((site.root / "sites" / "test-site" / "policy.yaml").read_text())
    raw["analyses"] = [a for a in raw["analyses"] if a["name"] != "cohort_count"]
    site.policy = SitePolicy.parse(raw)
    with pytest.raises(RequestRefused):
        site.submit(reloaded)
    assert _gates(site, reloaded.request_id)[-1] == ("gate.denied", "submit", None)


def test_no_remembered_decision_outlives_the_token(site):
    key = IssuerKey.load(site.root / "issuer" / "demo-issuer.key.pem", ISSUER)

    def token(ttl: timedelta, now: datetime | None = None) -> str:
        return issue_token(
            key,
            researcher="alice@uni.example",
            project="gibleed-study",
            purpose="disease-specific research",
            audience=FEDERATION,
            ttl=ttl,
            now=now,
        )

    assert site.check(request(site, "cohort_count", GI_BLEED)).allowed  # the facts are known
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired = request(site, "cohort_count", GI_BLEED, token=token(timedelta(minutes=1), past))
    decision = site.check(expired)
    assert decision.verdict is Verdict.DENY and "token rejected" in decision.reasons[0]
    # check allowed a token about to expire; submit after its expiry does not reuse that.
    short = request(site, "cohort_count", GI_BLEED, token=token(timedelta(seconds=1)))
    assert site.check(short).allowed
    time.sleep(1.2)
    site.submit(short)  # within the token's leeway: allowed, but decided again
    assert _gates(site, short.request_id)[-1] == ("gate.allowed", "submit", None)
