"""The attack suite: what a curious researcher or a forger tries against real sites on Eunomia.

Each attack is blocked and audited at the site, and a legitimate analysis in the same suite
still passes. The sites are real site nodes (own Dask cluster, Cedar pre-gate, airlock,
differencing defence, privacy ledger, audit log):

- ``custodian`` holds all of Eunomia as a controlled dataset (a ControlledAccessGrants visa from
  the data access committee, consent HMB);
- ``tiny`` holds 11 persons, where a regression has too few degrees of freedom;
- ``noisy`` answers with OpenDP noise under a small privacy budget.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from executors import SiteConfig, SiteNode
from executors.errors import RequestRefused
from fedflow.core.messages import JobState, Release, ReleaseOutcome, Request
from fedflow.core.registry import default_registry
from flows.analyses.cohort import CohortAnalysis, CohortParams
from flows.analyses.glm_round import GlmRoundParams, design_columns
from flows.demo import FEDERATION, ISSUER, DemoSite, build_demo, split_by_person
from governance.audit import AuditLog
from governance.checkpoints import check_checkpoints
from governance.identity import IssuerKey, issue_token
from governance.passport import CONTROLLED_ACCESS_GRANTS, issue_visa
from tests.forgery import rewrite_log

pytestmark = pytest.mark.integration

K = 10
DAC = "https://dac.example.org"
GRANT = "https://dac.example.org/datasets/eunomia"
GI_BLEED: dict[str, Any] = {
    "domain": "condition",
    "concept_ids": [192671],
    "include_descendants": True,
}
ANALYSES = ("cohort_count", "characterization", "magnitude_table", "glm_round")


@dataclass
class Sites:
    root: Path
    issuer: IssuerKey
    dac: IssuerKey
    custodian: SiteNode
    tiny: SiteNode
    noisy: SiteNode


def _patch(root: Path, name: str, **policy: Any) -> SiteConfig:
    """Open site ``name`` to any project and apply ``policy`` (``omop``: the dataset's rules)."""
    home = root / "sites" / name
    content = yaml.safe_load((home / "policy.yaml").read_text())
    content["access"]["projects"] = ["*"]
    content["datasets"]["omop"].update(policy.pop("omop", {}))
    (home / "policy.yaml").write_text(yaml.safe_dump({**content, **policy}))
    return SiteConfig.load(home / "site.yaml")


@pytest.fixture(scope="module")
def sites(
    tmp_path_factory: pytest.TempPathFactory, eunomia: dict[str, pa.Table]
) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("attacks")
    _, eleven = split_by_person(eunomia, [0.996, 0.004])
    specs = [DemoSite(name, "EU", 1.0, K, ANALYSES) for name in ("custodian", "tiny", "noisy")]
    build_demo(root, [eunomia, eleven, eunomia], sites=specs)
    dac = IssuerKey.generate(DAC)
    dac.save(root / "sites" / "custodian", "dac")
    custodian = _patch(
        root,
        "custodian",
        omop={"controlled_access": [GRANT], "consent": ["HMB"]},
        passport={"visa_issuers": [{"issuer": DAC, "public_key": "dac.pub.pem"}]},
    )
    tiny = _patch(root, "tiny")
    noisy = _patch(root, "noisy", privacy={"enabled": True, "epsilon": 0.25, "query_epsilon": 0.1})
    with SiteNode(custodian) as c, SiteNode(tiny) as t, SiteNode(noisy) as n:
        issuer = IssuerKey.load(root / "issuer" / "demo-issuer.key.pem", ISSUER)
        yield Sites(root, issuer, dac, c, t, n)


def _grant(key: IssuerKey) -> str:
    return issue_visa(key, researcher="eve", type=CONTROLLED_ACCESS_GRANTS, value=GRANT, source=DAC)


def _token(
    sites: Sites, project: str, *, visas: list[str] | None = None, purpose: str = "HMB"
) -> str:
    return issue_token(
        sites.issuer,
        researcher="eve",
        project=project,
        purpose=purpose,
        audience=FEDERATION,
        visas=[_grant(sites.dac)] if visas is None else visas,
    )


def _request(token: str, analysis: str, params: dict[str, Any]) -> Request:
    ref = default_registry().get(analysis).ref()
    return Request(analysis=ref, params=params, dataset="omop", token=token)


def _run(node: SiteNode, token: str, analysis: str, params: dict[str, Any]) -> Release:
    job = node.submit(_request(token, analysis, params))
    assert node.wait(job, 120).state is JobState.QUARANTINED
    return node.release(job, token=token)


def _glm(formula: str) -> dict[str, Any]:
    """A first GLM round's parameters, with the design columns the orchestrator agrees."""
    params = GlmRoundParams.model_validate({"formula": formula, "family": "gaussian"})
    return {**params.model_dump(mode="json"), "columns": design_columns(params)}


def _audited(node: SiteNode, release: Release, event: str) -> list[str]:
    (entry,) = node.audit.entries(request_id=release.request_id, event=event)
    return list(entry.details["reasons"])


def _total(release: Release) -> int:
    rows = release.table().to_pylist()
    (row,) = [r for r in rows if all(v == "*" for k, v in r.items() if k != "count")]
    return int(row["count"])


# -- legitimate analyses ----------------------------------------------------------------------


def test_legitimate_analyses_pass(sites: Sites, eunomia: dict[str, pa.Table]) -> None:
    token = _token(sites, "legit")
    count = _run(sites.custodian, token, "cohort_count", GI_BLEED)
    pooled = CohortAnalysis.cohort(eunomia, CohortParams.model_validate(GI_BLEED)).height
    assert count.outcome is ReleaseOutcome.RELEASED and _total(count) == pooled
    fit = _run(sites.custodian, token, "glm_round", _glm("age ~ gender"))
    assert fit.outcome is ReleaseOutcome.RELEASED
    noisy = _run(sites.noisy, _token(sites, "legit"), "cohort_count", GI_BLEED)
    assert noisy.outcome is not ReleaseOutcome.REFUSED
    assert "noise (OpenDP)" in noisy.reasons[0]


# -- attacks on the pre-gate ------------------------------------------------------------------


def test_a_forged_visa_is_refused_and_audited(sites: Sites) -> None:
    forger = IssuerKey.generate(DAC)  # claims to be the committee, signs with its own key
    token = _token(sites, "legit", visas=[_grant(forger)])
    decision = sites.custodian.check(_request(token, "cohort_count", GI_BLEED))
    assert not decision.allowed
    assert "visa 1 (ControlledAccessGrants) rejected: bad_signature" in decision.reasons
    with pytest.raises(RequestRefused):
        sites.custodian.submit(_request(token, "cohort_count", GI_BLEED))
    denied = sites.custodian.audit.entries(event="gate.denied")
    assert any("bad_signature" in " ".join(e.details["reasons"]) for e in denied)


def test_a_purpose_outside_the_consent_is_refused_and_audited(sites: Sites) -> None:
    request = _request(_token(sites, "legit", purpose="POA"), "cohort_count", GI_BLEED)
    decision = sites.custodian.check(request)
    assert not decision.allowed
    (reason,) = decision.reasons
    assert reason.startswith("the purpose is not within the consent of dataset omop")
    (entry,) = sites.custodian.audit.entries(request_id=request.request_id, event="gate.denied")
    assert entry.details["reasons"] == [reason]


# -- attacks on what leaves -------------------------------------------------------------------


def test_small_cell_probing_gets_suppressed_cells(sites: Sites) -> None:
    rare = {"domain": "condition", "concept_ids": [4112343]}  # acute viral pharyngitis
    release = _run(sites.custodian, _token(sites, "probe-cells"), "characterization", rare)
    counts = release.table()["count"].to_pylist()
    assert release.outcome is ReleaseOutcome.SUPPRESSED and None in counts
    assert all(c is None or c == 0 or c >= K for c in counts)
    assert _audited(sites.custodian, release, "airlock.released") == list(release.reasons)


def test_a_differencing_attack_one_person_apart_is_refused(
    sites: Sites, eunomia: dict[str, pa.Table]
) -> None:
    cohort = CohortAnalysis.cohort(eunomia, CohortParams.model_validate(GI_BLEED))
    dates = cohort.group_by("index_date").len().sort("index_date", descending=True)
    i = next(i for i, n in enumerate(dates["len"].cum_sum()) if n == 1)
    end: date = dates["index_date"][i + 1]
    token = _token(sites, "probe-difference")
    first = _run(sites.custodian, token, "cohort_count", GI_BLEED)
    assert first.outcome is ReleaseOutcome.RELEASED
    second = _run(sites.custodian, token, "cohort_count", {**GI_BLEED, "end_date": str(end)})
    assert second.outcome is ReleaseOutcome.REFUSED and second.partial is None
    assert any("differ" in r for r in _audited(sites.custodian, second, "airlock.refused"))


def test_one_dominant_contributor_is_suppressed_and_contributions_never_leave(
    sites: Sites,
) -> None:
    days = {"domain": "drug", "concept_ids": [19126352], "column": "days_supply", "clamp": [0, 90]}
    release = _run(sites.custodian, _token(sites, "probe-sums"), "magnitude_table", days)
    assert release.outcome is ReleaseOutcome.SUPPRESSED
    assert any("dominated" in r for r in release.reasons)
    assert not {"top", "negative", "lowest"} & set(release.table().column_names)
    assert _audited(sites.custodian, release, "airlock.released") == list(release.reasons)


@pytest.mark.parametrize(
    ("formula", "reason"),
    [
        ("age ~ gender", "residual degrees of freedom is below the threshold of 10"),
        (
            "age ~ gender + " + " + ".join(f"I(year_of_birth ** {d})" for d in range(1, 10)),
            "saturated model: 11 parameters for 11 observations",
        ),
    ],
    ids=["too-few-dof", "saturated"],
)
def test_a_regression_that_would_reveal_individuals_is_refused(
    sites: Sites, formula: str, reason: str
) -> None:
    release = _run(sites.tiny, _token(sites, "probe-fit"), "glm_round", _glm(formula))
    assert release.outcome is ReleaseOutcome.REFUSED and release.partial is None
    assert any(reason in r for r in _audited(sites.tiny, release, "airlock.refused"))


def test_exhausting_the_privacy_budget_is_refused_with_what_remains(sites: Sites) -> None:
    token = _token(sites, "probe-budget")
    for _ in range(2):
        assert _run(sites.noisy, token, "cohort_count", GI_BLEED).outcome is not (
            ReleaseOutcome.REFUSED
        )
    third = _run(sites.noisy, token, "cohort_count", GI_BLEED)
    assert third.outcome is ReleaseOutcome.REFUSED
    (reason,) = _audited(sites.noisy, third, "airlock.refused")
    assert "privacy budget exhausted" in reason and "0.05 of 0.25 remains" in reason


# -- attacks on the record --------------------------------------------------------------------


def test_a_complete_rewrite_of_the_audit_log_is_detected(sites: Sites, tmp_path: Path) -> None:
    node = sites.custodian
    before = node.checkpoint()
    _run(node, _token(sites, "legit"), "cohort_count", GI_BLEED)
    after = node.checkpoint()
    copy, forged = tmp_path / "audit.db", tmp_path / "forged.db"
    with (
        closing(sqlite3.connect(node.config.state_dir / "audit.db")) as live,
        closing(sqlite3.connect(copy)) as stolen,
    ):
        live.backup(stolen)  # the log as it stands, write-ahead log included
    rewrite_log(copy, forged, alter_seq=before.seq, change={"reasons": ["nothing happened"]})
    with AuditLog(forged, site="") as log:
        assert log.verify().ok  # a perfect chain on its own
        checks = check_checkpoints(log, [before, after])
    assert [c.ok for c in checks] == [False, False]
    assert checks[0].problem == "rewritten: the entry has another hash"
