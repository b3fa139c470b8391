"""The regression partial: the sufficient statistics of one Newton / IRLS round of a GLM.

One row. ``family`` and ``columns`` (the design's column names, in order) identify the model;
partials of different models never merge. Every other field adds up across partitions and
sites, so the merged partial is exactly the partial of the pooled data:

- ``n`` observations (persons), ``weight_sum`` and ``log_weight_sum`` of the prior weights;
- ``y_sum`` (events or cases), ``y_zero`` and ``y_one`` (observations whose outcome is 0 / 1);
- ``xtwx`` (XᵀWX, p by p, row-major) and ``xtwz`` (XᵀWz, the working response), the normal
  equations of the next IRLS update;
- ``deviance`` and ``loglik`` at the round's coefficients (for the Gaussian family ``loglik``
  is unused: the log-likelihood needs the pooled residual sum of squares, which is the
  deviance);
- ``indicator_ones``: per design column, how many observations have the value 1 when the
  column holds only 0 and 1, else null. The airlock uses it to refuse small cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from fedflow.core.errors import InvalidRequest

__all__ = [
    "FAMILIES",
    "SCHEMA",
    "Family",
    "from_arrays",
    "from_gram",
    "gram",
    "indicator_ones",
    "matrices",
    "merge",
    "validate",
    "weighted_gram",
]

Family = Literal["gaussian", "binomial", "poisson"]
FAMILIES: tuple[str, ...] = ("gaussian", "binomial", "poisson")

SCHEMA = pa.schema(
    [
        ("family", pa.string()),
        ("columns", pa.list_(pa.string())),
        ("n", pa.int64()),
        ("weight_sum", pa.float64()),
        ("log_weight_sum", pa.float64()),
        ("y_sum", pa.float64()),
        ("y_zero", pa.int64()),
        ("y_one", pa.int64()),
        ("xtwx", pa.list_(pa.float64())),
        ("xtwz", pa.list_(pa.float64())),
        ("deviance", pa.float64()),
        ("loglik", pa.float64()),
        ("indicator_ones", pa.list_(pa.int64())),
    ]
)
_SUMMED = ("n", "weight_sum", "log_weight_sum", "y_sum", "y_zero", "y_one", "deviance", "loglik")


def from_arrays(
    family: str,
    columns: Sequence[str],
    *,
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    working_weights: np.ndarray,
    working_response: np.ndarray,
    deviance: float,
    loglik: float,
) -> pa.Table:
    """The partial of one round over ``n`` observations (``x`` is n by p)."""
    if x.ndim != 2 or x.shape[1] != len(columns):
        raise InvalidRequest("the design matrix does not match its column names")
    xtwx, xtwz = weighted_gram(x, working_weights, working_response)
    totals = {
        "n": int(y.size),
        "weight_sum": float(weights.sum()),
        "log_weight_sum": float(np.log(weights).sum()),
        "y_sum": float(y.sum()),
        "y_zero": int(np.count_nonzero(y == 0)),
        "y_one": int(np.count_nonzero(y == 1)),
    }
    return from_gram(
        family,
        columns,
        totals,
        xtwx=xtwx,
        xtwz=xtwz,
        deviance=deviance,
        loglik=loglik,
        ones=indicator_ones(x),
    )


def from_gram(
    family: str,
    columns: Sequence[str],
    totals: Mapping[str, float | int],
    *,
    xtwx: np.ndarray,
    xtwz: np.ndarray,
    deviance: float,
    loglik: float,
    ones: Sequence[int | None],
) -> pa.Table:
    """The partial from its parts: ``totals`` (n, weight_sum, log_weight_sum, y_sum, y_zero,
    y_one), XᵀWX and XᵀWz (:func:`weighted_gram`) and the design's :func:`indicator_ones`."""
    p = len(columns)
    if xtwx.shape != (p, p) or xtwz.shape != (p,) or len(ones) != p:
        raise InvalidRequest("the design matrix does not match its column names")
    sums = {key: totals[key] for key in _SUMMED if key not in ("deviance", "loglik")}
    return _table(
        family,
        list(columns),
        {**sums, "deviance": float(deviance), "loglik": float(loglik)},
        xtwx.ravel().tolist(),
        xtwz.tolist(),
        list(ones),
    )


def weighted_gram(
    x: np.ndarray, weights: np.ndarray, response: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """XᵀWX and XᵀWz (W = diag(``weights``) ≥ 0, z = ``response``) in one BLAS call, float64.

    The columns of X and z, each scaled by √w, go side by side into one n by (p + 1) array A;
    AᵀA (a symmetric rank-k update, which numpy hands to BLAS ``syrk``) holds XᵀWX in its
    upper-left block and XᵀWz in its last column. One pass over the rows instead of a matrix
    product and a matrix-vector product, and half the multiplications of XᵀWX as a general one.
    """
    n, p = x.shape
    root = np.sqrt(weights, dtype=np.float64)
    scaled = np.empty((n, p + 1), dtype=np.float64, order="F")
    np.multiply(x, root[:, None], out=scaled[:, :p])
    np.multiply(response, root, out=scaled[:, p])
    gram = scaled.T @ scaled
    return np.ascontiguousarray(gram[:p, :p]), np.ascontiguousarray(gram[:p, p])


def gram(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """XᵀWX (W = diag(``weights``) ≥ 0), float64: the columns of X scaled by √w, then AᵀA, which
    numpy hands to BLAS ``syrk`` (half the multiplications of a general product)."""
    scaled = np.multiply(x, np.sqrt(weights, dtype=np.float64)[:, None], order="F")
    return np.ascontiguousarray(scaled.T @ scaled)


def indicator_ones(x: np.ndarray) -> list[int | None]:
    """Per column of ``x``: how many values are 1 when the column holds only 0 and 1, else None."""
    ones: list[int | None] = []
    for j in range(x.shape[1]):
        column = x[:, j]
        is_indicator = bool(np.all((column == 0) | (column == 1)))
        ones.append(int(np.count_nonzero(column)) if is_indicator else None)
    return ones


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Sum the statistics of partials of the same model (same family and design columns)."""
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    rows = [_row(p) for p in partials]
    family, columns = rows[0]["family"], rows[0]["columns"]
    if any(r["family"] != family or r["columns"] != columns for r in rows):
        raise InvalidRequest("cannot merge regression partials of different models")
    sums: dict[str, float | int] = {key: sum(r[key] for r in rows) for key in _SUMMED}
    xtwx = np.sum([r["xtwx"] for r in rows], axis=0).tolist()
    xtwz = np.sum([r["xtwz"] for r in rows], axis=0).tolist()
    ones: list[int | None] = []
    for j in range(len(columns)):
        counts = [r["indicator_ones"][j] for r in rows]
        ones.append(None if any(c is None for c in counts) else sum(counts))
    return _table(family, columns, sums, xtwx, xtwz, ones)


def matrices(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """XᵀWX (p by p) and XᵀWz (p) of a regression partial."""
    row = table.to_pylist()[0]
    p = len(row["columns"])
    return np.asarray(row["xtwx"], dtype=np.float64).reshape(p, p), np.asarray(
        row["xtwz"], dtype=np.float64
    )


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a one-row regression partial; raise :class:`InvalidRequest`."""
    _row(table)


def _row(table: pa.Table) -> dict[str, Any]:
    """The one row of a regression partial, checked (:func:`validate`)."""
    if table.num_rows != 1 or not table.schema.equals(SCHEMA):
        raise InvalidRequest("a regression partial is one row of the regression schema")
    row: dict[str, Any] = table.to_pylist()[0]
    p = len(row["columns"] or [])
    if row["family"] not in FAMILIES:
        raise InvalidRequest("a regression partial names an unknown family")
    if p == 0 or len(set(row["columns"])) != p:
        raise InvalidRequest("a regression partial needs distinct design column names")
    if len(row["xtwx"] or []) != p * p or len(row["xtwz"] or []) != p:
        raise InvalidRequest("a regression partial's matrices do not match its columns")
    if len(row["indicator_ones"] or []) != p:
        raise InvalidRequest("a regression partial's indicator counts do not match its columns")
    if any(row[key] is None for key in _SUMMED):
        raise InvalidRequest("a regression partial's totals must not be null")
    return row


def _table(
    family: str,
    columns: list[str],
    sums: dict[str, float | int],
    xtwx: list[float],
    xtwz: list[float],
    ones: list[int | None],
) -> pa.Table:
    row = {
        "family": [family],
        "columns": [columns],
        **{key: [sums[key]] for key in _SUMMED},
        "xtwx": [xtwx],
        "xtwz": [xtwz],
        "indicator_ones": [ones],
    }
    return pa.table(row, schema=SCHEMA)
