"""Differential privacy: OpenDP noise on Eunomia tables, the budget ledger and its refusals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from fedflow.core import OutputKind, frequency, magnitude
from flows.analyses.characterization import Characterization
from flows.analyses.magnitude_table import MagnitudeTable
from governance.airlock import Outcome, check
from governance.privacy import PrivacyLedger, PrivacyPolicy, noise_measurement, privatize

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}


@pytest.fixture(scope="module")
def characterization(eunomia: dict[str, pa.Table]) -> pa.Table:
    analysis = Characterization()
    params = analysis.parse_params(GI_BLEED)
    return analysis.local({n: eunomia[n] for n in analysis.tables(params)}, params)


@pytest.fixture(scope="module")
def days_supply(eunomia: dict[str, pa.Table]) -> pa.Table:
    analysis = MagnitudeTable()
    params = analysis.parse_params(
        {"domain": "drug", "concept_ids": [1127433], "column": "days_supply", "clamp": [0, 90]}
    )
    return analysis.local({n: eunomia[n] for n in analysis.tables(params)}, params)


def _cells(table: pa.Table, value: str) -> dict[tuple[str, ...], float]:
    dims = [c for c in table.column_names if c not in (value, "sum", "persons", "count")]
    dims = [d for d in dims if d not in magnitude.SITE_ONLY]
    return {tuple(r[d] for d in dims): r[value] for r in table.to_pylist()}


def _release(table, policy, ledger, job, kind=OutputKind.FREQUENCY, project="study"):
    return privatize(
        kind, table, policy, ledger, site="north", project=project, dataset="eunomia", job_id=job
    )


def test_noisy_counts_are_consistent_close_and_pass_the_airlock(characterization, tmp_path):
    ledger = PrivacyLedger(tmp_path / "privacy.db")
    policy = PrivacyPolicy(enabled=True, epsilon=10.0, query_epsilon=1.0)
    true = _cells(characterization, "count")
    releases = []
    for n in range(1, 11):
        result = _release(characterization, policy, ledger, f"job-{n}")
        assert result.outcome is Outcome.RELEASED and result.table is not None
        assert "laplace noise (OpenDP) at epsilon 1" in result.reasons[0]
        assert f"{10 - n} of 10 epsilon remains" in result.reasons[0]
        noisy = _cells(result.table, "count")
        assert set(true) <= set(noisy)  # absent combinations enter as (noisy) zeros
        assert all(v >= 0 for v in noisy.values())
        interior = {k: v for k, v in noisy.items() if frequency.MARGIN not in k}
        assert noisy[("*", "*")] == sum(interior.values())  # margins are sums of noisy cells
        assert all(abs(noisy[k] - true.get(k, 0)) <= 15 for k in interior)
        verdict = check(OutputKind.FREQUENCY, result.table, threshold=10)
        assert verdict.outcome in (Outcome.RELEASED, Outcome.SUPPRESSED)
        releases.append(noisy)
    # Discrete Laplace at scale 1 leaves one small table unchanged about 5% of the time;
    # ten unchanged releases in a row (p ~ 1e-13) would mean no noise was added.
    assert any(noisy != true for noisy in releases)
    spent = ledger.spent(site="north", project="study", dataset="eunomia")
    assert (spent.epsilon, spent.releases) == (10.0, 10)


def test_the_noise_has_the_scale_opendp_calibrated():
    # Laplace with L1 sensitivity 2 at epsilon 0.5: scale 4; mean absolute noise ~ 4.
    measure = noise_measurement("laplace", integer=True, l1=2, l2=2**0.5, epsilon=0.5, delta=0)
    assert measure.map(2) <= 0.5
    draws = np.asarray(measure([0] * 20000))
    assert abs(np.abs(draws).mean() - 4.0) < 0.25 and abs(draws.mean()) < 0.2
    gaussian = noise_measurement(
        "gaussian", integer=False, l1=90.0, l2=90.0, epsilon=1.0, delta=1e-6
    )
    epsilon, delta = gaussian.map(90.0)
    assert epsilon <= 1.0 + 1e-9 and delta == 1e-6


def test_budget_exhaustion_is_refused_stating_what_remains(characterization, tmp_path):
    ledger = PrivacyLedger(tmp_path / "privacy.db")
    policy = PrivacyPolicy(enabled=True, epsilon=0.3, query_epsilon=0.1)
    for job in ("a", "b", "c"):
        assert _release(characterization, policy, ledger, job).outcome is Outcome.RELEASED
    refused = _release(characterization, policy, ledger, "d")
    assert refused.outcome is Outcome.REFUSED and refused.table is None
    assert refused.reasons == (
        "privacy budget exhausted: this release needs epsilon 0.1; 0 of 0.3 remains for "
        "project 'study' on dataset 'eunomia' at site 'north'",
    )
    # Another project has its own budget; a named pair has the budget the policy gives it.
    assert _release(characterization, policy, ledger, "e", project="other").outcome is (
        Outcome.RELEASED
    )
    wider = policy.model_copy(update={"budgets": {"study": {"eunomia": 0.45}}})
    assert _release(characterization, wider, ledger, "f").outcome is Outcome.RELEASED
    again = _release(characterization, wider, ledger, "g")
    assert "0.05 of 0.45 remains" in again.reasons[0]
    # A job is noised (and charged) once: asking again is refused, not re-drawn.
    assert _release(characterization, wider, ledger, "a").outcome is Outcome.REFUSED


def test_the_ledger_survives_a_restart(characterization, tmp_path):
    path = tmp_path / "privacy.db"
    policy = PrivacyPolicy(enabled=True, epsilon=0.2, query_epsilon=0.1)
    ledger = PrivacyLedger(path)
    _release(characterization, policy, ledger, "a")
    _release(characterization, policy, ledger, "b")
    ledger.close()
    reopened = PrivacyLedger(path)
    assert reopened.spent(site="north", project="study", dataset="eunomia").releases == 2
    refused = _release(characterization, policy, reopened, "c")
    assert refused.outcome is Outcome.REFUSED and "0 of 0.2 remains" in refused.reasons[0]


def test_gaussian_sums_of_clamped_days_supply(days_supply, tmp_path):
    ledger = PrivacyLedger(tmp_path / "privacy.db")
    policy = PrivacyPolicy(
        enabled=True,
        mechanism="gaussian",
        query_epsilon=1.0,
        delta=1e-6,
        sum_bounds=(0, 90),
        output_kinds=("magnitude",),
    )
    result = _release(days_supply, policy, ledger, "m", kind=OutputKind.MAGNITUDE)
    assert result.outcome is Outcome.RELEASED and result.table is not None
    assert "delta 1e-06" in result.reasons[0]
    assert magnitude.has_contributions(result.table)  # for the airlock, still at the site
    sums, true = _cells(result.table, "sum"), _cells(days_supply, "sum")
    interior = {k: v for k, v in sums.items() if magnitude.MARGIN not in k}
    assert sums[("*", "*")] == pytest.approx(sum(interior.values()))
    # about 20 interior cells, each with noise sd ~ 800 (OpenDP calibration): total within 6 sd
    assert sums[("*", "*")] == pytest.approx(true[("*", "*")], abs=6 * 800 * 20**0.5)
    verdict = check(OutputKind.MAGNITUDE, result.table, threshold=10)
    assert verdict.table is not None and "top" not in verdict.table.column_names
    assert ledger.spent(site="north", project="study", dataset="eunomia").delta == 1e-6
    # Unclamped contributions exceed the declared bounds: refused before anything is spent.
    narrow = policy.model_copy(update={"sum_bounds": (0.0, 30.0)})
    refused = _release(days_supply, narrow, ledger, "n", kind=OutputKind.MAGNITUDE)
    assert refused.outcome is Outcome.REFUSED and "sum bounds [0, 30]" in refused.reasons[0]
    assert ledger.spent(site="north", project="study", dataset="eunomia").releases == 1


def test_the_policy_section(characterization, tmp_path):
    off = PrivacyPolicy()
    ledger = PrivacyLedger(tmp_path / "privacy.db")
    unchanged = _release(characterization, off, ledger, "x")
    assert unchanged.table is characterization and unchanged.reasons == ()
    only_counts = PrivacyPolicy(enabled=True, output_kinds=("frequency",))
    assert _release(characterization, only_counts, ledger, "y", kind="summary").reasons == ()
    with pytest.raises(ValidationError, match="sum_bounds is required"):
        PrivacyPolicy(enabled=True, output_kinds=("magnitude",))
    with pytest.raises(ValidationError, match="no differential privacy mechanism"):
        PrivacyPolicy(output_kinds=("regression",))
    with pytest.raises(ValidationError):
        PrivacyPolicy(enabled=True, output_kinds=("frequency",), mechanism="exponential")
    with pytest.raises(ValidationError, match="positive epsilon"):
        PrivacyPolicy(budgets={"study": {"eunomia": 0}})
