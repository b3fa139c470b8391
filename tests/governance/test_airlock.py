"""The airlock: primary and secondary suppression of frequency tables, summary protection."""

from __future__ import annotations

from itertools import product

import numpy as np
import pyarrow as pa
import pytest

from fedflow.core import OutputKind, frequency, summary
from governance import Outcome, PolicyInvalid, check, check_frequency, check_summary

MARGIN = frequency.MARGIN


def _units(columns: dict[str, list[str]]) -> pa.Table:
    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})


def _cells(**counts: int) -> pa.Table:
    """A 1-D cube over dimension ``x`` with the given positive cell counts."""
    values = [k for k, n in counts.items() for _ in range(n)]
    return frequency.cube(_units({"x": values}), ["x"])


def _as_dict(table: pa.Table) -> dict[tuple[str, ...], int | None]:
    dims = frequency.dimensions(table)
    keys = zip(*(table[d].to_pylist() for d in dims), strict=True) if dims else [()]
    return dict(zip(keys, table[frequency.COUNT].to_pylist(), strict=True))


def _recoverable(table: pa.Table) -> list[tuple[str, ...]]:
    """Suppressed cells an attacker can solve exactly (an independent check).

    Every margin equals the sum of the interior cells it covers (absent ones are zero). With
    the released cells known, a suppressed cell is determined iff adding its unit row to the
    constraint matrix over the suppressed unknowns leaves the rank unchanged.
    """
    cells = _as_dict(table)
    hidden = [k for k, v in cells.items() if v is None]
    if not hidden:
        return []
    col = {k: j for j, k in enumerate(hidden)}
    interior = [k for k in cells if MARGIN not in k]
    rows = []
    for m in cells:
        if MARGIN not in m:
            continue
        row = np.zeros(len(hidden))
        if m in col:
            row[col[m]] += 1
        for k in interior:
            if all(a in (b, MARGIN) for a, b in zip(m, k, strict=True)) and k in col:
                row[col[k]] -= 1
        rows.append(row)
    a = np.array(rows) if rows else np.zeros((0, len(hidden)))
    rank = np.linalg.matrix_rank(a) if len(rows) else 0
    out = []
    for k, j in col.items():
        unit = np.zeros((1, len(hidden)))
        unit[0, j] = 1
        if np.linalg.matrix_rank(np.vstack([a, unit])) == rank:
            out.append(k)
    return out


def _assert_protected(original: pa.Table, released: pa.Table, threshold: int) -> None:
    before, after = _as_dict(original), _as_dict(released)
    assert before.keys() == after.keys()
    for key, value in after.items():
        if value is None:
            original = before[key]
            assert original is None or original > 0  # zeros are never suppressed
        else:
            assert value == before[key]
            assert not 0 < value < threshold
    assert _recoverable(released) == []


def test_large_counts_are_released_unchanged() -> None:
    table = _cells(a=20, b=30)
    result = check(OutputKind.FREQUENCY, table, threshold=10)
    assert result.outcome is Outcome.RELEASED
    assert result.table is not None and result.table.equals(table)
    assert result.suppressed_cells == 0 and result.reasons == ()


def test_one_small_cell_in_one_dimension_needs_a_complement() -> None:
    result = check_frequency(_cells(a=2, b=50, c=60), threshold=10)
    assert result.outcome is Outcome.SUPPRESSED
    assert result.table is not None
    assert _as_dict(result.table) == {("*",): 112, ("a",): None, ("b",): None, ("c",): 60}
    assert result.suppressed_cells == 2
    assert result.reasons == (
        "1 cells below the threshold of 10 suppressed",
        "1 cells suppressed so suppressed cells cannot be recovered from margins",
    )
    _assert_protected(_cells(a=2, b=50, c=60), result.table, 10)


def test_zero_cells_are_known_zeros_and_never_complements() -> None:
    table = _cells(b=3, c=50)
    zero = pa.table({"x": pa.array(["a"]), "count": pa.array([0], pa.int64())})
    table = pa.concat_tables([table, zero]).sort_by("x")
    result = check_frequency(table, threshold=10)
    assert result.table is not None
    assert _as_dict(result.table) == {("*",): 53, ("a",): 0, ("b",): None, ("c",): None}


def test_two_by_two_with_one_small_cell_suppresses_the_whole_interior() -> None:
    units = _units(
        {
            "sex": ["F"] * 22 + ["M"] * 70,
            "age": ["0-17"] * 2 + ["18+"] * 20 + ["0-17"] * 30 + ["18+"] * 40,
        }
    )
    table = frequency.cube(units, ["sex", "age"])
    result = check_frequency(table, threshold=5)
    assert result.table is not None
    cells = _as_dict(result.table)
    assert [k for k, v in cells.items() if v is None] == [
        ("F", "0-17"),
        ("F", "18+"),
        ("M", "0-17"),
        ("M", "18+"),
    ]
    assert cells[("*", "*")] == 92 and cells[("F", "*")] == 22
    assert result.suppressed_cells == 4
    _assert_protected(table, result.table, 5)


def test_small_margins_are_suppressed_too() -> None:
    units = _units(
        {"sex": ["F"] * 3 + ["M"] * 40, "age": ["a", "b", "c"] + ["a"] * 20 + ["b"] * 20}
    )
    table = frequency.cube(units, ["sex", "age"])
    result = check_frequency(table, threshold=5)
    assert result.table is not None
    assert _as_dict(result.table)[("F", "*")] is None
    _assert_protected(table, result.table, 5)


@pytest.mark.parametrize("threshold", [0, 1])
def test_thresholds_of_zero_and_one_suppress_nothing(threshold: int) -> None:
    table = _cells(a=1, b=2)
    result = check_frequency(table, threshold=threshold)
    assert result.outcome is Outcome.RELEASED and result.suppressed_cells == 0


def test_a_negative_threshold_is_a_policy_error() -> None:
    with pytest.raises(PolicyInvalid):
        check_frequency(_cells(a=1), threshold=-1)


def test_a_dimensionless_count() -> None:
    small = frequency.cube(_units({"x": ["a"] * 3}), [])
    result = check_frequency(small, threshold=10)
    assert result.outcome is Outcome.SUPPRESSED and result.suppressed_cells == 1
    assert result.table is not None and result.table[frequency.COUNT].to_pylist() == [None]
    large = frequency.cube(_units({"x": ["a"] * 30}), [])
    assert check_frequency(large, threshold=10).outcome is Outcome.RELEASED


def test_cells_already_suppressed_stay_suppressed_and_protected() -> None:
    site_a = _cells(a=3, b=40, c=50)
    site_b = _cells(a=20, b=40, c=50)
    merged = frequency.merge([check_frequency(site_a, threshold=5).table, site_b])
    result = check_frequency(merged, threshold=5)
    assert result.table is not None
    assert _as_dict(result.table)[("a",)] is None
    assert result.reasons[0] == "2 cells arrived suppressed"
    assert _recoverable(result.table) == []


@pytest.mark.parametrize("seed", range(40))
def test_random_tables_leave_no_suppressed_cell_recoverable(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ndim = 1 + seed % 3
    levels = [list("abcde")[: rng.integers(2, 5)] for _ in range(ndim)]
    n = int(rng.integers(5, 120))
    combos = list(product(*levels))
    weights = rng.dirichlet(np.full(len(combos), 0.6))
    picks = rng.choice(len(combos), size=n, p=weights)
    units = _units({f"d{i}": [combos[p][i] for p in picks] for i in range(ndim)})
    table = frequency.cube(units, [f"d{i}" for i in range(ndim)])
    threshold = int(rng.integers(2, 12))
    result = check_frequency(table, threshold=threshold)
    if result.outcome is Outcome.REFUSED:
        pytest.fail(f"refused: {result.reasons}")
    assert result.table is not None
    _assert_protected(table, result.table, threshold)
    assert result.suppressed_cells == sum(v is None for v in _as_dict(result.table).values())


def test_the_independent_check_does_find_recoverable_cells() -> None:
    table = _cells(a=2, b=50, c=60)
    naive = table.set_column(1, "count", pa.array([112, None, 50, 60], pa.int64()))
    assert _recoverable(naive) == [("a",)]


def test_invalid_tables_and_unknown_kinds_are_refused() -> None:
    no_count = pa.table({"x": ["a"], "n": [3]})
    result = check(OutputKind.FREQUENCY, no_count, threshold=5)
    assert result.outcome is Outcome.REFUSED and result.table is None
    assert "count" in result.reasons[0]
    assert check("regression", _cells(a=20), threshold=5).outcome is Outcome.REFUSED
    assert check(OutputKind.SUMMARY, _cells(a=20), threshold=5).outcome is Outcome.REFUSED
    repeated = pa.concat_tables([_cells(a=20), _cells(a=20)])
    assert check_frequency(repeated, threshold=5).outcome is Outcome.REFUSED


# -- summaries -------------------------------------------------------------------------------


def _summary(n: int, seed: int = 0, alpha: float = 0.02, persons: int | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(3.0, 1.0, n) - 10
    return summary.from_values(values, alpha, persons=n if persons is None else persons)


def test_a_summary_of_too_few_persons_is_refused() -> None:
    result = check(OutputKind.SUMMARY, _summary(9), threshold=10)
    assert result.outcome is Outcome.REFUSED and result.table is None
    assert result.reasons == ("9 persons is below the threshold of 10",)
    many_values = check(OutputKind.SUMMARY, _summary(40, persons=9), threshold=10)
    assert many_values.outcome is Outcome.REFUSED
    assert check(OutputKind.SUMMARY, _summary(40, persons=10), threshold=10).table is not None


def test_extremes_are_withheld_unless_the_policy_releases_them() -> None:
    table = _summary(200)
    withheld = check_summary(table, threshold=1)
    assert withheld.table is not None
    assert withheld.table["min"].to_pylist() == [None] and withheld.table["max"].to_pylist() == [
        None
    ]
    assert withheld.suppressed_cells == 2
    assert withheld.reasons == ("minimum and maximum withheld by policy",)
    assert withheld.outcome is Outcome.SUPPRESSED
    kept = check_summary(table, threshold=1, release_extremes=True)
    assert kept.outcome is Outcome.RELEASED and kept.table is not None and kept.table.equals(table)


@pytest.mark.parametrize(("n", "threshold", "seed"), [(200, 10, 1), (1000, 11, 2), (57, 50, 3)])
def test_coarsened_buckets_hold_at_least_the_threshold(n: int, threshold: int, seed: int) -> None:
    table = _summary(n, seed)
    before = summary.ordered_buckets(table)
    result = check_summary(table, threshold=threshold)
    assert result.table is not None
    summary.validate(result.table)
    after = summary.ordered_buckets(result.table)
    assert all(b[2] >= threshold for b in after)
    assert sum(b[2] for b in after) == sum(b[2] for b in before) == n
    assert result.suppressed_cells == 2 + len(before) - len(after)
    assert {(b[0], b[1]) for b in after} <= {(b[0], b[1]) for b in before}
    assert len(after) < len(before)
    for column in ("n", "mean", "m2", "alpha"):
        assert result.table[column].equals(table[column])


def test_runs_keep_the_key_of_their_largest_bucket_and_a_short_tail_joins() -> None:
    table = summary.with_buckets(
        _summary(20), [(1, 1, 3), (1, 2, 5), (1, 3, 4), (1, 4, 6), (1, 5, 2)]
    )
    result = check_summary(table, threshold=8, release_extremes=True)
    assert result.table is not None
    assert summary.ordered_buckets(result.table) == [(1, 2, 8), (1, 4, 12)]
    assert result.suppressed_cells == 3
    assert result.reasons == ("3 sketch buckets merged into neighbours so each holds at least 8",)


def test_an_inconsistent_sketch_is_refused() -> None:
    table = summary.with_buckets(_summary(20), [(1, 1, 3)])
    assert check_summary(table, threshold=2).outcome is Outcome.REFUSED
