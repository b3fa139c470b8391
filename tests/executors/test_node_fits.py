"""A fit's later rounds as steps at a real Eunomia site: what a step may change, and what
sends it back through the gate."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from executors import FitNotOpen, RequestRefused, SiteNode
from fedflow.core import InvalidParameters
from fedflow.core.messages import Release, ReleaseOutcome, Request
from fedflow.core.registry import default_registry
from flows.analyses.glm_round import design_columns
from flows.demo import FEDERATION, ISSUER, DemoSite
from governance.checkpoints import verify_checkpoint
from governance.identity import IssuerKey, issue_token
from governance.policy import SitePolicy
from governance.receipts import verify_release
from tests.one_site import one_site

pytestmark = pytest.mark.integration

GLM = default_registry().get("glm_round")
MODEL: dict[str, Any] = {
    "formula": "gi_bleed ~ age + gender",
    "family": "binomial",
    "data": {
        "variables": {
            "gi_bleed": {
                "domain": "condition",
                "concept_ids": [192671],
                "include_descendants": True,
            }
        }
    },
}
TABLES: dict[str, list[str] | str] = {
    "person": ["person_id", "gender_concept_id", "year_of_birth"],
    "condition_occurrence": ["person_id", "condition_concept_id"],
    "observation_period": [
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
    ],
    "concept_ancestor": "*",
}
FIT_ID = "0" * 32


@pytest.fixture
def site(tmp_path: Path, eunomia):  # type: ignore[no-untyped-def]
    """One site holding all of Eunomia that allows glm_round."""
    spec = DemoSite("fit-site", "EU", 1.0, 10, ("glm_round",), tables=TABLES)
    config, token = one_site(tmp_path, eunomia, spec)
    with SiteNode(config) as node:
        node.token = token  # type: ignore[attr-defined]
        node.root = tmp_path  # type: ignore[attr-defined]
        yield node


def raw_params(beta: list[float] | None = None, **changes: Any) -> dict[str, Any]:
    first = GLM.parse_params(MODEL)
    raw = first.model_dump(mode="json") | {"columns": design_columns(first), "fit_id": FIT_ID}
    return raw | {"beta": beta} | changes


def round_request(node: SiteNode, beta: list[float] | None = None, **kw: Any) -> Request:
    return Request(
        analysis=GLM.ref(),
        params=kw.pop("params", None) or raw_params(beta),
        dataset="omop",
        token=kw.pop("token", None) or node.token,  # type: ignore[attr-defined]
    )


def full_round(node: SiteNode, request: Request) -> Release:
    """A round through the whole protocol: pre-gate, run into quarantine, airlock."""
    assert node.check(request).allowed
    job = node.submit(request)
    node.wait(job, 120)
    return node.release(job)


def events(node: SiteNode, request_id: str) -> list[str]:
    return [e.event for e in node.audit.entries(request_id=request_id)]


BETA = [-3.0, 0.01, 0.1]


def test_a_later_round_is_a_step_that_equals_the_full_protocol(site: SiteNode) -> None:
    first = full_round(site, round_request(site))
    assert first.outcome is ReleaseOutcome.RELEASED
    assert len(site.fits) == 1

    step = round_request(site, BETA)
    stepped = site.step(step)
    receipt = verify_release(stepped, site.receipt_key.public_pem, site=site.name, request=step)
    assert receipt.digests["request"] == step.digest()
    assert stepped.outcome is ReleaseOutcome.RELEASED
    # no gate ran again: the step is audited, then the airlock's decision
    assert events(site, step.request_id) == ["step.started", "airlock.released"]
    started = site.audit.entries(request_id=step.request_id, event="step.started")[0]
    assert started.details["fit_job_id"] == first.job_id and started.details["round"] == 2
    assert started.actor == "alice@uni.example"
    # the release carries the site's signed audit head after the step, made for this request
    assert stepped.checkpoint is not None
    checkpoint = verify_checkpoint(
        stepped.checkpoint, site.receipt_key.public_pem, site=site.name, nonce=step.request_id
    )
    assert (checkpoint.seq, checkpoint.hash) == site.audit.head()
    # the same statistics as a fresh fit's round at these coefficients, in full
    other = raw_params(BETA, fit_id="1" * 32)
    full = full_round(site, round_request(site, params=other))
    assert stepped.table().equals(full.table())  # type: ignore[union-attr]
    assert site.status(stepped.job_id).state.value == "released"  # kept as any job's release
    assert site.release(stepped.job_id) == stepped.model_copy(update={"checkpoint": None})
    assert site.audit.verify().ok


def test_a_replayed_or_invalid_step_is_refused_and_audited(site: SiteNode) -> None:
    full_round(site, round_request(site))
    step = round_request(site, BETA)
    site.step(step)
    with pytest.raises(RequestRefused, match="replayed"):
        site.step(step)
    assert events(site, step.request_id)[-1] == "request.replayed"
    after = round_request(site, BETA)
    site.step(after)  # a refused replay is not a round of the fit
    started = site.audit.entries(request_id=after.request_id, event="step.started")
    assert started[0].details["round"] == 3
    bad = round_request(site, [1.0, float("nan"), 2.0])
    bad = bad.model_copy(update={"params": raw_params([1.0, 2.0])})  # one value short
    with pytest.raises(InvalidParameters) as caught:
        site.step(bad)
    assert "beta" in caught.value.message
    assert events(site, bad.request_id) == ["request.invalid"]


def test_what_the_gate_decided_on_cannot_change_in_a_step(site: SiteNode) -> None:
    full_round(site, round_request(site))
    key = IssuerKey.load(site.root / "issuer" / "demo-issuer.key.pem", ISSUER)  # type: ignore[attr-defined]

    def token(researcher: str, ttl: timedelta = timedelta(hours=1)) -> str:
        return issue_token(
            key,
            researcher=researcher,
            project="gibleed-study",
            purpose="disease-specific research",
            audience=FEDERATION,
            ttl=ttl,
        )

    changed = {
        "formula": round_request(site, params=raw_params(BETA, formula="gi_bleed ~ age + age")),
        "table": round_request(
            site, params=raw_params(BETA, data={"variables": {}, "table": None})
        ),
        "researcher": round_request(site, BETA, token=token("mallory@uni.example")),
        "token": round_request(site, BETA, token=token("alice@uni.example")),
    }
    for what, request in changed.items():
        with pytest.raises(FitNotOpen):
            site.step(request)
        assert events(site, request.request_id) == ["step.not_open"], what  # nothing ran
    assert site.step(round_request(site, BETA)).outcome is ReleaseOutcome.RELEASED


def test_a_reloaded_policy_or_an_expired_token_closes_the_fit(site: SiteNode) -> None:
    full_round(site, round_request(site))
    raw = yaml.safe_load((site.root / "sites" / "fit-site" / "policy.yaml").read_text())  # type: ignore[attr-defined]
    site.policy = SitePolicy.parse(raw)  # the same rules, reloaded: decided afresh
    with pytest.raises(FitNotOpen):
        site.step(round_request(site, BETA))
    assert len(site.fits) == 0
    full_round(site, round_request(site, BETA))  # the gate allows it again: the fit reopens
    assert site.step(round_request(site, BETA)).outcome is ReleaseOutcome.RELEASED

    raw["analyses"] = [a for a in raw["analyses"] if a["name"] != "glm_round"]
    site.policy = SitePolicy.parse(raw)
    refused = round_request(site, BETA)
    with pytest.raises(FitNotOpen):
        site.step(refused)
    assert not site.check(refused).allowed  # the full protocol now refuses it

    site.policy = SitePolicy.parse(
        yaml.safe_load(
            (site.root / "sites" / "fit-site" / "policy.yaml").read_text()  # type: ignore[attr-defined]
        )
    )
    key = IssuerKey.load(site.root / "issuer" / "demo-issuer.key.pem", ISSUER)  # type: ignore[attr-defined]
    short = issue_token(
        key,
        researcher="alice@uni.example",
        project="gibleed-study",
        purpose="disease-specific research",
        audience=FEDERATION,
        ttl=timedelta(seconds=1),
    )
    full_round(site, round_request(site, token=short))
    fit = next(iter(site.fits._fits.values()))
    fit.expires_at = fit.expires_at - timedelta(seconds=2)  # as if a second had passed
    with pytest.raises(FitNotOpen):
        site.step(round_request(site, BETA, token=short))


def test_no_fit_opens_where_the_custodian_reviews_every_release(tmp_path: Path, eunomia) -> None:  # type: ignore[no-untyped-def]
    spec = DemoSite("review-site", "EU", 1.0, 10, ("glm_round",), tables=TABLES)
    config, token = one_site(tmp_path, eunomia, spec)
    raw = yaml.safe_load(config.policy.read_text())
    raw["review"] = {"analyses": ["glm_round"]}
    config.policy.write_text(yaml.safe_dump(raw))
    with SiteNode(config) as node:
        node.token = token  # type: ignore[attr-defined]
        request = round_request(node)
        assert node.check(request).allowed
        node.submit(request)
        assert len(node.fits) == 0
        with pytest.raises(FitNotOpen):
            node.step(round_request(node, BETA))


def test_a_site_service_counts_running_steps_against_its_job_limit(
    site: SiteNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step runs in the service's request thread: it counts as a running job, so steps
    cannot run past ``max_running_jobs`` (429, as a submit would get)."""
    import threading

    from starlette.testclient import TestClient

    from executors.config import ServiceConfig
    from executors.service import create_app

    full_round(site, round_request(site))
    entered, go = threading.Event(), threading.Event()
    step = site.step

    def slow_step(request: Request) -> Release:
        entered.set()
        go.wait(30)
        return step(request)

    monkeypatch.setattr(site, "step", slow_step)
    app = create_app(site, ServiceConfig(max_running_jobs=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answers: list[int] = []

        def post(request: Request) -> None:
            body = request.model_dump_json()
            answer = client.post("/v1/steps", content=body, headers=JSON)
            answers.append(answer.status_code)

        first = threading.Thread(target=post, args=(round_request(site, BETA),))
        first.start()
        assert entered.wait(30)
        assert site.running_jobs() == 1
        busy = client.post(
            "/v1/steps", content=round_request(site, BETA).model_dump_json(), headers=JSON
        )
        assert busy.status_code == 429 and busy.json()["error"] == "SiteUnavailable"
        go.set()
        first.join(30)
        assert answers == [200] and site.running_jobs() == 0


JSON = {"content-type": "application/json"}


def test_open_fits_keep_the_most_recently_used_and_close_idle_ones(site: SiteNode) -> None:
    """OpenFits alone: at most ``kept`` fits (least recently used out first), none idle past
    ``idle`` seconds."""
    import time

    from executors.fits import OpenFits

    full_round(site, round_request(site))
    opened = next(iter(site.fits._fits.values()))

    def request(fit: str) -> Request:
        return round_request(site, params=raw_params(BETA, fit_id=fit * 32))

    fits = OpenFits(kept=2)
    for name in "abc":
        fits.open(request(name), dataclasses.replace(opened, used=time.monotonic()))
    assert len(fits) == 2
    assert fits.find(request("a"), GLM, site.policy) is None  # the oldest went
    assert fits.find(request("b"), GLM, site.policy) is not None
    fits.open(request("d"), dataclasses.replace(opened, used=time.monotonic()))
    assert fits.find(request("c"), GLM, site.policy) is None  # b was used since: c went
    idle = OpenFits(idle=0.0)
    idle.open(request("e"), dataclasses.replace(opened, used=time.monotonic() - 1))
    assert idle.find(request("e"), GLM, site.policy) is None and len(idle) == 0
