"""Pull sites: a site that accepts no connection takes part by dialling out to a relay.

Everything is real: the relay is the HTTPS server with mutual TLS (uvicorn, loopback), the site
agent runs a real site node on Eunomia and fetches its calls over TLS, the orchestrator uses
the real flows. One federation serves every test: ``eu-hospital`` in-process, ``us-clinic``
behind a relay.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from executors import RequestRefused, SiteConfig, SiteError, SiteUnavailable
from executors.pki import init_ca, issue
from executors.process import free_port
from executors.pull import Call, PullSiteTransport, RelayConfig, RelayServer, Reply, SiteAgent
from executors.pull.relay import create_relay_app
from executors.pull.setup import PullSetup, prepare_pull
from fedflow.core import from_ipc, to_ipc
from fedflow.core.messages import JobState, Release, Request
from fedflow.core.registry import default_registry
from flows import SiteStatus, connect, run_analysis
from flows.demo import (
    ALL,
    DemoSite,
    build_demo,
    compare_with_pooled,
    pool,
    pooled_answer,
    split_by_person,
)
from flows.federation import SiteEntry
from governance.audit import AuditLog
from governance.errors import ReceiptInvalid
from governance.receipts import verify_release

pytestmark = pytest.mark.integration

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
SITES = (
    DemoSite("eu-hospital", "EU", 0.6, 10, ALL, release_extremes=True),
    DemoSite("us-clinic", "US", 0.4, 11, ALL),
)
PULL = "us-clinic"
GHOST = "nl-biobank"  # a site the relay serves whose agent the test plays by hand


@dataclass
class Pulled:
    root: Path
    setup: PullSetup
    relay: RelayServer
    agent: SiteAgent
    parts: list[dict[str, Any]]

    def client(self, name: str, **kw: Any) -> httpx.Client:
        """A raw client of the relay with the certificate ``name`` (from the demo CA)."""
        pki = self.root / "pki"
        cert = pki / "pull" / f"{name}.pem"
        if not cert.exists():
            cert = pki / f"{name}.pem"
        tls = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        tls.load_cert_chain(str(cert), str(cert.with_suffix("").with_suffix(".key.pem")))
        return httpx.Client(base_url=f"{self.setup.relay_url}/v1", verify=tls, **kw)

    def transport(self, relay: str | None = None) -> PullSiteTransport:
        pki = self.root / "pki"
        return PullSiteTransport(
            PULL,
            relay or self.setup.relay_url,
            ca=pki / "ca.pem",
            cert=pki / "orchestrator.pem",
            key=pki / "orchestrator.key.pem",
            receipt_key=(pki / f"{PULL}.receipt.pub.pem").read_bytes(),
            timeout=10.0,
        )


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory, eunomia) -> Iterator[Pulled]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("pull-federation")
    parts = split_by_person(eunomia, [s.share for s in SITES], seed=5)
    profile = build_demo(root, parts, sites=SITES)
    setup = prepare_pull(
        profile,
        [PULL],
        relay_port=free_port(),
        relay={"sites": [PULL, GHOST], "offline_after_s": 1.0, "max_call_bytes": 64 * 1024},
    )
    issue(root / "pki", GHOST, kind="client", out=root / "pki" / "pull")
    files = setup.agents[PULL]
    relay = RelayServer(RelayConfig.load(setup.relay_config)).start()
    fed = Pulled(root, setup, relay, None, parts)  # type: ignore[arg-type]
    try:
        fed.agent = SiteAgent.from_config(
            files.config, setup.relay_url, ca=files.ca, cert=files.cert, key=files.key
        ).start()
        yield fed
    finally:
        if fed.agent is not None:
            fed.agent.stop()
        fed.relay.stop()  # the relay running now (a test restarts it)


def _request(pulled: Pulled) -> Request:
    token = (pulled.root / "researcher.token").read_text().strip()
    ref = default_registry().get("cohort_count").ref()
    return Request(analysis=ref, params=dict(GI_BLEED), dataset="omop", token=token)


def test_a_federated_step_over_a_pull_site_equals_the_pooled_answer(
    pulled: Pulled, prefect_server: str
) -> None:
    with connect(pulled.setup.profile) as session:
        assert type(session.transports[PULL]).__name__ == "PullSiteTransport"
        result = run_analysis("cohort_count", GI_BLEED, federation=session)
    assert result.sites_contributing == ["eu-hospital", PULL]
    pooled = pooled_answer("cohort_count", GI_BLEED, pool(pulled.parts))
    verdict = compare_with_pooled(result.result, pooled)
    assert verdict["different"] == [] and verdict["withheld"] == [] and verdict["equal"]
    # the pull site's own gates and airlock decided, in its own audit log, and it signed
    config = SiteConfig.load(pulled.setup.agents[PULL].config)
    with AuditLog(config.state_dir / "audit.db", site=PULL) as audit:
        events = {e.event for e in audit.entries(request_id=result.request_id)}
        assert audit.verify().ok
    assert {"gate.allowed", "job.quarantined", "airlock.released"} <= events, events
    with AuditLog(pulled.root / "orchestrator" / "audit.db", site="orchestrator") as audit:
        outcomes = audit.entries(request_id=result.request_id, event="site.outcome")
    receipts = {e.details["receipt"]["site"] for e in outcomes if e.details.get("receipt")}
    assert receipts == {"eu-hospital", PULL}


def test_each_client_acts_only_in_its_role_and_only_for_its_own_site(
    pulled: Pulled, tmp_path: Path
) -> None:
    orchestrator, clinic, ghost = (pulled.client(n) for n in ("orchestrator", PULL, GHOST))
    try:
        assert ghost.get("/calls", params={"wait": "0"}).status_code == 204  # GHOST is online
        call = Call(method="GET", path="/v1/info", timeout=10.0)
        answered: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answered.append(
                orchestrator.post(
                    f"/sites/{GHOST}/calls", content=call.model_dump_json(), timeout=15
                )
            )
        )
        waiting.start()
        time.sleep(0.3)
        # another site's certificate neither fetches the call nor may answer it
        forged = Reply(call_id=call.call_id, status=200, body=b'{"site": "forged"}')
        refused = clinic.post("/replies", content=forged.model_dump_json())
        assert refused.status_code == 404 and refused.json()["error"] == "JobNotFound"
        # roles: a site may not post calls, an orchestrator may not fetch them
        as_site = clinic.post(f"/sites/{GHOST}/calls", content=call.model_dump_json())
        assert as_site.status_code == 403
        assert orchestrator.get("/calls").status_code == 403
        # the site the call is for gets it, and its answer reaches the orchestrator
        fetched = ghost.get("/calls", params={"wait": "5"})
        assert Call.model_validate_json(fetched.content).call_id == call.call_id
        reply = Reply(call_id=call.call_id, status=200, body=b'{"site": "nl-biobank"}')
        assert ghost.post("/replies", content=reply.model_dump_json()).status_code == 204
        waiting.join(15)
        assert Reply.model_validate_json(answered[0].content) == reply
        # the agent serves only the site protocol's routes, and audits what it refuses
        other = Call(method="GET", path="/v1/review/held", timeout=10.0)
        answer = orchestrator.post(f"/sites/{PULL}/calls", content=other.model_dump_json())
        assert Reply.model_validate_json(answer.content).status == 404
        refusals = pulled.agent.node.audit.entries(event="relay.refused")
        assert refusals and refusals[-1].details["reason"] == "route"
        # oversized and malformed calls are refused
        big = Call(method="POST", path="/v1/check", body=b"x" * 70_000)
        assert (
            orchestrator.post(f"/sites/{PULL}/calls", content=big.model_dump_json()).status_code
            == 413
        )
        assert orchestrator.post(f"/sites/{PULL}/calls", content=b"{").status_code == 422
        # an orchestrator that presents a site's certificate is refused by the relay, which
        # the flow sees as a failure on the way to the site, not as the site's refusal
        pki = pulled.root / "pki"
        impostor = PullSiteTransport(
            PULL, pulled.setup.relay_url, ca=pki / "ca.pem", cert=pki / "pull" / f"{PULL}.pem",
            key=pki / "pull" / f"{PULL}.key.pem",
        )  # fmt: skip
        with pytest.raises(SiteError) as refused_info:
            impostor.info()
        impostor.close()
        assert not isinstance(refused_info.value, RequestRefused)
        # a certificate from the demo CA for an unknown name, and one from another CA
        issue(pulled.root / "pki", "mallory", kind="client", out=tmp_path)
        with pytest.raises(httpx.TransportError):
            init_ca(tmp_path / "rogue", common_name="rogue CA")
            rogue = issue(tmp_path / "rogue", PULL, kind="client")
            tls = ssl.create_default_context(cafile=str(pulled.root / "pki" / "ca.pem"))
            tls.load_cert_chain(str(rogue.cert), str(rogue.key))
            httpx.get(f"{pulled.setup.relay_url}/v1/calls", verify=tls, timeout=5)
    finally:
        for c in (orchestrator, clinic, ghost):
            c.close()
    with AuditLog(pulled.root / "relay" / "audit.db", site="relay") as audit:
        events = [(e.event, e.actor) for e in audit.entries()]
        assert audit.verify().ok
    assert ("relay.reply_refused", PULL) in events
    assert ("relay.refused", PULL) in events and ("relay.refused", "orchestrator") in events
    assert ("relay.oversized", "orchestrator") in events
    assert ("relay.malformed", "orchestrator") in events


def test_a_release_a_compromised_relay_alters_fails_its_receipt(pulled: Pulled) -> None:
    config = RelayConfig.load(pulled.setup.relay_config).model_copy(
        update={"port": free_port(), "state_dir": pulled.root / "relay-forging"}
    )
    app = create_relay_app(config)
    honest = app.state.mailbox.call

    async def forging(site: str, call: Call) -> Reply:
        reply: Reply = await honest(site, call)
        if not call.path.endswith("/release") or reply.status != 200:
            return reply
        release = Release.model_validate_json(reply.body)
        assert release.partial is not None
        table = from_ipc(release.partial)
        column = table.column_names.index("count") if "count" in table.column_names else -1
        assert column >= 0, table.schema
        table = table.set_column(column, "count", pc.add(table["count"], 1000))
        forged = release.model_copy(update={"partial": to_ipc(table)})
        return reply.model_copy(update={"body": forged.model_dump_json().encode()})

    app.state.mailbox.call = forging
    files = pulled.setup.agents[PULL]
    with RelayServer(config, app=app):
        second = SiteAgent(
            pulled.agent.node, f"https://127.0.0.1:{config.port}", ca=files.ca, cert=files.cert,
            key=files.key,
        )  # fmt: skip
        transport = pulled.transport(f"https://127.0.0.1:{config.port}")
        with second:
            try:
                request = _request(pulled)
                job = transport.submit(request)
                assert transport.wait(job, 30).state is JobState.QUARANTINED
                release = transport.release(job)
            finally:
                transport.close()
        with pytest.raises(ReceiptInvalid):
            verify_release(release, transport.receipt_key, site=PULL, request=request)


def test_the_agent_dials_again_when_the_relay_comes_back(pulled: Pulled) -> None:
    transport = pulled.transport()
    try:
        assert transport.info().site == PULL
        pulled.relay.stop()
        with pytest.raises(SiteUnavailable):
            transport.info()
        pulled.relay = RelayServer(pulled.relay.config).start()
        deadline = time.monotonic() + 30  # the agent retries with backoff (0.5 s doubling)
        while True:
            try:
                assert transport.info().site == PULL
                break
            except SiteUnavailable:
                assert time.monotonic() < deadline, "the agent did not come back"
                time.sleep(0.25)
    finally:
        transport.close()


def test_a_stopped_agent_makes_its_site_unavailable_in_the_step(
    pulled: Pulled, prefect_server: str
) -> None:
    pulled.agent.stop()
    time.sleep(1.5)  # the relay's offline_after_s is 1 s here
    started = time.monotonic()
    with connect(pulled.setup.profile) as session:
        result = run_analysis("cohort_count", GI_BLEED, federation=session)
    assert time.monotonic() - started < 60
    outcome = {o.site: o for o in result.outcomes}
    assert result.sites_contributing == ["eu-hospital"]
    assert outcome[PULL].status not in (SiteStatus.RELEASED, SiteStatus.SUPPRESSED)
    assert outcome[PULL].stage == "gate_before"
    assert "has not polled the relay" in "; ".join(outcome[PULL].reasons)


def test_a_pull_entry_needs_an_https_relay_and_the_pinned_keys() -> None:
    entry = {"name": PULL, "transport": "pull", "ca": "ca.pem", "cert": "o.pem", "key": "o.key"}
    ok = SiteEntry.model_validate({**entry, "url": "https://relay:8444", "receipt_key": "r.pem"})
    assert ok.transport == "pull"
    for broken in (
        {**entry, "url": "http://relay:8444", "receipt_key": "r.pem", "allow_insecure_http": True},
        {**entry, "url": "https://relay:8444"},
        {**entry, "receipt_key": "r.pem"},
    ):
        with pytest.raises(ValidationError):
            SiteEntry.model_validate(broken)
