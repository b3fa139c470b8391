"""The summary partial: count, mean, spread, extremes and a quantile sketch of one variable.

One row with ``n`` (values), ``persons`` (distinct persons contributing them: the count the
airlock thresholds; partitions and sites hold disjoint persons, so it adds up), ``mean`` and
``m2`` (sum of squared deviations, merged with Chan et al.'s parallel formula so the federated
mean and standard deviation equal the pooled ones to rounding), ``min`` / ``max`` (null when
withheld), ``alpha`` and ``buckets``: a DDSketch-style log-bucket histogram with relative
accuracy ``alpha``. Buckets hold only counts, never values, and add up across partitions and
sites, so the merged sketch equals the sketch of the pooled data exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from fedflow.core.errors import InvalidRequest

__all__ = [
    "BUCKET_TYPE",
    "SCHEMA",
    "Bucket",
    "bucket_value",
    "from_values",
    "merge",
    "ordered_buckets",
    "quantiles",
    "validate",
    "with_buckets",
]

BUCKET_TYPE = pa.struct([("sign", pa.int8()), ("key", pa.int32()), ("count", pa.int64())])
SCHEMA = pa.schema(
    [
        ("n", pa.int64()),
        ("persons", pa.int64()),
        ("mean", pa.float64()),
        ("m2", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("alpha", pa.float64()),
        ("buckets", pa.list_(BUCKET_TYPE)),
    ]
)

Bucket = tuple[int, int, int]
"""``(sign, key, count)``: sign is -1, 0 or 1; covers sign * (gamma^(key-1), gamma^key]."""


def _gamma(alpha: float) -> float:
    return (1 + alpha) / (1 - alpha)


def from_values(values: np.ndarray, alpha: float, *, persons: int) -> pa.Table:
    """The summary partial of ``values`` (NaN already removed) from ``persons`` persons."""
    if not 0 < alpha < 1:
        raise InvalidRequest("sketch relative accuracy must lie in (0, 1)")
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else 0.0
    m2 = float(((x - mean) ** 2).sum()) if n else 0.0
    log_gamma = math.log(_gamma(alpha))
    buckets: list[Bucket] = []
    for sign in (-1, 1):
        mags = np.abs(x[x < 0] if sign < 0 else x[x > 0])
        if mags.size:
            keys, counts = np.unique(
                np.ceil(np.log(mags) / log_gamma).astype(np.int64), return_counts=True
            )
            buckets += [(sign, int(k), int(c)) for k, c in zip(keys, counts, strict=True)]
    zeros = int((x == 0).sum())
    if zeros:
        buckets.append((0, 0, zeros))
    lo, hi = (float(x.min()), float(x.max())) if n else (None, None)
    return _table(n, persons, mean, m2, lo, hi, alpha, buckets)


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Merge summary partials: Chan's formula for the moments, sums for the buckets."""
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    rows = [p.to_pylist()[0] for p in partials]
    alphas = {r["alpha"] for r in rows}
    if len(alphas) != 1:
        raise InvalidRequest("cannot merge sketches of different relative accuracy")
    n, mean, m2 = 0, 0.0, 0.0
    for r in rows:
        if r["n"] == 0:
            continue
        total = n + r["n"]
        delta = r["mean"] - mean
        mean += delta * r["n"] / total
        m2 += r["m2"] + delta * delta * n * r["n"] / total
        n = total
    counts: dict[tuple[int, int], int] = {}
    for r in rows:
        for b in r["buckets"]:
            counts[(b["sign"], b["key"])] = counts.get((b["sign"], b["key"]), 0) + b["count"]
    lows = [r["min"] for r in rows if r["n"]]
    highs = [r["max"] for r in rows if r["n"]]
    lo = None if any(v is None for v in lows) or not lows else min(lows)
    hi = None if any(v is None for v in highs) or not highs else max(highs)
    buckets = [(s, k, c) for (s, k), c in counts.items()]
    persons = sum(r["persons"] for r in rows)
    return _table(n, persons, mean, m2, lo, hi, alphas.pop(), buckets)


def ordered_buckets(table: pa.Table) -> list[Bucket]:
    """The buckets of a summary partial in increasing order of the values they cover."""
    buckets = [(b["sign"], b["key"], b["count"]) for b in table["buckets"][0].as_py() or []]
    return sorted(buckets, key=lambda b: (b[0], b[1] if b[0] > 0 else -b[1]))


def with_buckets(table: pa.Table, buckets: Sequence[Bucket]) -> pa.Table:
    """A copy of ``table`` whose sketch holds ``buckets``."""
    row = table.to_pylist()[0]
    return _table(
        row["n"],
        row["persons"],
        row["mean"],
        row["m2"],
        row["min"],
        row["max"],
        row["alpha"],
        buckets,
    )


def bucket_value(sign: int, key: int, alpha: float) -> float:
    """The value a bucket stands for: within relative error ``alpha`` of any value in it."""
    if sign == 0:
        return 0.0
    gamma = _gamma(alpha)
    return sign * 2 * gamma**key / (gamma + 1)


def quantiles(table: pa.Table, qs: Sequence[float]) -> list[float | None]:
    """Quantiles estimated from the sketch (None when the sketch is empty)."""
    buckets = ordered_buckets(table)
    total = sum(b[2] for b in buckets)
    alpha = float(table["alpha"][0].as_py())
    out: list[float | None] = []
    for q in qs:
        if total == 0:
            out.append(None)
            continue
        rank, seen = q * (total - 1), 0
        for sign, key, count in buckets:
            seen += count
            if seen > rank:
                out.append(bucket_value(sign, key, alpha))
                break
    return out


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a one-row summary partial; raise :class:`InvalidRequest` if not."""
    if table.num_rows != 1 or not table.schema.equals(SCHEMA):
        raise InvalidRequest("a summary partial is one row of the summary schema")


def _table(
    n: int,
    persons: int,
    mean: float,
    m2: float,
    lo: float | None,
    hi: float | None,
    alpha: float,
    buckets: Sequence[Bucket],
) -> pa.Table:
    ordered = sorted(buckets, key=lambda b: (b[0], b[1] if b[0] > 0 else -b[1]))
    row = {
        "n": [n],
        "persons": [persons],
        "mean": [mean],
        "m2": [m2],
        "min": [lo],
        "max": [hi],
        "alpha": [alpha],
        "buckets": [[{"sign": s, "key": k, "count": c} for s, k, c in ordered]],
    }
    return pa.table(row, schema=SCHEMA)
