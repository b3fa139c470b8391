"""A GLM over 32 simulated sites survives sites that fail, and a resumed run asks only those.

Faults are injected by a transport that wraps each site's real in-process transport
(:class:`tests.transports.FaultyTransport`): three sites are down, one is slower than the
step's timeout, one crashes from the fit's second round on, and one returns a payload that does
not match its signed receipt. Every site's calls are counted, so the resumed run can be held to
asking only what failed.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import statsmodels.api as sm
from formulaic import model_matrix
from pydantic import ValidationError

from executors import SiteUnavailable
from fedflow.core import InvalidRequest
from flows import FederationSession, SiteStatus, connect
from flows.analyses.glm_round import GlmRound, used_columns
from flows.analyses.glm_table import derive
from flows.demo import build_federation, pool
from flows.errors import QuorumNotMet, SiteFailed, StageFailed, StageTimedOut
from flows.federated import run_analysis
from flows.glm import fit_glm
from flows.strategy import (
    ErrorStrategy,
    FailureKind,
    StepPolicy,
    _CallThreads,
    attempt,
    classify,
    with_deadline,
)
from governance.errors import ReceiptInvalid
from tests.transports import wrap

pytestmark = pytest.mark.integration

N_SITES = 32
DOWN = ("site-003", "site-011", "site-019")
SLOW, CRASH, CORRUPT = "site-007", "site-014", "site-022"
TIMEOUT, SLOW_SECONDS = 3.0, 3.5
DATA: dict[str, Any] = {
    "variables": {
        "gi_bleed": {"domain": "condition", "concept_ids": [192671], "include_descendants": True},
        "celecoxib": {"domain": "drug", "concept_ids": [1118084], "include_descendants": True},
    }
}
GLM_TABLES = ("person", "condition_occurrence", "drug_exposure", "observation_period")
FORMULA = "age ~ gender + celecoxib + gi_bleed"
POLICY = StepPolicy(max_retries=1, backoff=0.05, timeout=TIMEOUT, min_sites=20)


@dataclass
class Faulty:
    profile: Path
    parts: dict[str, dict[str, pa.Table]]
    state_dir: Path
    session: FederationSession


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, eunomia: dict[str, pa.Table]
) -> Iterator[Faulty]:
    """32 simulated sites on one in-process Dask scheduler, with only the tables the GLM reads
    (and only the vocabulary rows under its two concepts), to keep them light."""
    from distributed import LocalCluster

    root = tmp_path_factory.mktemp("faults")
    concepts = [v["concept_ids"][0] for v in DATA["variables"].values()]
    ancestry = eunomia["concept_ancestor"]
    tables = {name: eunomia[name] for name in GLM_TABLES} | {
        "concept_ancestor": ancestry.filter(
            pc.is_in(ancestry["ancestor_concept_id"], pa.array(concepts, ancestry.schema[0].type))
        )
    }
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
    ) as cluster:
        built = build_federation(
            root, N_SITES, tables=tables, scheduler_address=cluster.scheduler_address
        )
        with connect(built.profile) as session:
            yield Faulty(built.profile, built.parts, root / "orchestrator", session)


def pooled_fit(tables: Mapping[str, pa.Table]) -> Any:
    """statsmodels' Gaussian GLM on the pooled analysis table of these sites (the oracle)."""
    params = GlmRound().parse_params({"formula": FORMULA, "family": "gaussian", "data": DATA})
    used = used_columns(params)
    frame = derive(tables, params.data, used).dropna(subset=sorted(used))
    matrices = model_matrix(FORMULA, frame)
    model = sm.GLM(np.asarray(matrices.lhs)[:, 0], np.asarray(matrices.rhs))
    return model.fit()


def test_a_glm_over_32_sites_survives_failures_and_resumes_only_what_failed(
    federation: Faulty, prefect_server: str
) -> None:
    faults = {site: "down" for site in DOWN} | {
        SLOW: "slow",
        CRASH: "crash",
        CORRUPT: "corrupt",
    }
    session = federation.session
    calls = wrap(session, faults, SLOW_SECONDS)
    fit = fit_glm(FORMULA, "gaussian", data=DATA, federation=session, policy=POLICY)
    by_site = {o.site: o for o in fit.outcomes}
    assert sorted(by_site) == sorted(federation.parts)  # every site is named
    for site in DOWN:
        down = by_site[site]
        assert (down.status, down.failure, down.stage, down.round, down.attempts) == (
            SiteStatus.FAILED,
            "unavailable",
            "gate_before",
            1,
            2,
        )
        assert "cannot reach the site" in down.reasons[0]
    slow = by_site[SLOW]
    assert (slow.status, slow.failure, slow.stage, slow.attempts) == (
        SiteStatus.FAILED,
        "timeout",
        "gate_before",
        2,
    )
    assert f"within {TIMEOUT:g} s" in slow.reasons[0]
    corrupt = by_site[CORRUPT]
    assert (corrupt.status, corrupt.failure, corrupt.stage, corrupt.attempts) == (
        SiteStatus.FAILED,
        "corrupt_payload",
        "gate_after",
        1,
    )
    assert "payload_changed" in corrupt.reasons[0]
    crash = by_site[CRASH]
    assert (crash.status, crash.failure, crash.stage, crash.round, crash.attempts) == (
        SiteStatus.FAILED,
        "unavailable",
        "run",
        2,
        2,
    )
    assert "crashed" in crash.reasons[0]
    assert fit.dropped == {CRASH: 2}
    failed = {*DOWN, SLOW, CRASH, CORRUPT}
    assert {s for s, o in by_site.items() if o.contributed} == set(federation.parts) - failed
    assert fit.sites["site"].to_list() == [s for s in federation.parts if s not in failed]
    # the fit is the pooled fit of the sites that contributed to the end
    oracle = pooled_fit(pool([p for s, p in federation.parts.items() if s not in failed]))
    np.testing.assert_allclose(fit.coefficients["estimate"], oracle.params, rtol=0, atol=1e-8)
    assert fit.n == oracle.nobs
    assert calls[SLOW].calls["submit"] == 0  # a site that never passed its gate never ran

    # Resume with the faults gone: round 1 asks only the sites that failed in it; every
    # other site's round-1 release is reused after verifying it again.
    calls = wrap(session, {})
    again = fit_glm(FORMULA, "gaussian", data=DATA, federation=session, policy=POLICY, resume=True)
    asked_in_round_1 = {s for s, t in calls.items() if t.first_round_checks}
    assert asked_in_round_1 == {*DOWN, SLOW, CORRUPT}
    assert all(t.first_round_checks == 1 for s, t in calls.items() if s in asked_in_round_1)
    assert not again.dropped
    assert all(o.contributed for o in again.outcomes)
    everyone = pooled_fit(pool(list(federation.parts.values())))
    np.testing.assert_allclose(again.coefficients["estimate"], everyone.params, rtol=0, atol=1e-8)
    np.testing.assert_allclose(again.coefficients["std_error"], everyone.bse, rtol=1e-8)
    kinds = Counter(entry.event for entry in session.audit.entries())
    assert kinds["step.resumed"] >= 1 and kinds["resume.refused"] == 0


def test_a_step_short_of_its_quorum_or_told_to_terminate_stops_naming_the_failed_sites(
    federation: Faulty, prefect_server: str
) -> None:
    # Too few sites for the quorum, or the strategy is terminate: the error names every
    # site's outcome (and terminate stops before anything runs).
    count = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
    fast = StepPolicy(max_retries=0, timeout=120, min_fraction=0.95)
    session = federation.session
    calls = wrap(session, dict.fromkeys(DOWN, "down"))
    with pytest.raises(QuorumNotMet) as short:
        run_analysis("cohort_count", count, federation=session, policy=fast)
    assert "the step needs 31" in short.value.message
    assert {o.site for o in short.value.outcomes if o.failure} == set(DOWN)
    assert len(short.value.outcomes) == N_SITES
    assert len([o for o in short.value.outcomes if o.contributed]) == N_SITES - len(DOWN)
    calls = wrap(session, dict.fromkeys(DOWN, "down"))
    stop = fast.model_copy(update={"error_strategy": ErrorStrategy.TERMINATE, "min_fraction": 0})
    with pytest.raises(SiteFailed) as stopped:
        run_analysis("cohort_count", count, federation=session, policy=stop)
    assert all(f"{site} unavailable at gate_before" in stopped.value.message for site in DOWN)
    skipped = [o for o in stopped.value.outcomes if o.status is SiteStatus.SKIPPED]
    assert len(skipped) == N_SITES - len(DOWN)
    assert sum(t.calls["submit"] for t in calls.values()) == 0


def test_transient_failures_are_retried_with_backoff_and_final_ones_are_not() -> None:
    policy = StepPolicy(max_retries=3, backoff=0.1, backoff_max=0.25, jitter=0.5)
    rng = random.Random(1)
    for retry, base in ((1, 0.1), (2, 0.2), (3, 0.25), (9, 0.25)):
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert base * 0.5 <= min(delays) and max(delays) <= base * 1.5
        assert max(delays) - min(delays) > base * 0.5  # jittered
    slept: list[float] = []
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise SiteUnavailable("cannot reach the site", site="a")
        return "ok"

    assert attempt(flaky, policy, stage="run", site="a", sleep=slept.append) == "ok"
    # Each delay lies within the jitter of its doubling base (0.1 s, then 0.2 s).
    assert len(tries) == 3 and len(slept) == 2
    assert 0.05 <= slept[0] <= 0.15 and 0.1 <= slept[1] <= 0.3

    def refused() -> str:
        tries.append(1)
        raise InvalidRequest("parameters fail the schema", site="a")

    tries.clear()
    with pytest.raises(StageFailed) as final:
        attempt(refused, policy, stage="gate_before", site="a", sleep=slept.append)
    assert len(tries) == 1 and (final.value.reason, final.value.attempts) == ("invalid_request", 1)

    def down() -> str:
        tries.append(1)
        raise SiteUnavailable("cannot reach the site", site="a")

    for strategy, expected in (("retry", 4), ("ignore", 1), ("terminate", 1)):
        tries.clear()
        strict = policy.model_copy(update={"error_strategy": ErrorStrategy(strategy)})
        with pytest.raises(StageFailed) as gave_up:
            attempt(down, strict, stage="run", site="a", sleep=lambda _: None)
        assert len(tries) == expected and gave_up.value.attempts == expected

    with pytest.raises(StageFailed) as slow:
        attempt(
            lambda: time.sleep(0.5),
            policy.model_copy(update={"timeout": 0.05, "max_retries": 0}),
            stage="gate_after",
            site="a",
        )
    assert (slow.value.reason, slow.value.stage) == ("timeout", "gate_after")
    assert (
        classify(ReceiptInvalid("does not match", reason="payload_changed")) is FailureKind.CORRUPT
    )
    assert not FailureKind.CORRUPT.transient and FailureKind.TIMEOUT.transient


def test_the_quorum_is_the_larger_of_a_count_and_a_fraction() -> None:
    assert StepPolicy(min_sites=3).required(100) == 3
    assert StepPolicy(min_sites=3, min_fraction=0.5).required(100) == 50
    assert StepPolicy(min_fraction=0.9).required(32) == 29
    assert StepPolicy(min_fraction=1.0).required(32) == 32
    with pytest.raises(ValidationError):
        StepPolicy.model_validate({"error_strategy": "sometimes"})
    with pytest.raises(ValidationError):
        StepPolicy(min_fraction=1.5)


def test_deadline_calls_reuse_idle_threads_and_abandon_an_overrunning_call() -> None:
    def calls() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "site-call"}

    with_deadline(lambda: None, 5, what="check", site="a")
    before = calls()
    for _ in range(20):  # one after another: the same idle threads serve them all
        assert with_deadline(threading.current_thread, 5, what="check", site="a") in before
    assert calls() <= before  # no new thread (an old idle one may have exited)
    release = threading.Event()
    with pytest.raises(StageTimedOut, match=r"check did not finish within 0\.2 s"):
        with_deadline(release.wait, 0.2, what="check", site="slow")
    assert with_deadline(lambda: 7, 5, what="submit", site="b") == 7  # served beside it
    release.set()
    with pytest.raises(SiteUnavailable, match="down"):
        with_deadline(_down, 5, what="submit", site="c")


def test_an_idle_call_thread_exits() -> None:
    threads = _CallThreads(idle=0.05)
    done = threading.Event()
    threads.start(lambda: None, done)
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while threads._idle and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threads._idle == 0


def _down() -> None:
    raise SiteUnavailable("site is down", site="c")
