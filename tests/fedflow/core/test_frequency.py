"""Frequency partials: cubes carry every margin, and merging is exact, associative, commutative."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from fedflow.core import InvalidRequest, frequency


def units(n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "age": pa.array([rng.choice(["0-9", "10-19", "20-29"]) for _ in range(n)], pa.string()),
            "sex": pa.array([rng.choice(["female", "male"]) for _ in range(n)], pa.string()),
        }
    )


def test_cube_has_all_margins_and_they_add_up() -> None:
    cube = frequency.cube(units(200, 1), ["age", "sex"]).to_pylist()
    cells = {(r["age"], r["sex"]): r["count"] for r in cube}
    assert cells[("*", "*")] == 200
    for age in ("0-9", "10-19", "20-29"):
        assert cells[(age, "*")] == sum(cells.get((age, s), 0) for s in ("female", "male"))
    for sex in ("female", "male"):
        assert cells[("*", sex)] == sum(cells.get((a, sex), 0) for a in ("0-9", "10-19", "20-29"))


def test_merge_equals_the_cube_of_pooled_units() -> None:
    parts = [units(n, seed) for seed, n in enumerate((50, 0, 120, 7))]
    pooled = frequency.cube(pa.concat_tables(parts), ["age", "sex"])
    cubes = [frequency.cube(p, ["age", "sex"]) for p in parts]
    assert frequency.merge(cubes).equals(pooled)
    assert frequency.merge(cubes[::-1]).equals(pooled)
    nested = frequency.merge([frequency.merge(cubes[:2]), frequency.merge(cubes[2:])])
    assert nested.equals(pooled)


def test_suppressed_cells_stay_suppressed_when_merged() -> None:
    a = pa.table({"sex": ["female", "*"], "count": pa.array([None, 20], pa.int64())})
    b = pa.table({"sex": ["female", "*"], "count": pa.array([30, 40], pa.int64())})
    merged = frequency.merge([a, b]).to_pylist()
    assert merged == [{"sex": "*", "count": 60}, {"sex": "female", "count": None}]
    scalar = frequency.merge(
        [pa.table({"count": pa.array([None], pa.int64())}), frequency.cube(units(3, 0), [])]
    )
    assert scalar.to_pylist() == [{"count": None}]


def test_validate_rejects_other_tables() -> None:
    with pytest.raises(InvalidRequest, match="integer 'count'"):
        frequency.validate(pa.table({"n": [1]}))
    with pytest.raises(InvalidRequest, match="must be strings"):
        frequency.validate(pa.table({"age": [1], "count": [1]}))
    with pytest.raises(InvalidRequest):
        frequency.merge([])
