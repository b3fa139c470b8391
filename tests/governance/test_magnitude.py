"""Magnitude tables: the partial, each airlock rule, and the analysis on the Eunomia data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fedflow.core import OutputKind, from_ipc, magnitude, to_ipc
from flows.analyses.magnitude_table import MagnitudeTable
from governance.airlock import Outcome, check, check_magnitude
from governance.airlock.magnitude import dominance, sensitive_cells
from governance.errors import PolicyInvalid


def _records(cells: dict[tuple[str, str], list[float]]) -> pa.Table:
    """One record per person: {(group, sex): [each person's value]}."""
    rows: dict[str, list] = {"person_id": [], "group": [], "sex": [], "value": []}
    person = 0
    for (group, sex), values in cells.items():
        for value in values:
            person += 1
            rows["person_id"].append(person)
            rows["group"].append(group)
            rows["sex"].append(sex)
            rows["value"].append(value)
    return pa.table(rows)


def _cube(cells: dict[tuple[str, str], list[float]]) -> pa.Table:
    return magnitude.cube(_records(cells), ["group", "sex"], "value")


def _released(result, group: str, sex: str) -> tuple[int | None, float | None]:
    assert result.table is not None
    for row in result.table.to_pylist():
        if (row["group"], row["sex"]) == (group, sex):
            return row["persons"], row["sum"]
    raise KeyError((group, sex))


SAFE = {
    ("a", "f"): [10.0 + i for i in range(12)],
    ("a", "m"): [20.0 + i for i in range(15)],
    ("b", "f"): [5.0 + i for i in range(11)],
    ("b", "m"): [7.0 + i for i in range(13)],
}


def test_the_partial_sums_each_persons_records_and_merges_exactly():
    records = pa.table(
        {
            "person_id": [1, 1, 2, 3, 3, 4],
            "group": ["a", "a", "a", "b", "b", "b"],
            "sex": ["f", "f", "m", "f", "f", "m"],
            "value": [1.0, 2.0, 5.0, 4.0, None, 6.0],
        }
    )
    whole = magnitude.cube(records, ["group", "sex"], "value")
    magnitude.validate(whole)
    cell = {(r["group"], r["sex"]): r for r in whole.to_pylist()}
    assert cell[("a", "f")]["persons"] == 1 and cell[("a", "f")]["top"] == [3.0]
    assert cell[("*", "*")]["persons"] == 4 and cell[("*", "*")]["sum"] == 18.0
    assert cell[("*", "*")]["top"] == [6.0, 5.0, 4.0, 3.0]
    halves = [records.slice(0, 3), records.slice(3)]
    parts = [magnitude.cube(h, ["group", "sex"], "value") for h in halves]
    assert magnitude.merge(parts).equals(whole)
    public = magnitude.merge([magnitude.public(p) for p in parts])
    assert public.column_names == ["group", "sex", "persons", "sum"]
    assert public.equals(magnitude.public(whole))


def test_a_safe_table_is_released_without_the_contributions():
    table = _cube(SAFE)
    result = check(OutputKind.MAGNITUDE, table, threshold=10)
    assert result.outcome is Outcome.RELEASED and result.suppressed_cells == 0
    assert result.table is not None and result.table.equals(magnitude.public(table))
    released = from_ipc(to_ipc(result.table))
    assert not set(released.column_names) & set(magnitude.SITE_ONLY)


def test_the_threshold_rule_suppresses_small_cells_and_protects_them():
    cells = {**SAFE, ("b", "f"): [5.0, 6.0, 7.0]}
    result = check_magnitude(_cube(cells), threshold=10)
    assert result.outcome is Outcome.SUPPRESSED
    assert _released(result, "b", "f") == (None, None)
    assert "1 cells below the threshold of 10 persons" in result.reasons
    # b,f could be recovered from the margins unless complements are suppressed too.
    assert any("cannot be recovered from margins" in r for r in result.reasons)
    assert result.suppressed_cells >= 4


def test_one_dominant_contributor_fails_the_nk_and_p_percent_rules():
    cells = {**SAFE, ("a", "m"): [1.0] * 14 + [1000.0]}
    table = _cube(cells)
    failing = sensitive_cells(table, threshold=10)
    rows = list(zip(table["group"].to_pylist(), table["sex"].to_pylist(), strict=True))
    dominated = {rows[i] for i in failing["nk"]}
    assert dominated == {("a", "m")}  # in the margins the others outweigh it
    assert ("a", "m") in {rows[i] for i in failing["p%"]}
    result = check_magnitude(table, threshold=10)
    assert result.outcome is Outcome.SUPPRESSED
    assert _released(result, "a", "m") == (None, None)
    assert any("dominated by their 2 largest" in r for r in result.reasons)
    # As for counts, a 2 x 2 table with one suppressed cell loses its interior, keeps margins.
    assert result.suppressed_cells == 4
    assert _released(result, "b", "*") == (24, sum(SAFE[("b", "f")] + SAFE[("b", "m")]))


def test_the_p_percent_rule_alone():
    # (n, k): the n largest hold at least k of the sum. p%: the rest (sum - x1 - x2) is less
    # than p of the largest, so the second largest can estimate it to within p.
    assert dominance(100.0, [45.0, 45.0, 1.0], n=2, k=0.9, p=0.1) == ["nk"]
    assert dominance(100.0, [60.0, 36.0, 2.0], n=2, k=0.9, p=0.1) == ["nk", "p%"]
    assert dominance(100.0, [40.0, 39.0, 3.0], n=2, k=0.9, p=0.1) == []
    assert dominance(100.0, [80.0, 15.0, 5.0], n=3, k=0.99, p=0.1) == ["nk", "p%"]
    assert dominance(100.0, [85.0, 6.0, 5.0], n=2, k=0.95, p=0.1) == []
    assert dominance(100.0, [91.0, 5.0, 4.0], n=2, k=0.99, p=0.1) == ["p%"]
    assert dominance(0.0, [0.0, 0.0], n=2, k=0.9, p=0.1) == ["p%"]  # all zeros: as ACRO


def test_negative_contributions_suppress_the_cell():
    cells = {**SAFE, ("b", "m"): [7.0 + i for i in range(12)] + [-3.0]}
    result = check_magnitude(_cube(cells), threshold=10)
    assert _released(result, "b", "m") == (None, None)
    assert any("negative contributions" in r for r in result.reasons)


def test_invalid_tables_and_parameters():
    public = magnitude.public(_cube(SAFE))
    refused = check_magnitude(public, threshold=10)
    assert refused.outcome is Outcome.REFUSED and "contributions" in refused.reasons[0]
    bad = _cube(SAFE).set_column(2, "persons", pa.array(np.arange(9, dtype=np.int32)))
    assert check_magnitude(bad, threshold=10).outcome is Outcome.REFUSED
    with pytest.raises(PolicyInvalid):
        check_magnitude(_cube(SAFE), threshold=10, nk_n=magnitude.TOP + 1)


def test_the_analysis_on_eunomia_releases_days_supply_without_dominant_persons(eunomia):
    analysis = MagnitudeTable()
    params = analysis.parse_params(
        {"domain": "drug", "concept_ids": [19126352], "column": "days_supply"}
    )
    data = {name: eunomia[name] for name in analysis.tables(params)}
    partial = analysis.local(data, params)
    units = analysis.units(data, params)
    total = next(r for r in partial.to_pylist() if r["age_band"] == r["gender"] == "*")
    same, members = analysis.local_members(data, params)  # the cohort the site compares
    assert same.equals(partial) and sorted(members.to_pylist()) == sorted(units["person_id"])
    assert total["persons"] == units.height and total["sum"] == pytest.approx(units["value"].sum())
    result = check(OutputKind.MAGNITUDE, partial, threshold=10)
    assert result.outcome is Outcome.SUPPRESSED
    assert any("dominated" in r for r in result.reasons)
    assert result.table is not None
    # A released cell's largest contributor is below 90 % with the second, and the rest hides it.
    for row, released in zip(partial.to_pylist(), result.table.to_pylist(), strict=True):
        if released["sum"] is not None and row["persons"]:
            assert row["persons"] >= 10 and not dominance(row["sum"], row["top"])
    final = analysis.finalize(result.table, params)
    assert "mean" in final.column_names and "top" not in final.column_names
    assert analysis.parse_params(
        {"domain": "drug", "concept_ids": [1], "column": "days_supply", "clamp": [0, 90]}
    ).clamp == (0, 90)
    with pytest.raises(Exception, match="not a quantity"):
        analysis.parse_params({"domain": "drug", "concept_ids": [1], "column": "person_id"})
