"""ACRO parity: on the same inputs built from the Eunomia data, the airlock agrees with ACRO.

ACRO (PyPI ``acro``, the SACRO output checker) is the oracle, run with its default parameters
(``acro/default.yaml``: threshold 10, dof 10, (n, k) = (2, 0.90), p = 0.10). Inputs are one row
per person (so ACRO's record counts are our person counts). Status mapping (docs/airlock.md):
ACRO ``pass`` is our ``released``; ACRO ``fail`` is our ``released_with_suppression`` for
tables (we apply the suppression ACRO's ``suppress=True`` would, and more: secondary
suppression) and ``refused`` for regressions; ACRO ``review`` for a table with negative
contributions is our suppression of exactly those cells. Deliberate differences, each asserted
below: zero cells (ACRO flags them, we release known zeros) and our extra regression rules
(outcome cell counts, indicator cells, parameters per observation).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

acro = pytest.importorskip("acro")

from fedflow.core import frequency, magnitude  # noqa: E402
from flows.analyses.glm_round import irls_statistics  # noqa: E402
from flows.analyses.magnitude_table import MagnitudeTable  # noqa: E402
from governance.airlock import (  # noqa: E402
    Outcome,
    check_frequency,
    check_magnitude,
    check_regression,
)
from governance.airlock.magnitude import NK_K, NK_N, P_RATIO, sensitive_cells  # noqa: E402

# ACRO 1.0.2 passes numpy callables to pandas aggregations, which pandas 2.3 warns about.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:acro.*")

THRESHOLD = 10
ACRO_CHECKS = {"MinimumThresholdCheck": "threshold", "NKCheck": "nk", "PPercentCheck": "p%"}
Cell = tuple[str, str]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One ACRO session with its default configuration (suppress off: it reports, we compare)."""
    logging.getLogger("acro").setLevel(logging.WARNING)
    yield acro.ACRO(suppress=False)


def test_acro_defaults_are_the_airlocks_defaults(session):
    config = session.config
    assert config["safe_threshold"] == THRESHOLD and config["safe_dof_threshold"] == THRESHOLD
    assert (config["safe_nk_n"], config["safe_nk_k"], config["safe_pratio_p"]) == (
        NK_N,
        NK_K,
        P_RATIO,
    )


def _last(session: Any) -> Any:
    return session.results.get_index(len(session.results.get_keys()) - 1)


def _acro_cells(outcome: pd.DataFrame) -> dict[Cell, set[str]]:
    """ACRO's outcome frame as {(row, column): names of the checks the cell fails}."""
    cells: dict[Cell, set[str]] = {}
    for column in outcome.columns:
        for row, text in outcome[column].items():
            failed = {ACRO_CHECKS.get(n, n) for n in str(text).split("; ") if n.strip("; ")}
            cells[(str(row), str(column))] = failed - {"ok"}
    return cells


def _units(eunomia: dict[str, pa.Table], concept: int, width: int) -> pd.DataFrame:
    analysis = MagnitudeTable()
    params = analysis.parse_params(
        {
            "domain": "drug",
            "concept_ids": [concept],
            "column": "days_supply",
            "age_band_width": width,
        }
    )
    return analysis.units({n: eunomia[n] for n in analysis.tables(params)}, params).to_pandas()


def _coarse(units: pd.DataFrame) -> pd.DataFrame:
    """Two age groups instead of bands: a table without small cells."""
    lower = units["age_band"].str.split("-").str[0].astype(int)
    return units.assign(age_band=np.where(lower < 50, "under 50", "50 and over"))


# -- frequency tables ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concept", "width", "coarse"),
    [(1127433, 10, False), (19133873, 10, False), (1713671, 0, True)],
)
def test_frequency_tables_agree(session, eunomia, concept, width, coarse):
    units = _units(eunomia, concept, width or 10)
    units = _coarse(units) if coarse else units
    session.crosstab(units.age_band, units.gender, margins=True, margins_name=frequency.MARGIN)
    record = _last(session)
    theirs = _acro_cells(record.outcome)

    table = frequency.cube(
        pa.Table.from_pandas(units[["age_band", "gender"]]), ["age_band", "gender"]
    )
    counts = {(r["age_band"], r["gender"]): r["count"] for r in table.to_pylist()}
    ours = check_frequency(table, threshold=THRESHOLD)
    assert ours.table is not None
    released = {(r["age_band"], r["gender"]): r["count"] for r in ours.table.to_pylist()}

    # The same cells fail the threshold; ACRO also flags the empty cells (zeros), we do not.
    small = {c for c, n in counts.items() if 0 < n < THRESHOLD}
    flagged = {c for c, why in theirs.items() if why}
    assert flagged - small == {c for c in theirs if c not in counts}
    assert all(theirs[c] == {"threshold"} for c in small)
    assert all(released[c] is None for c in small)  # each flagged cell is withheld

    nonzero_status = "fail" if small else "pass"
    assert record.status == ("fail" if flagged else "pass")
    expected = {"pass": Outcome.RELEASED, "fail": Outcome.SUPPRESSED}[nonzero_status]
    assert ours.outcome is expected
    if coarse:
        assert record.status == "pass" and ours.outcome is Outcome.RELEASED


# -- magnitude tables (with dominance) -------------------------------------------------------


def _magnitude(units: pd.DataFrame) -> pa.Table:
    records = pa.Table.from_pandas(units, preserve_index=False)
    return magnitude.cube(records, ["age_band", "gender"], "value")


def _rows(table: pa.Table) -> list[Cell]:
    return list(zip(table["age_band"].to_pylist(), table["gender"].to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("concept", "width", "coarse", "dominated"),
    [
        (1127433, 10, False, False),  # small cells only
        (1713671, 0, True, False),  # nothing to suppress
        (40220960, 20, False, True),  # one contributor dominates (and all-zero cells)
        (19126352, 10, False, True),
        (19008572, 20, False, True),
    ],
)
def test_magnitude_tables_agree_rule_by_rule(session, eunomia, concept, width, coarse, dominated):
    units = _units(eunomia, concept, width or 10)
    units = _coarse(units) if coarse else units
    session.crosstab(
        units.age_band,
        units.gender,
        values=units.value,
        aggfunc="sum",
        margins=True,
        margins_name=magnitude.MARGIN,
    )
    record = _last(session)
    theirs = _acro_cells(record.outcome)

    table = _magnitude(units)
    rows = _rows(table)
    failing = sensitive_cells(table, threshold=THRESHOLD)
    ours: dict[Cell, set[str]] = {cell: set() for cell in rows}
    for rule, cells in failing.items():
        for i in cells:
            ours[rows[i]].add(rule)
    for cell, rules in ours.items():
        assert theirs[cell] == rules, cell
    empty = {c for c in theirs if c not in ours}
    assert all(theirs[c] == {"threshold"} for c in empty)  # ACRO: 0 persons < 10; we: absent

    result = check_magnitude(table, threshold=THRESHOLD)
    assert result.table is not None
    assert not set(result.table.column_names) & set(magnitude.SITE_ONLY)
    released = dict(zip(_rows(result.table), result.table["sum"].to_pylist(), strict=True))
    assert all(released[c] is None for c, rules in ours.items() if rules)
    assert bool((failing["nk"] | failing["p%"]) - failing["threshold"]) is dominated
    status = "fail" if any(ours.values()) else "pass"
    assert record.status == ("fail" if any(theirs.values()) else "pass")
    assert result.outcome is {"pass": Outcome.RELEASED, "fail": Outcome.SUPPRESSED}[status]
    if coarse:
        assert record.status == "pass" and result.outcome is Outcome.RELEASED


def test_negative_contributions_are_review_for_acro_and_suppressed_here(session, eunomia):
    units = _coarse(_units(eunomia, 19126352, 10))
    units = units.assign(value=units.value - units.value.mean())  # centred: negatives
    session.crosstab(
        units.age_band,
        units.gender,
        values=units.value,
        aggfunc="sum",
        margins=True,
        margins_name=magnitude.MARGIN,
    )
    record = _last(session)
    assert record.status == "review"
    table = _magnitude(units)
    result = check_magnitude(table, threshold=THRESHOLD)
    failing = sensitive_cells(table, threshold=THRESHOLD)
    assert failing["negative"] == set(range(table.num_rows))  # every cell holds a negative one
    assert result.outcome is Outcome.SUPPRESSED and result.suppressed_cells == table.num_rows


# -- regressions -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def persons(eunomia: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per Eunomia person, in a fixed random order: outcomes and covariates."""
    person = pl.from_arrow(eunomia["person"]).select("person_id", "year_of_birth")
    conditions = (
        pl.from_arrow(eunomia["condition_occurrence"])
        .group_by("person_id")
        .agg(
            pl.len().alias("conditions"),
            (pl.col("condition_concept_id") == 192671).any().alias("gi_bleed"),
        )
    )
    drugs = (
        pl.from_arrow(eunomia["drug_exposure"]).group_by("person_id").agg(pl.len().alias("drugs"))
    )
    frame = (
        person.join(conditions, on="person_id", how="left")
        .join(drugs, on="person_id", how="left")
        .fill_null(0)
        .sort("person_id")
        .to_pandas()
    )
    order = np.random.default_rng(20261128).permutation(len(frame))
    return frame.iloc[order].reset_index(drop=True)


def _design(frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack(
        [
            np.ones(len(frame)),
            (2010 - frame["year_of_birth"].to_numpy()) / 10,
            np.log1p(frame["conditions"].to_numpy()),
        ]
    )


def _acro_fit(session: Any, method: str, y: np.ndarray, x: np.ndarray) -> str:
    getattr(session, method)(y, x)
    return str(_last(session).status)


def _ours(method: str, y: np.ndarray, x: np.ndarray) -> Any:
    family = "gaussian" if method == "ols" else "binomial"
    n = len(y)
    partial = irls_statistics(
        family, ["const", "age", "conditions"], x, y, np.zeros(n), np.ones(n), None
    )
    return check_regression(partial, threshold=THRESHOLD)


@pytest.mark.parametrize("method", ["ols", "logit", "probit"])
@pytest.mark.parametrize("n", [200, 2694, 12, 9])
def test_regressions_agree_on_residual_degrees_of_freedom(session, persons, method, n):
    frame = persons.iloc[:n]
    x = _design(frame)
    y = (
        np.log1p(frame["drugs"].to_numpy(np.float64))
        if method == "ols"
        else frame["gi_bleed"].to_numpy(np.float64)
    )
    if method != "ols" and n < 20:  # logit/probit need both outcomes to fit at all
        y = np.resize([0.0, 1.0], n)
    status = _acro_fit(session, method, y, x)
    ours = _ours(method, y, x)
    expected = {"pass": Outcome.RELEASED, "fail": Outcome.REFUSED}[status]
    assert ours.outcome is expected, ours.reasons
    if status == "fail":
        assert any("residual degrees of freedom" in r or "saturated" in r for r in ours.reasons)


def test_our_extra_regression_rules_are_the_only_difference(session, persons):
    """Residual dof 10 passes ACRO; 13 persons with 4 cases is refused here on outcome counts."""
    frame = persons.iloc[:13]
    x = _design(frame)
    y = np.zeros(13)
    y[:4] = 1.0
    assert _acro_fit(session, "logit", y, x) == "pass"
    ours = _ours("logit", y, x)
    assert ours.outcome is Outcome.REFUSED
    assert not any("residual degrees of freedom" in r for r in ours.reasons)
    assert any("4 cases is below the threshold of 10" in r for r in ours.reasons)


def test_acro_writes_its_verdict_where_we_read_it(eunomia, tmp_path: Path):
    """ACRO's own results.json (written into tmp_path) holds the status the tests compare."""
    session = acro.ACRO(suppress=False)
    units = _units(eunomia, 40220960, 20)
    session.crosstab(units.age_band, units.gender, values=units.value, aggfunc="sum")
    status = _last(session).status
    out = tmp_path / "acro"
    session.finalise(str(out), "json")
    document = json.loads((out / "results.json").read_text())
    assert document["results"]["output_0"]["status"] == status == "fail"
