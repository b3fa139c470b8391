"""The differencing ledger's rules, its persistence, and the policy's differencing section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fedflow.core import ConfigError, frequency
from governance.differencing import (
    COMPLEMENT_RULE,
    DIFFERENCING_RULE,
    Cohort,
    DifferencingLedger,
    DifferencingPolicy,
    total_released,
)
from governance.errors import PolicyInvalid
from governance.policy import SitePolicy

POPULATION = 10_000
rng = np.random.default_rng(5)
A = np.sort(rng.choice(POPULATION, size=500, replace=False)).astype(np.int64)


def cohort(persons: np.ndarray) -> Cohort:
    return Cohort(persons, population=POPULATION)


@pytest.fixture
def ledger(tmp_path: Path):  # type: ignore[no-untyped-def]
    book = DifferencingLedger(tmp_path / "differencing.db")
    book.record(project="p", dataset="omop", job_id="a", cohort=cohort(A))
    yield book
    book.close()


@pytest.mark.parametrize("removed", [1, 5, 9])
def test_a_cohort_fewer_than_k_persons_from_a_released_one_is_refused(ledger, removed):
    b = A[removed:]
    assert ledger.refusal(project="p", dataset="omop", cohort=cohort(b), k=10) == (
        DIFFERENCING_RULE.format(k=10)
    )
    # swapping persons at the same size is caught too (|A Δ B| = 2 * swapped)
    outsiders = np.setdiff1d(np.arange(POPULATION), A)[:removed]
    swapped = np.concatenate([A[removed:], outsiders])
    assert ledger.refusal(project="p", dataset="omop", cohort=cohort(swapped), k=2 * removed + 1)


def test_identical_far_apart_other_project_and_other_dataset_cohorts_pass(ledger):
    assert ledger.refusal(project="p", dataset="omop", cohort=cohort(A), k=10) is None
    assert ledger.refusal(project="p", dataset="omop", cohort=cohort(A[10:]), k=10) is None
    disjoint_same_size = np.setdiff1d(np.arange(POPULATION), A)[:500]
    assert (
        ledger.refusal(project="p", dataset="omop", cohort=cohort(disjoint_same_size), k=10) is None
    )
    assert ledger.refusal(project="q", dataset="omop", cohort=cohort(A[1:]), k=10) is None
    assert ledger.refusal(project="p", dataset="other", cohort=cohort(A[1:]), k=10) is None


def test_complement_rule(ledger):
    everyone = np.arange(POPULATION)
    assert ledger.refusal(project="q", dataset="omop", cohort=cohort(everyone), k=10) is None
    for missing in (1, 9):
        result = ledger.refusal(
            project="q", dataset="omop", cohort=cohort(everyone[missing:]), k=10
        )
        assert result == COMPLEMENT_RULE.format(k=10)
    assert ledger.refusal(project="q", dataset="omop", cohort=cohort(everyone[10:]), k=10) is None


def test_the_ledger_survives_reopening_and_records_a_job_once(tmp_path: Path, ledger):
    ledger.record(project="p", dataset="omop", job_id="a", cohort=cohort(A[:3]))
    ledger.close()
    again = DifferencingLedger(tmp_path / "differencing.db")
    try:
        assert again.count(project="p", dataset="omop") == 1
        assert again.refusal(project="p", dataset="omop", cohort=cohort(A[:-1]), k=10)
    finally:
        again.close()


def test_total_released_reads_the_all_margins_cell():
    cube = frequency.cube(pa.table({"g": ["x"] * 12 + ["y"] * 3}), dims=["g"])
    assert total_released(cube)
    count = cube.column_names.index(frequency.COUNT)
    hidden = cube.set_column(count, frequency.COUNT, pa.array([None] * cube.num_rows, pa.int64()))
    assert not total_released(hidden)
    assert not total_released(None)


def test_policy_section_defaults_overrides_and_errors():
    policy = SitePolicy.parse({"min_cell_count": 11})
    assert policy.differencing.enabled and policy.differencing.k_for(11) == 11
    own = SitePolicy.parse({"differencing": {"k": 25}})
    assert own.differencing.k_for(own.min_cell_count) == 25 and own.digest != policy.digest
    assert not SitePolicy.parse({"differencing": {"enabled": False}}).differencing.enabled
    assert DifferencingPolicy().k is None
    for bad, field in (
        ({"k": 1}, "differencing.k"),
        ({"k": "ten"}, "differencing.k"),
        ({"enable": False}, "differencing.enable"),
        ("off", "differencing"),
    ):
        with pytest.raises(PolicyInvalid, match=field) as raised:
            SitePolicy.parse({"differencing": bad}, source="policy.yaml")
        assert isinstance(raised.value, ConfigError)
