"""Site services as real processes on loopback, with real mutual-TLS certificates.

Three demo sites run as ``python -m executors.service`` processes (what ``fedflow site serve``
runs); the orchestrator reaches them with :class:`HttpsSiteTransport`. Nothing is mocked: the
refusals below are refusals by the real TLS stack, the real service and the real site node.
"""

from __future__ import annotations

import contextvars
import json
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from distributed import LocalCluster

from executors import FitNotOpen, JobNotFound, RequestRefused, SiteConfig, SiteUnavailable
from executors.pki import init_ca, issue
from executors.process import SiteProcess, free_port
from executors.service import serve
from executors.transport import HttpsSiteTransport
from fedflow.core import ConfigError, InvalidRequest, PayloadTooLarge, to_ipc
from fedflow.core.digest import digest_bytes
from fedflow.core.messages import JobState, Release, Request, Verdict
from fedflow.core.registry import default_registry
from flows import QuorumNotMet, SiteStatus, connect, run_analysis
from flows.analyses.glm_round import design_columns
from flows.demo import (
    ALL,
    FEDERATION,
    ISSUER,
    PROJECT,
    DemoSite,
    build_demo,
    split_by_person,
    write_https_profile,
)
from flows.errors import ProfileInvalid
from flows.federation import Federation
from flows.steps import gate_after
from governance.audit import AuditLog
from governance.checkpoints import verify_checkpoint
from governance.errors import ReceiptInvalid
from governance.identity import IssuerKey, issue_token
from governance.receipts import verify_release

pytestmark = pytest.mark.integration

OFFSET = 987_654_321_000

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
JSON_BODY = {"content-type": "application/json"}
SITES = (
    DemoSite("eu-hospital", "EU", 0.55, 10, ALL, release_extremes=True),
    DemoSite(
        "us-clinic",
        "US",
        0.30,
        11,
        (*ALL, "glm_round"),
        tables={
            **DemoSite("us-clinic", "US", 0.30, 11, ALL).tables,
            "observation_period": [
                "person_id",
                "observation_period_start_date",
                "observation_period_end_date",
            ],
        },
    ),
    DemoSite("uk-registry", "UK", 0.15, 10, ("cohort_count", "characterization")),
)


@dataclass
class Federated:
    root: Path
    https: Path
    in_process: Path
    token: str
    processes: dict[str, SiteProcess]
    parts: dict[str, dict[str, pa.Table]]

    def transport(self, site: str, **kw: object) -> HttpsSiteTransport:
        entry = next(s for s in Federation.load(self.https).sites if s.name == site)
        assert entry.url and entry.receipt_key
        args: dict[str, object] = {
            "ca": entry.ca,
            "cert": entry.cert,
            "key": entry.key,
            "receipt_key": entry.receipt_key.read_bytes(),
            "timeout": 30.0,
        }
        args.update(kw)
        return HttpsSiteTransport(site, entry.url, **args)  # type: ignore[arg-type]

    def audit(self, site: str) -> AuditLog:
        return AuditLog(self.root / "sites" / site / "state" / "audit.db", site=site)


def _start(processes: dict[str, SiteProcess], probe: dict[str, HttpsSiteTransport]) -> None:
    for process in processes.values():
        process.start()
    for name, process in processes.items():
        process.wait_healthy(probe[name].health)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, eunomia) -> Iterator[Federated]:  # type: ignore[no-untyped-def]
    """The three sites as service processes, and the same split in-process in another folder.

    Person ids are remapped to large, distinctive numbers so that a search for them in what
    leaves a site cannot match by accident.
    """
    remapped = {
        name: t.set_column(
            t.schema.get_field_index("person_id"),
            "person_id",
            pc.add(pc.multiply(t["person_id"], 1_000_003), OFFSET),
        )
        if "person_id" in t.column_names
        else t
        for name, t in eunomia.items()
    }
    parts = split_by_person(remapped, [s.share for s in SITES], seed=11)
    root = tmp_path_factory.mktemp("https-federation")
    build_demo(root, parts, sites=SITES)
    names = [s.name for s in SITES]
    https = write_https_profile(root, {s.name: free_port() for s in SITES}, sites=SITES)
    in_process = build_demo(tmp_path_factory.mktemp("in-process-federation"), parts, sites=SITES)
    token = (root / "researcher.token").read_text().strip()
    processes = {
        entry.name: SiteProcess(
            root / "sites" / entry.name / "site.yaml",
            port=int(str(entry.url).rsplit(":", 1)[1]),
            log=root / "logs" / f"{entry.name}.log",
        )
        for entry in Federation.load(https).sites
    }
    fed = Federated(root, https, in_process, token, processes, dict(zip(names, parts, strict=True)))
    probes = {s.name: fed.transport(s.name, timeout=2.0) for s in SITES}
    try:
        _start(fed.processes, probes)
        yield fed
    finally:
        for probe in probes.values():
            probe.close()
        with ThreadPoolExecutor() as pool:  # each stop may wait for idle connections
            list(pool.map(SiteProcess.stop, fed.processes.values()))


def _request(fed: Federated, analysis: str = "cohort_count", **kw: object) -> Request:
    return Request(
        analysis=default_registry().get(analysis).ref(),
        params=dict(GI_BLEED),  # type: ignore[arg-type]
        dataset="omop",
        token=fed.token,
        **kw,  # type: ignore[arg-type]
    )


def test_same_results_in_process_and_over_https(federation: Federated, prefect_server):  # type: ignore[no-untyped-def]
    cases = [("cohort_count", GI_BLEED), ("characterization", {**GI_BLEED, "age_band_width": 5})]
    for name, params in cases:
        with connect(federation.https) as remote:
            over_https = run_analysis(name, params, federation=remote)
        with connect(federation.in_process) as local:
            in_process = run_analysis(name, params, federation=local)
        assert over_https.result.equals(in_process.result), name
        assert over_https.result_digest == in_process.result_digest
        assert [o.row() for o in over_https.outcomes] == [o.row() for o in in_process.outcomes]
        assert over_https.sites_contributing == [s.name for s in SITES]
    # the orchestrator keeps each site's signed receipt with the outcome
    with AuditLog(federation.https.parent / "orchestrator" / "audit.db", site="o") as audit:
        outcomes = audit.entries(request_id=over_https.request_id, event="site.outcome")
    receipts = [e.details["receipt"] for e in outcomes]
    assert len(receipts) == 3 and all(r and r["signature"] for r in receipts)
    assert {r["site"] for r in receipts} == {s.name for s in SITES}


def test_a_site_signs_its_audit_head_for_the_orchestrator(federation: Federated) -> None:
    site = "us-clinic"
    transport = federation.transport(site)
    checkpoint = transport.checkpoint("request-1")
    verify_checkpoint(checkpoint, transport.receipt_key, site=site, nonce="request-1")
    with federation.audit(site) as audit:
        assert (checkpoint.seq, checkpoint.hash) == audit.head()
    with pytest.raises(InvalidRequest):
        transport.checkpoint("not/a nonce")


def test_a_client_without_a_trusted_certificate_fails_the_handshake(
    federation: Federated, tmp_path: Path
) -> None:
    site = "eu-hospital"
    url = federation.transport(site).url
    ca = federation.root / "pki" / "ca.pem"
    # no client certificate at all: the server refuses during the handshake
    bare = ssl.create_default_context(cafile=str(ca))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v1/health", verify=bare, timeout=5)
    # a client certificate from another CA
    init_ca(tmp_path / "rogue", common_name="rogue CA")
    rogue = issue(tmp_path / "rogue", "mallory", kind="client")
    with pytest.raises(SiteUnavailable):
        federation.transport(site, cert=rogue.cert, key=rogue.key).info()
    # the orchestrator refuses a site whose certificate does not chain to the pinned CA
    with pytest.raises(SiteUnavailable):
        federation.transport(site, ca=tmp_path / "rogue" / "ca.pem").info()
    # plain HTTP to the TLS port gets no answer
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/v1/health", timeout=5)
    # ... and the site keeps serving authenticated callers
    assert federation.transport(site).health()["site"] == site


def test_plain_http_is_refused_unless_enabled(federation: Federated, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plain HTTP"):
        HttpsSiteTransport("eu-hospital", "http://127.0.0.1:1")
    raw = {
        "name": "f",
        "sites": [{"name": "a", "transport": "https", "url": "http://127.0.0.1:1"}],
    }
    (tmp_path / "f.yaml").write_text(json.dumps(raw))
    with pytest.raises(ProfileInvalid, match="plain HTTP is refused"):
        Federation.load(tmp_path / "f.yaml")
    config = federation.root / "sites" / "eu-hospital" / "site.yaml"
    plain = SiteConfig.load(config).model_dump(mode="json", exclude={"service"})
    (tmp_path / "site.yaml").write_text(json.dumps(plain))
    with pytest.raises(ConfigError, match="plain HTTP"):
        serve(tmp_path / "site.yaml")


class _Tampering(HttpsSiteTransport):
    """A real HTTPS transport whose answers are changed on the way: the adversary."""

    change: str = "payload"

    def release(self, job_id: str) -> Release:
        release = super().release(job_id)
        if self.change == "payload":
            table = release.table()
            assert table is not None
            payload = to_ipc(table.slice(0, 0))  # a different table under the same receipt
            digests = {**release.digests, "result": digest_bytes(payload)}
            return release.model_copy(update={"partial": payload, "digests": digests})
        assert release.receipt is not None
        forged = release.receipt.model_copy(update={"digests": {**release.receipt.digests}})
        forged.digests["policy"] = "sha256:" + "0" * 64
        return release.model_copy(update={"receipt": forged, "digests": forged.digests})


def test_a_release_whose_receipt_does_not_verify_is_refused(federation: Federated) -> None:
    site = "us-clinic"
    honest = federation.transport(site)
    request = _request(federation)
    job = honest.submit(request)
    assert honest.wait(job, 60).state is JobState.QUARANTINED
    release = honest.release(job)
    receipt = verify_release(release, honest.receipt_key, site=site, request=request)
    assert receipt.digests["result"] == digest_bytes(release.partial or b"")
    for change, reason in (("payload", "bad_signature"), ("receipt", "bad_signature")):
        tampering = federation.transport(site)
        tampering.__class__ = _Tampering
        tampering.change = change  # type: ignore[attr-defined]
        tampering._tokens = honest._tokens
        with pytest.raises(ReceiptInvalid) as refused:
            gate_after.fn(site, tampering, job, request)
        assert refused.value.reason in {reason, "mismatch", "payload_changed"}
    # another site's pinned key, or another request, is refused too
    other = federation.transport(site, receipt_key=federation.transport("eu-hospital").receipt_key)
    other._tokens = honest._tokens
    with pytest.raises(ReceiptInvalid, match="other than the pinned"):
        gate_after.fn(site, other, job, request)
    with pytest.raises(ReceiptInvalid, match="another request"):
        gate_after.fn(site, honest, job, _request(federation))


def test_replayed_and_stale_requests_are_refused_and_audited(federation: Federated) -> None:
    site = "eu-hospital"
    transport = federation.transport(site)
    request = _request(federation)
    assert transport.check(request).verdict is Verdict.ALLOW
    replayed = transport.check(request)
    assert replayed.verdict is Verdict.DENY and "replayed" in replayed.reasons[0]
    job = transport.submit(request)  # the same request once per step is fine
    with pytest.raises(RequestRefused) as refused:
        transport.submit(request)
    assert "replayed" in refused.value.reasons[0]
    stale = _request(federation, created_at=datetime.now(UTC) - timedelta(hours=1))
    assert "older than" in transport.check(stale).reasons[0]
    with federation.audit(site) as audit:
        events = [
            (e.event, e.details.get("step")) for e in audit.entries(request_id=request.request_id)
        ]
        assert events.count(("request.replayed", "check")) == 1
        assert events.count(("request.replayed", "submit")) == 1
        assert audit.entries(request_id=stale.request_id, event="request.replayed")
        assert audit.verify().ok
    assert transport.wait(job, 60).state is JobState.QUARANTINED


def test_oversized_and_malformed_requests_get_clear_4xx_and_are_audited(
    federation: Federated,
) -> None:
    site = "uk-registry"
    transport = federation.transport(site)
    huge = _request(federation).model_copy(update={"params": {"concept_ids": list(range(300_000))}})
    with pytest.raises(PayloadTooLarge):
        transport.check(huge)
    client = transport._client
    bad_bodies = [
        b"{not json",
        b"[]",
        b"{}",
        json.dumps({"analysis": "x", "dataset": 1}).encode(),
        json.dumps({**json.loads(_request(federation).model_dump_json()), "extra": 1}).encode(),
        b'{"a":' * 5000,
    ]
    with federation.audit(site) as audit:
        before = len(audit.entries(event="request.malformed"))
    for path in ("/check", "/jobs"):
        for body in bad_bodies:
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, body[:20], response.text)
            error = response.json()
            assert error["error"] and error["message"]
    assert client.get("/jobs/../../etc/passwd").status_code == 404
    assert client.get("/jobs/nope").json()["error"] == "JobNotFound"
    assert client.post("/jobs/nope/release").status_code == 403  # no token: nothing learnt
    bearer = {"authorization": f"Bearer {federation.token}"}
    assert client.post("/jobs/nope/release", headers=bearer).status_code == 404
    assert client.get("/jobs/nope", params={"wait": "-1"}).status_code == 422
    assert client.get("/openapi.json").json()["paths"]
    with federation.audit(site) as audit:
        assert len(audit.entries(event="request.malformed")) >= before + 2 * (len(bad_bodies) - 1)
    assert transport.health()["status"] == "ok"


def test_service_limits_are_read_from_site_yaml_and_validated(federation: Federated) -> None:
    original = federation.root / "sites" / "eu-hospital" / "site.yaml"
    data = yaml.safe_load(original.read_text())
    data["service"].update(max_body_bytes=4096, max_running_jobs=2, graceful_timeout_s=30)
    limited = original.with_name("site-limits.yaml")
    limited.write_text(yaml.safe_dump(data))
    service = SiteConfig.load(limited).service
    assert service is not None
    assert (service.max_body_bytes, service.max_running_jobs) == (4096, 2)
    # An override from the command line is validated like the file; nothing starts.
    with pytest.raises(ConfigError, match="max_running_jobs"):
        serve(limited, max_running_jobs=0)
    data["service"]["max_body_bytes"] = "lots"
    limited.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="max_body_bytes"):
        SiteConfig.load(limited)


def test_concurrency_limit_and_graceful_shutdown(federation: Federated) -> None:
    """A fourth process for one site: 429 past its job limit; SIGTERM loses no job or entry."""
    site = "uk-registry"
    shared = federation.processes[site]
    shared.stop()  # one writer per state folder
    port = shared.port
    limited = SiteProcess(
        shared.config, port=port, log=shared.log, args=("--max-running-jobs", "1")
    )
    transport = federation.transport(site)
    try:
        limited.start().wait_healthy(federation.transport(site, timeout=2.0).health)
        requests = [_request(federation) for _ in range(6)]
        results: list[object] = [None] * len(requests)

        def submit(i: int) -> None:
            try:
                results[i] = transport.submit(requests[i])
            except SiteUnavailable as exc:
                results[i] = exc

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        busy = [r for r in results if isinstance(r, SiteUnavailable)]
        jobs = [r for r in results if isinstance(r, str)]
        assert jobs and busy, results
        assert all(b.reason == "busy" and "retry after" in b.message for b in busy)

        # SIGTERM while a job may still run: it finishes into quarantine before the stop
        last = transport.submit(_request(federation)) if transport.wait(jobs[0], 60) else None
        assert limited.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a clean stop
        limited = SiteProcess(shared.config, port=port, log=shared.log)
        limited.start().wait_healthy(federation.transport(site, timeout=2.0).health)
        for job in [*jobs, last]:
            assert job is not None
            status = transport.status(job)
            assert status.state is JobState.QUARANTINED, status
            release = transport.release(job)
            verify_release(release, transport.receipt_key, site=site)
        with federation.audit(site) as audit:
            report = audit.verify()
            assert report.ok
            events = [e.event for e in audit.entries()]
            assert events.count("site.stopped") >= 1
            stopped = len(events) - 1 - events[::-1].index("site.stopped")
            assert "site.started" in events[stopped:]
    finally:
        limited.stop()
        federation.processes[site] = limited


class _Capturing(HttpsSiteTransport):
    """A real HTTPS transport that keeps every response body: all that left the site."""

    captured: list[bytes]

    def _call(self, *args, **kw):  # type: ignore[no-untyped-def]
        response = super()._call(*args, **kw)
        self.captured.append(response.content)
        return response


def test_what_leaves_a_site_holds_no_person_ids_or_birth_dates(federation: Federated) -> None:
    runs = [
        ("cohort_count", GI_BLEED),
        ("characterization", {**GI_BLEED, "age_band_width": 1}),
        ("numeric_summary", {"table": "person", "column": "year_of_birth"}),
        ("numeric_summary", {"table": "drug_exposure", "column": "days_supply"}),
    ]
    for site in ("eu-hospital", "us-clinic"):
        person = federation.parts[site]["person"]
        ids = {str(i) for i in person["person_id"].to_pylist()}
        births = {str(d)[:10] for d in person["birth_datetime"].to_pylist() if d is not None}
        assert min(int(i) for i in ids) > OFFSET and len(births) > 300
        transport = federation.transport(site)
        transport.__class__ = _Capturing
        transport.captured = []  # type: ignore[attr-defined]
        transport.info()
        for name, params in runs:
            request = _request(federation, name).model_copy(update={"params": params})
            assert transport.check(request).allowed
            job = transport.submit(request)
            assert transport.wait(job, 60).state is JobState.QUARANTINED
            release = transport.release(job)
            assert release.partial is not None
            verify_release(release, transport.receipt_key, site=site, request=request)
        captured: list[bytes] = transport.captured  # type: ignore[attr-defined]
        texts = [body.decode() for body in captured]
        for body in captured:  # the Arrow payloads inside the JSON, decoded
            if b'"partial"' in body:
                table = Release.model_validate_json(body).table()
                assert table is not None
                texts.append(json.dumps(table.to_pylist(), default=str))
        assert len(texts) >= 1 + 4 * 4 + 4
        leaked = [i for i in ids if any(i in t for t in texts)]
        assert not leaked, f"{len(leaked)} person ids left {site}"
        assert not [d for d in births if any(d in t for t in texts)], f"birth dates left {site}"


def test_a_site_killed_mid_run_is_reported_failed_by_name_and_the_quorum_decides(
    federation: Federated, prefect_server: str
) -> None:
    """The site is killed while its job is on its Dask cluster, then stays down.

    To catch the site mid-run deterministically, it is restarted on a real Dask scheduler that
    has no workers: the job it accepts is visible on the scheduler and never finishes. The
    test kills the site process (SIGKILL) the moment the scheduler holds its tasks.
    """
    site = "uk-registry"
    original = federation.processes[site]
    config = original.config.with_name("site-stalled.yaml")
    stalled_yaml = yaml.safe_load(original.config.read_text())
    with LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as scheduler:
        stalled_yaml["dask"] = {"scheduler_address": scheduler.scheduler_address}
        config.write_text(yaml.safe_dump(stalled_yaml))
        original.stop()
        stalled = SiteProcess(config, port=original.port, log=original.log)
        federation.processes[site] = stalled
        stalled.start().wait_healthy(federation.transport(site, timeout=2.0).health)
        try:
            with connect(federation.https) as session, ThreadPoolExecutor(1) as pool:
                running = pool.submit(
                    contextvars.copy_context().run,  # the Prefect settings of this test
                    run_analysis,
                    "cohort_count",
                    GI_BLEED,
                    federation=session,
                    min_sites=2,
                )
                deadline = time.monotonic() + 120
                while not scheduler.scheduler.tasks:
                    assert not running.done(), "the flow ended before the site's job started"
                    assert time.monotonic() < deadline, "the site's job never reached Dask"
                    time.sleep(0.05)
                stalled.kill()  # SIGKILL mid-run: the crash
                result = running.result(timeout=300)
                by_site = {o.site: o for o in result.outcomes}
                assert by_site[site].status is SiteStatus.FAILED
                assert by_site[site].stage == "run"
                assert "cannot reach the site" in by_site[site].reasons[0]
                assert result.sites_contributing == ["eu-hospital", "us-clinic"]
                # Still down: a step that needs every site is refused, naming the failed one.
                with pytest.raises(QuorumNotMet) as refused:
                    run_analysis("cohort_count", GI_BLEED, federation=session, min_sites=3)
                failed = [o.site for o in refused.value.outcomes if o.status is SiteStatus.FAILED]
                assert failed == [site]
        finally:
            stalled.kill()
            restarted = SiteProcess(original.config, port=original.port, log=original.log)
            federation.processes[site] = restarted
            restarted.start().wait_healthy(federation.transport(site, timeout=2.0).health)


def test_fuzzing_from_the_openapi_document_finds_no_5xx(federation: Federated) -> None:
    """Schemathesis generates valid and invalid calls for every operation the site publishes."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    site = "eu-hospital"
    transport = federation.transport(site)
    document = transport._client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    pki = federation.root / "pki"
    tls = {
        "verify": str(pki / "ca.pem"),
        "cert": (str(pki / "orchestrator.pem"), str(pki / "orchestrator.key.pem")),
    }
    session = requests.Session()
    seen: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9
    for operation in operations:
        for mode in schemathesis.GenerationMode:

            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case) -> None:  # type: ignore[no-untyped-def]
                response = case.call(base_url=transport.url, session=session, timeout=30, **tls)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.method, case.path, response.text)
                if response.status_code >= 400:
                    body = response.json()
                    assert body["error"] and body["message"], body

            try:
                call()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is schemathesis.GenerationMode.NEGATIVE
    assert any(400 <= code < 500 for code in seen) and any(code < 300 for code in seen), seen
    assert transport.health()["status"] == "ok"
    with federation.audit(site) as audit:
        assert audit.verify().ok


def test_tokens_for_another_federation_and_other_callers_jobs_are_refused(
    federation: Federated,
) -> None:
    site = "us-clinic"
    key = IssuerKey.load(federation.root / "issuer" / "demo-issuer.key.pem", ISSUER)

    def token(audience: str = FEDERATION, researcher: str = "alice@uni.example") -> str:
        return issue_token(
            key, researcher=researcher, project=PROJECT, purpose="research", audience=audience
        )

    transport = federation.transport(site)
    elsewhere = _request(federation).model_copy(update={"token": token("another-federation")})
    decision = transport.check(elsewhere)
    assert decision.verdict is Verdict.DENY
    assert decision.reasons == ("token rejected: wrong_audience",)
    with pytest.raises(RequestRefused):
        transport.submit(elsewhere)

    job = transport.submit(_request(federation))
    assert transport.wait(job, 60).state is JobState.QUARANTINED
    stranger = federation.transport(site)  # another orchestrator: it did not submit the job
    with pytest.raises(RequestRefused, match="token"):
        stranger.release(job)
    with pytest.raises(JobNotFound):
        stranger.release(job, token=token(researcher="mallory@uni.example"))
    with pytest.raises(JobNotFound):
        stranger.release(job, token=token("another-federation"))
    assert transport.release(job).receipt is not None  # its own caller still can
    with federation.audit(site) as audit:
        refused = audit.entries(event="release.refused")
        assert [e.details["reason"] for e in refused[-2:]] == [
            "another researcher or project",
            "token rejected: wrong_audience",
        ]


def _glm_round(fed: Federated, beta: list[float] | None, token: str | None = None) -> Request:
    """A round of a fit of ``gi_bleed ~ age + gender`` at ``beta``."""
    glm = default_registry().get("glm_round")
    model = {
        "formula": "gi_bleed ~ age + gender",
        "family": "binomial",
        "data": {"variables": {"gi_bleed": GI_BLEED}},
    }
    first = glm.parse_params(model)
    params = first.model_dump(mode="json") | {
        "columns": design_columns(first),
        "fit_id": "5" * 32,
        "beta": beta,
    }
    return Request(analysis=glm.ref(), params=params, dataset="omop", token=token or fed.token)


def test_a_fit_steps_over_https_and_only_for_its_researcher(federation: Federated) -> None:
    site = "us-clinic"
    transport = federation.transport(site)
    first = _glm_round(federation, None)
    assert transport.check(first).allowed
    job = transport.submit(first)
    assert transport.wait(job, 120).state is JobState.QUARANTINED
    assert transport.release(job).receipt is not None
    step = _glm_round(federation, [-3.0, 0.01, 0.1])
    release = transport.step(step)
    verify_release(release, transport.receipt_key, site=site, request=step)
    assert release.table() is not None and release.job_id != job
    kept = release.model_copy(update={"checkpoint": None})
    assert transport.release(release.job_id) == kept  # kept at the site as any release
    assert release.checkpoint is not None  # the site's signed audit head came along
    verify_checkpoint(release.checkpoint, transport.receipt_key, site=site, nonce=step.request_id)
    # An orchestrator that predates the checkpoint does not ask for it and reads releases
    # without the field, from a step and from the release call alike.
    later = _glm_round(federation, [-3.1, 0.01, 0.1])
    body = later.model_dump_json().encode()
    plain = transport._client.post("/steps", content=body, headers=JSON_BODY)
    assert plain.status_code == 200 and "checkpoint" not in plain.json()
    bearer = {"authorization": f"Bearer {later.token}"}
    again = transport._client.post(f"/jobs/{plain.json()['job_id']}/release", headers=bearer)
    assert again.status_code == 200 and "checkpoint" not in again.json()
    with pytest.raises(RequestRefused, match="replayed"):
        transport.step(step)
    key = IssuerKey.load(federation.root / "issuer" / "demo-issuer.key.pem", ISSUER)
    mallory = issue_token(
        key,
        researcher="mallory@uni.example",
        project=PROJECT,
        purpose="research",
        audience=FEDERATION,
    )
    with pytest.raises(FitNotOpen):  # 404 over the wire, the same error class here
        federation.transport(site).step(_glm_round(federation, [0.0, 0.0, 0.0], token=mallory))
    with federation.audit(site) as audit:
        assert [e.event for e in audit.entries(request_id=step.request_id)] == [
            "step.started",
            "airlock.released",
            "request.replayed",
        ]
        assert audit.verify().ok
