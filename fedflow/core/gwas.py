"""The GWAS partial: per-variant sufficient statistics of one round of per-variant regressions.

One row per variant, keyed by ``variant`` (``chrom:pos:ref:alt``, the same key at every site).
For variant ``v`` the design is the covariates plus the variant's dosage (last column), over
the persons with a called genotype and complete covariates and phenotype. Every statistic adds
up across partitions and sites, so the merged row is exactly the row of the pooled data:

- ``n`` observations, ``cases`` and ``controls`` (outcome 1 / 0), ``allele_count`` (copies of
  the alternate allele among the ``n``: ``2n - allele_count`` copies of the reference);
- ``xtwx`` (XᵀWX, k by k, row-major) and ``xtwz`` (XᵀWz) at the round's coefficients of this
  variant: the normal equations of its next Newton / IRLS update;
- ``zwz`` (zᵀWz; for a linear model yᵀy, so the residual sum of squares at the solution is
  ``zwz - βᵀ xtwz`` without another round);
- ``indicator_ones``: per design column, how many of the ``n`` have the value 1 when the column
  holds only 0 and 1, else -1 (the airlock refuses small cells of such columns).

The model is named in the schema's metadata (``family`` and the design ``columns``); partials
of different models never merge. A row whose statistics are all null is *withheld*: a site's
airlock left that variant out of its release (:func:`withhold`). Merged, a variant withheld
anywhere stays withheld (null), so a federated answer is never a silent subset of the sites.
A variant a site does not hold at all (absent from its partial) adds nothing, like a missing
call. The null model of a score test (covariates only) is one row keyed :data:`NULL_MODEL`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedflow.core.errors import InvalidRequest

__all__ = [
    "GWAS_FAMILIES",
    "NULL_MODEL",
    "GwasArrays",
    "arrays",
    "from_arrays",
    "merge",
    "model",
    "schema",
    "validate",
    "withhold",
]

GWAS_FAMILIES = ("gaussian", "binomial")
NULL_MODEL = "(covariates)"
"""The variant key of the null model's row (covariates only, no dosage column)."""
_COUNTS = ("n", "cases", "controls", "allele_count")


def schema(family: str, columns: Sequence[str]) -> pa.Schema:
    """The partial's schema for a model with these design columns (``k = len(columns)``)."""
    k = len(columns)
    meta = {b"family": family.encode(), b"columns": json.dumps(list(columns)).encode()}
    return pa.schema(
        [
            ("variant", pa.string()),
            *[(name, pa.int64()) for name in _COUNTS],
            ("zwz", pa.float64()),
            ("xtwx", pa.list_(pa.float64(), k * k)),
            ("xtwz", pa.list_(pa.float64(), k)),
            ("indicator_ones", pa.list_(pa.int64(), k)),
        ],
        metadata=meta,
    )


def model(table: pa.Table) -> tuple[str, list[str]]:
    """The family and design columns a partial's metadata names."""
    meta = table.schema.metadata or {}
    if b"family" not in meta or b"columns" not in meta:
        raise InvalidRequest("a GWAS partial must name its family and design columns")
    try:
        columns = json.loads(meta[b"columns"])
    except ValueError:
        raise InvalidRequest("a GWAS partial's design columns are not readable") from None
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidRequest("a GWAS partial's design columns must be a list of names")
    return meta[b"family"].decode(), columns


@dataclass(frozen=True)
class GwasArrays:
    """A partial as numpy arrays (``m`` variants, ``k`` design columns); NaN / -1 where withheld."""

    variant: list[str]
    withheld: np.ndarray  # (m,) bool
    n: np.ndarray  # (m,) int64
    cases: np.ndarray
    controls: np.ndarray
    allele_count: np.ndarray
    zwz: np.ndarray  # (m,) float64
    xtwx: np.ndarray  # (m, k, k)
    xtwz: np.ndarray  # (m, k)
    indicator_ones: np.ndarray  # (m, k) int64


def from_arrays(
    family: str,
    columns: Sequence[str],
    variant: Sequence[str] | pa.Array,
    *,
    n: np.ndarray,
    cases: np.ndarray,
    controls: np.ndarray,
    allele_count: np.ndarray,
    zwz: np.ndarray,
    xtwx: np.ndarray,
    xtwz: np.ndarray,
    indicator_ones: np.ndarray,
    withheld: np.ndarray | None = None,
) -> pa.Table:
    """The partial of ``m`` variants (``xtwx`` is m by k by k, ``xtwz`` m by k)."""
    k = len(columns)
    m = len(variant)
    if xtwx.shape != (m, k, k) or xtwz.shape != (m, k) or indicator_ones.shape != (m, k):
        raise InvalidRequest("the GWAS statistics do not match the design columns")
    mask = None if withheld is None or not withheld.any() else pa.array(withheld)

    def fixed(values: np.ndarray, size: int, kind: pa.DataType) -> pa.Array:
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), kind)
        return pa.FixedSizeListArray.from_arrays(flat, size, mask=mask)

    def plain(values: np.ndarray, kind: pa.DataType) -> pa.Array:
        return pa.array(values, kind, mask=None if mask is None else withheld)

    return pa.table(
        [
            pa.array(variant, pa.string()),
            *[plain(v, pa.int64()) for v in (n, cases, controls, allele_count)],
            plain(zwz, pa.float64()),
            fixed(xtwx, k * k, pa.float64()),
            fixed(xtwz, k, pa.float64()),
            fixed(indicator_ones, k, pa.int64()),
        ],
        schema=schema(family, columns),
    )


def arrays(table: pa.Table) -> GwasArrays:
    """The statistics of a (validated) partial as numpy arrays."""
    _, columns = model(table)
    k, m = len(columns), table.num_rows
    withheld = np.asarray(table["n"].is_null().to_numpy(zero_copy_only=False), dtype=bool)

    def counts(name: str) -> np.ndarray:
        return np.asarray(pc.fill_null(table[name], 0).to_numpy(), dtype=np.int64)

    def fixed(name: str, size: int) -> np.ndarray:
        column = table[name].combine_chunks()
        values = column.values.slice(column.offset * size, m * size)
        return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(m, size)

    xtwx = fixed("xtwx", k * k).astype(np.float64)
    xtwz = fixed("xtwz", k).astype(np.float64)
    ones = fixed("indicator_ones", k).astype(np.int64)
    xtwx[withheld], xtwz[withheld], ones[withheld] = np.nan, np.nan, -1
    return GwasArrays(
        variant=table["variant"].to_pylist(),
        withheld=withheld,
        n=counts("n"),
        cases=counts("cases"),
        controls=counts("controls"),
        allele_count=counts("allele_count"),
        zwz=np.asarray(pc.fill_null(table["zwz"], np.nan).to_numpy(), dtype=np.float64),
        xtwx=xtwx.reshape(m, k, k),
        xtwz=xtwz,
        indicator_ones=ones,
    )


def merge(partials: Sequence[pa.Table]) -> pa.Table:
    """Sum the statistics per variant; a variant withheld in any partial stays withheld."""
    if not partials:
        raise InvalidRequest("nothing to merge: no partials")
    for partial in partials:
        validate(partial)
    family, columns = model(partials[0])
    if any(model(p) != (family, columns) for p in partials[1:]):
        raise InvalidRequest("cannot merge GWAS partials of different models")
    parts = [arrays(p) for p in partials]
    keys = pa.chunked_array([p["variant"] for p in partials]).combine_chunks()
    encoded = pc.dictionary_encode(keys)
    index = np.asarray(encoded.indices.to_numpy(), dtype=np.int64)
    order = encoded.dictionary
    m, k = len(order), len(columns)

    def total(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(len(index), -1)
        out = np.zeros((m, flat.shape[1]), dtype=np.float64)
        for j in range(flat.shape[1]):
            out[:, j] = np.bincount(index, weights=flat[:, j], minlength=m)
        return out

    withheld = np.bincount(index, weights=np.concatenate([p.withheld for p in parts]), minlength=m)
    stacked = {
        name: np.concatenate([getattr(p, name) for p in parts])
        for name in ("n", "cases", "controls", "allele_count", "zwz", "xtwx", "xtwz")
    }
    ones = np.concatenate([p.indicator_ones for p in parts])
    not_indicator = total((ones < 0).astype(np.float64)) > 0
    ones_sum = np.rint(total(np.where(ones < 0, 0, ones))).astype(np.int64)
    ones_sum[not_indicator] = -1
    held = withheld > 0
    safe = {name: np.where(np.isnan(v), 0.0, v) for name, v in stacked.items()}

    def summed(name: str) -> np.ndarray:
        return total(safe[name])[:, 0] if safe[name].ndim == 1 else total(safe[name])

    return from_arrays(
        family,
        columns,
        order,
        **{name: np.rint(summed(name)).astype(np.int64) for name in _COUNTS},
        zwz=summed("zwz"),
        xtwx=summed("xtwx").reshape(m, k, k),
        xtwz=summed("xtwz"),
        indicator_ones=ones_sum,
        withheld=held,
    )


def withhold(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """``table`` with the statistics of the variants where ``mask`` is true set to null."""
    family, columns = model(table)
    data = arrays(table)
    held = data.withheld | mask
    return from_arrays(
        family,
        columns,
        table["variant"].combine_chunks(),
        n=data.n,
        cases=data.cases,
        controls=data.controls,
        allele_count=data.allele_count,
        zwz=np.where(held, 0.0, data.zwz),
        xtwx=np.where(held[:, None, None], 0.0, data.xtwx),
        xtwz=np.where(held[:, None], 0.0, data.xtwz),
        indicator_ones=np.where(held[:, None], 0, data.indicator_ones),
        withheld=held,
    )


def validate(table: pa.Table) -> None:
    """Check that ``table`` is a GWAS partial; raise :class:`InvalidRequest`."""
    family, columns = model(table)
    if family not in GWAS_FAMILIES:
        raise InvalidRequest("a GWAS partial names an unknown family")
    if not columns or len(set(columns)) != len(columns):
        raise InvalidRequest("a GWAS partial needs distinct design column names")
    if not table.schema.equals(schema(family, columns)):
        raise InvalidRequest("a GWAS partial does not have the GWAS schema")
    if table["variant"].null_count:
        raise InvalidRequest("every row of a GWAS partial names its variant")
    if pc.count_distinct(table["variant"]).as_py() != table.num_rows:
        raise InvalidRequest("a GWAS partial names a variant more than once")
    nulls = {table[name].null_count for name in (*_COUNTS, "zwz", "xtwx", "xtwz")}
    if len(nulls | {table["indicator_ones"].null_count}) != 1:
        raise InvalidRequest("a withheld GWAS row must be withheld in every statistic")
