"""The Cox partial: one round's risk-set sums of a proportional-hazards model on a time grid.

One row. ``columns`` (the design's column names), ``center`` (the covariate values every site
subtracts, so exp(xβ) stays in range) and ``beta`` (the round's coefficients) identify the
round; partials of different rounds never merge. Over the grid points k = 0 .. K-1 (times are
rounded up to the grid, so no exact event time leaves a site), with x centred:

- ``events`` (K): persons whose event falls on grid point k;
- ``at_risk`` (K): persons whose gridded time is k or later (the risk set of k);
- ``event_x`` (K by p, row-major): the sum of x over the events at k;
- ``s0`` (K), ``s1`` (K by p), ``s2`` (K by p by p): Σ exp(xβ), Σ x exp(xβ) and
  Σ x xᵀ exp(xβ) over the risk set of k;
- ``indicator_ones`` (p): per design column, how many persons have the value 1 when the
  column holds only 0 and 1, else null (the airlock refuses small cells).

Every sum adds up across partitions and sites, so the merged partial gives exactly the pooled
Breslow log partial likelihood, gradient and Hessian (:func:`breslow`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from fedflow.core.errors import InvalidRequest

__all__ = ["SCHEMA", "arrays", "breslow", "from_arrays", "merge", "validate"]

SCHEMA = pa.schema(
    [
        ("columns", pa.list_(pa.string())),
        ("center", pa.list_(pa.float64())),
        ("beta", pa.list_(pa.float64())),
        ("events", pa.list_(pa.int64())),
        ("at_risk", pa.list_(pa.int64())),
        ("event_x", pa.list_(pa.float64())),
        ("s0", pa.list_(pa.float64())),
        ("s1", pa.list_(pa.float64())),
        ("s2", pa.list_(pa.float64())),
        ("indicator_ones", pa.list_(pa.int64())),
    ]
)
_SUMMED = ("events", "at_risk", "event_x", "s0", "s1", "s2")
_IDENTITY = ("columns", "center", "beta")


def from_arrays(
    columns: Sequence[str],
    *,
    grid_points: int,
    interval: np.ndarray,
    event: np.ndarray,
    x: np.ndarray,
    center: np.ndarray,
    beta: np.ndarray,
) -> pa.Table:
    """The partial of persons with gridded times ``interval`` (0 .. K-1), ``event`` and x."""
    p, k = len(columns), grid_points
    if x.ndim != 2 or x.shape[1] != p or len(center) != p or len(beta) != p:
        raise InvalidRequest("the design matrix does not match its column names")
    if interval.size and (interval.min() < 0 or interval.max() >= k):
        raise InvalidRequest("a gridded time lies outside the grid")
    xc = x - center
    with np.errstate(over="ignore"):
        weight = np.exp(xc @ beta)
    if not np.all(np.isfinite(weight)):
        raise InvalidRequest("exp(xβ) overflows: the coefficients or covariates are too large")

    def at_or_after(values: np.ndarray) -> np.ndarray:
        per_point = np.bincount(interval, weights=values, minlength=k)
        return np.cumsum(per_point[::-1])[::-1]

    on_event = event.astype(bool)
    events = np.bincount(interval[on_event], minlength=k)
    at_risk = np.cumsum(np.bincount(interval, minlength=k)[::-1])[::-1]
    event_x = np.column_stack(
        [np.bincount(interval[on_event], weights=xc[on_event, j], minlength=k) for j in range(p)]
    )
    s1 = np.column_stack([at_or_after(weight * xc[:, j]) for j in range(p)])
    s2 = np.stack(
        [at_or_after(weight * xc[:, i] * xc[:, j]) for i in range(p) for j in range(p)], axis=1
    )
    ones: list[int | None] = []
    for j in range(p):
        column = x[:, j]
        is_indicator = bool(np.all((column == 0) | (column == 1)))
        ones.append(int(np.count_nonzero(column)) if is_indicator else None)
    row = {
        "columns": list(columns),
        "center": np.asarray(center, dtype=np.float64).tolist(),
        "beta": np.asarray(beta, dtype=np.float64).tolist(),
        "events": events.astype(np.int64).tolist(),
        "at_risk": at_risk.astype(np.int64).tolist(),
        "event_x": event_x.ravel().tolist(),
        "s0": at_or_after(weight).tolist(),
        "s1": s1.ravel().tolist(),
        "s2": s2.ravel().tolist(),
        "indicator_ones": ones,
    }
    return pa.table({key: [value] for key, value in row.items()}, schema=SCHEMA)


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Sum the risk-set statistics of partials of the same round (same columns, centre, beta)."""
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    for partial in partials:
        validate(partial)
    rows = [p.to_pylist()[0] for p in partials]
    first = rows[0]
    if any(r[key] != first[key] for r in rows for key in _IDENTITY):
        raise InvalidRequest("cannot merge Cox partials of different models or rounds")
    if any(len(r["events"]) != len(first["events"]) for r in rows):
        raise InvalidRequest("cannot merge Cox partials on different time grids")
    merged: dict[str, object] = {key: first[key] for key in _IDENTITY}
    for key in _SUMMED:
        merged[key] = np.sum([r[key] for r in rows], axis=0).tolist()
    ones: list[int | None] = []
    for j in range(len(first["columns"])):
        counts = [r["indicator_ones"][j] for r in rows]
        ones.append(None if any(c is None for c in counts) else sum(counts))
    merged["indicator_ones"] = ones
    return pa.table({key: [value] for key, value in merged.items()}, schema=SCHEMA)


def arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """The partial's statistics as arrays shaped (K,), (K, p) and (K, p, p)."""
    row = table.to_pylist()[0]
    p, k = len(row["columns"]), len(row["events"])
    return {
        "center": np.asarray(row["center"], dtype=np.float64),
        "beta": np.asarray(row["beta"], dtype=np.float64),
        "events": np.asarray(row["events"], dtype=np.float64),
        "at_risk": np.asarray(row["at_risk"], dtype=np.float64),
        "event_x": np.asarray(row["event_x"], dtype=np.float64).reshape(k, p),
        "s0": np.asarray(row["s0"], dtype=np.float64),
        "s1": np.asarray(row["s1"], dtype=np.float64).reshape(k, p),
        "s2": np.asarray(row["s2"], dtype=np.float64).reshape(k, p, p),
    }


def breslow(table: pa.Table) -> tuple[float, np.ndarray, np.ndarray]:
    """The Breslow log partial likelihood, its gradient and Hessian at the partial's beta.

    With d_k events at grid point k: loglik = Σ_k [βᵀ Σ_{events at k} x - d_k log S0_k], the
    gradient Σ_k [Σ_{events at k} x - d_k S1_k / S0_k] and the Hessian
    -Σ_k d_k [S2_k / S0_k - (S1_k / S0_k)(S1_k / S0_k)ᵀ]. Centring x shifts every xβ by the
    same constant, which cancels: the values equal the uncentred ones.
    """
    a = arrays(table)
    keep = a["events"] > 0
    d, s0 = a["events"][keep], a["s0"][keep]
    if np.any(s0 <= 0):
        raise InvalidRequest("a Cox partial has events outside every risk set")
    mean = a["s1"][keep] / s0[:, None]
    loglik = float(a["event_x"][keep].sum(axis=0) @ a["beta"] - np.sum(d * np.log(s0)))
    gradient = a["event_x"][keep].sum(axis=0) - (d[:, None] * mean).sum(axis=0)
    second = a["s2"][keep] / s0[:, None, None] - mean[:, :, None] * mean[:, None, :]
    hessian = -(d[:, None, None] * second).sum(axis=0)
    return loglik, gradient, hessian


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a one-row Cox partial; raise :class:`InvalidRequest` if not."""
    if table.num_rows != 1 or not table.schema.equals(SCHEMA):
        raise InvalidRequest("a Cox partial is one row of the Cox schema")
    row = table.to_pylist()[0]
    if any(row[key] is None for key in SCHEMA.names):
        raise InvalidRequest("a Cox partial's fields must not be null")
    p, k = len(row["columns"]), len(row["events"])
    if p == 0 or len(set(row["columns"])) != p or k == 0:
        raise InvalidRequest("a Cox partial needs distinct design columns and a time grid")
    sizes = {
        "center": p,
        "beta": p,
        "at_risk": k,
        "event_x": k * p,
        "s0": k,
        "s1": k * p,
        "s2": k * p * p,
        "indicator_ones": p,
    }
    if any(len(row[key]) != size for key, size in sizes.items()):
        raise InvalidRequest("a Cox partial's statistics do not match its columns and grid")
    if any(v is None for key in _SUMMED for v in row[key]):
        raise InvalidRequest("a Cox partial's statistics must not hold nulls")
    values = np.asarray([v for key in _SUMMED for v in row[key]], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InvalidRequest("a Cox partial's statistics must be finite")
    if min(row["events"]) < 0 or min(row["at_risk"]) < 0 or min(row["s0"]) < 0:
        raise InvalidRequest("a Cox partial's counts and risk-set sums must not be negative")
