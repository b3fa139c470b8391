"""One round of an exact federated GWAS: per-variant IRLS statistics over a batch of variants.

:func:`flows.gwas.fit_gwas` calls this analysis once per round. Each site reads its phenotype
and covariate table (an analysis table, :mod:`flows.analyses.glm_table`; the model is a
formula, ``case ~ female + pc1 + pc2``) and its genotype store (:mod:`harmonize.vcf`), and
returns, for every variant of the batch, XᵀWX and XᵀWz of the design *covariates + dosage*
(the dosage last) at that variant's coefficients (:mod:`fedflow.core.gwas`). The sums equal the
pooled sums, so each variant's Newton step at the orchestrator is the pooled step and the fit
is the pooled fit. Persons with a missing call are left out of that variant's model only.

``mode``:

- ``null``: the covariates-only model (one row, :data:`fedflow.core.gwas.NULL_MODEL`), the
  null model of the score test and the start of the Wald fits;
- ``variants``: every variant of the batch (a Beacon v2 style region, ``referenceName``,
  ``start``, ``end`` 0-based half-open, or the ``variants`` keys). Coefficients are either one
  covariate vector ``beta`` shared by all variants (dosage coefficient 0: the statistics at the
  null model, which give the score test) or one vector per variant (``betas``, see
  :func:`encode_betas`). A linear model needs a single round: its weights do not depend on the
  coefficients.

A site that keeps prepared partitions (``executors.cluster.PreparedAnalysis``) reads and
densifies its genotypes once per model (a GWAS with a ``fit_id``), not once per round:
:meth:`GwasRound.prepare` builds the partition's covariate design and its persons-by-variants
int8 dosage matrix, keyed by the model and mode, and :meth:`GwasRound.local_prepared` does a
round's arithmetic on it.

The arithmetic is vectorised over variants (chunks of :data:`CHUNK` variants at a time: the
pairwise products of the covariates times the weight matrix are one matrix product), so a
genome-wide batch is a few rounds, not a round per variant.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from formulaic import model_matrix
from pydantic import Field, model_validator

from fedflow.core import (
    Analysis,
    InvalidRequest,
    OutputKind,
    Params,
    TableColumns,
    digest_json,
    gwas,
)
from flows.analyses.glm_round import GlmRoundParams, used_columns
from flows.analyses.glm_table import AnalysisTable
from flows.analyses.variants import VariantQuery, matching_variants, variant_key

__all__ = [
    "CHUNK",
    "DOSAGE",
    "GwasRound",
    "GwasRoundParams",
    "Prepared",
    "decode_betas",
    "encode_betas",
    "statistics",
]

CHUNK = 4096
DOSAGE = "dosage"
"""The name of the dosage's design column (always the last)."""
_GENOTYPE = ["person_id", "variant_id", "dosage"]
_VARIANT = ["variant_id", "chrom", "pos", "ref", "alt"]


def encode_betas(betas: np.ndarray) -> str:
    """Per-variant coefficients (m by k float64) as the ``betas`` parameter: base64 of the
    little-endian float64 values, row-major (exact, and half the size of JSON numbers)."""
    return base64.b64encode(np.ascontiguousarray(betas, dtype="<f8").tobytes()).decode()


def decode_betas(text: str, m: int, k: int) -> np.ndarray:
    """The m by k coefficients of :func:`encode_betas`; ValueError when the size is wrong."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) != m * k * 8:
        raise ValueError("betas must hold one coefficient per design column per variant")
    values = np.frombuffer(raw, dtype="<f8").reshape(m, k)
    if not np.all(np.isfinite(values)):
        raise ValueError("betas must be finite")
    return values


class GwasRoundParams(Params):
    """The model, the batch of variants, and this round's coefficients."""

    formula: str = Field(min_length=3, max_length=2000)
    """``phenotype ~ covariates`` (formulaic); the dosage is added as the last column."""
    family: Literal["gaussian", "binomial"]
    data: AnalysisTable
    columns: list[str] = Field(default_factory=list, max_length=200)
    """The covariates' design columns; set by the fitting flow."""
    mode: Literal["null", "variants"] = "variants"
    referenceName: str | None = Field(default=None, min_length=1, max_length=64)
    start: int = Field(default=0, ge=0)
    end: int | None = Field(default=None, ge=1)
    variants: list[str] | None = Field(default=None, max_length=2_000_000)
    """The batch's variant keys (``chrom:pos:ref:alt``) instead of a region."""
    beta: list[float] | None = None
    """Covariate coefficients shared by every variant (the dosage's is 0); None: start from
    the data, as a GLM's first round does."""
    betas: str | None = Field(default=None, max_length=400_000_000)
    """Per-variant coefficients (:func:`encode_betas`), one row per ``variants`` key."""
    fit_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    """The GWAS this round belongs to (set by the flow): a site may keep each partition's
    prepared design and dosages between the rounds of that GWAS. None: nothing is kept."""

    @model_validator(mode="after")
    def _checked(self) -> GwasRoundParams:
        self.glm_params()  # the formula, columns and analysis table, checked as for a GLM
        if self.data.table is None:
            raise ValueError("a GWAS reads a plain phenotype table: set data.table and columns")
        if self.beta is not None and len(self.beta) != len(self.columns):
            raise ValueError("beta must have one value per covariate design column")
        if self.betas is not None:
            if self.variants is None or self.beta is not None or self.mode == "null":
                raise ValueError("betas go with variants, without beta, in variants mode")
            decode_betas(self.betas, len(self.variants), len(self.columns) + 1)
        if self.mode == "null" and (self.variants is not None or self.referenceName is not None):
            raise ValueError("the null model takes no variants")
        if self.referenceName is not None and self.variants is not None:
            raise ValueError("name the batch by a region or by variants, not both")
        self.region()
        return self

    def glm_params(self) -> GlmRoundParams:
        return GlmRoundParams(
            formula=self.formula, family=self.family, data=self.data, columns=self.columns
        )

    def region(self) -> VariantQuery | None:
        if self.referenceName is None:
            return None
        end = self.end if self.end is not None else 2**62
        return VariantQuery(referenceName=self.referenceName, start=self.start, end=end)

    def design(self) -> list[str]:
        return [*self.columns, DOSAGE] if self.mode == "variants" else list(self.columns)


class GwasRound(Analysis[GwasRoundParams]):
    """Per-variant XᵀWX, XᵀWz and counts of a linear or logistic GWAS round."""

    name = "gwas_round"
    version = "1.0"
    output = OutputKind.GWAS
    params_model = GwasRoundParams

    def tables(self, params: GwasRoundParams) -> TableColumns:
        table = params.data.table
        assert table is not None
        declared: dict[str, list[str]] = {
            table: ["person_id", *sorted(used_columns(params.glm_params()))]
        }
        if params.mode == "variants":
            declared |= {"genotype": _GENOTYPE, "variant": _VARIANT}
        return declared

    def local(self, tables: Mapping[str, pa.Table], params: GwasRoundParams) -> pa.Table:
        return self.local_prepared(self.prepare(tables, params), params)

    # -- a partition prepared once and used every round (executors.cluster.PreparedAnalysis) --

    def prepared_key(self, params: GwasRoundParams) -> str | None:
        """What :meth:`prepare` depends on: the model and mode, not the fit id, batch or
        coefficients (None without a ``fit_id``: nothing is kept)."""
        if params.fit_id is None:
            return None
        return digest_json(params.model_dump(mode="json", include=_PREPARED_BY))

    def prepare(self, tables: Mapping[str, pa.Table], params: GwasRoundParams) -> Prepared:
        """The partition's design and outcome and, for variants, its dosage matrix (int8)."""
        persons, x, y = _phenotypes(tables, params)
        if params.mode == "null":
            return Prepared(x, y)
        variants = tables["variant"].select(_VARIANT)
        ids = np.asarray(variants["variant_id"].to_numpy(), dtype=np.int64)
        return Prepared(x, y, variants, _dense(tables["genotype"], persons, ids))

    def local_prepared(self, prepared: Prepared, params: GwasRoundParams) -> pa.Table:
        """This round's statistics over a prepared partition."""
        x, y = prepared.x, prepared.y
        if params.mode == "null":
            called = np.zeros((len(y), 1), dtype=np.int8)
            beta = None if params.beta is None else np.asarray(params.beta)
            stats = statistics(params.family, x, y, called, beta, dosage=False)
            return gwas.from_arrays(params.family, params.design(), [gwas.NULL_MODEL], **stats)
        assert prepared.variants is not None and prepared.genotypes is not None
        keys, ids, betas = _batch(prepared.variants, params)
        all_ids = np.asarray(prepared.variants["variant_id"].to_numpy(), dtype=np.int64)
        columns = _lookup(all_ids, ids)[0] if len(ids) else np.zeros(0, dtype=np.int64)
        shared = None if params.beta is None else np.asarray(params.beta)
        parts = []
        for lo in range(0, len(ids), CHUNK):
            hi = min(lo + CHUNK, len(ids))
            block = prepared.genotypes[:, columns[lo:hi]]
            coefficients = betas[lo:hi] if betas is not None else shared
            parts.append(statistics(params.family, x, y, block, coefficients))
        stats = {
            name: np.concatenate([p[name] for p in parts])
            if parts
            else np.zeros((0, *_shape(name, len(params.design()))))
            for name in _FIELDS
        }
        return gwas.from_arrays(params.family, params.design(), keys, **stats)

    def merge(self, partials: Sequence[pa.Table]) -> pa.Table:
        return gwas.merge(partials)

    def finalize(self, partial: pa.Table, params: GwasRoundParams) -> pa.Table:
        return partial


_PREPARED_BY = {"formula", "family", "data", "columns", "mode"}


@dataclass(frozen=True)
class Prepared:
    """A prepared partition: covariate design, outcome, the site's variants and dosages."""

    x: np.ndarray
    y: np.ndarray
    variants: pa.Table | None = None
    genotypes: np.ndarray | None = None
    """Persons by the site's variants (``variants`` order), int8, -1 missing."""

    @property
    def nbytes(self) -> int:
        extra = 0 if self.genotypes is None else self.genotypes.nbytes
        extra += 0 if self.variants is None else self.variants.nbytes
        return int(self.x.nbytes + self.y.nbytes + extra)


_FIELDS = ("n", "cases", "controls", "allele_count", "zwz", "xtwx", "xtwz", "indicator_ones")


def _shape(name: str, k: int) -> tuple[int, ...]:
    return {"xtwx": (k, k), "xtwz": (k,), "indicator_ones": (k,)}.get(name, ())


def _phenotypes(
    tables: Mapping[str, pa.Table], params: GwasRoundParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person ids (sorted), covariate design and outcome of the persons with complete data."""
    table = params.data.table
    assert table is not None
    used = sorted(used_columns(params.glm_params()))
    data = tables[table].select(["person_id", *used])
    frame = pd.DataFrame(
        {c: data[c].to_numpy(zero_copy_only=False).astype(float) for c in data.column_names}
    ).dropna()
    frame = frame.sort_values("person_id", kind="stable").reset_index(drop=True)
    if frame["person_id"].duplicated().any():
        raise InvalidRequest("the phenotype table holds a person more than once")
    p = len(params.columns)
    if frame.empty:
        return np.zeros(0, np.int64), np.zeros((0, p)), np.zeros(0)
    matrices = model_matrix(params.formula, frame[used], na_action="raise")
    if [str(c) for c in matrices.rhs.columns] != params.columns:
        raise InvalidRequest("the design at this site does not have the expected columns")
    x = np.asarray(matrices.rhs, dtype=np.float64)
    y = np.asarray(matrices.lhs, dtype=np.float64)[:, 0]
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidRequest("the phenotype or covariates have non-finite values")
    if params.family == "binomial" and not np.all((y == 0) | (y == 1)):
        raise InvalidRequest("a binary phenotype must be 0 or 1")
    return frame["person_id"].to_numpy(np.int64), x, y


def _batch(
    variants: pa.Table, params: GwasRoundParams
) -> tuple[pa.Array, np.ndarray, np.ndarray | None]:
    """The batch's keys, variant ids and per-variant coefficients (when given)."""
    region = params.region()
    if region is not None:
        variants = matching_variants(variants, region)
    keys = variant_key(variants).combine_chunks()
    betas = None
    if params.variants is not None:
        wanted = pa.array(params.variants, pa.string())
        at = pc.index_in(keys, value_set=wanted)
        mine = pc.is_valid(at)
        keys, variants, at = keys.filter(mine), variants.filter(mine), at.filter(mine)
        if params.betas is not None:
            k = len(params.columns) + 1
            all_betas = decode_betas(params.betas, len(params.variants), k)
            betas = all_betas[np.asarray(at.to_numpy(zero_copy_only=False), dtype=np.int64)]
    if pc.count_distinct(keys).as_py() != len(keys):
        raise InvalidRequest("the genotype store holds a variant key more than once")
    ids = np.asarray(variants["variant_id"].to_numpy(), dtype=np.int64)
    return keys, ids, betas


def _dense(genotype: pa.Table, persons: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Dosages as an int8 persons-by-variants matrix; -1 for a missing call or no call."""
    out = np.full((len(persons), len(ids)), -1, dtype=np.int8)
    if not len(persons) or not len(ids) or not genotype.num_rows:
        return out
    pid = np.asarray(genotype["person_id"].to_numpy(), dtype=np.int64)
    vid = np.asarray(genotype["variant_id"].to_numpy(), dtype=np.int64)
    dosage = genotype["dosage"].combine_chunks() if genotype.num_rows else None
    assert dosage is not None
    values = np.asarray(pc.fill_null(dosage, -1).to_numpy(), dtype=np.int8)
    rows, row_ok = _lookup(persons, pid)
    cols, col_ok = _lookup(ids, vid)
    keep = row_ok & col_ok
    out[rows[keep], cols[keep]] = values[keep]
    return out


def _lookup(universe: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in ``universe`` (distinct ids) and whether it is there."""
    lo, hi = int(universe.min()), int(universe.max())
    if hi - lo < 50_000_000:  # a dense table: one gather instead of a search
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[universe - lo] = np.arange(len(universe))
        inside = (values >= lo) & (values <= hi)
        index = np.full(len(values), -1, dtype=np.int64)
        index[inside] = table[values[inside] - lo]
        return index, index >= 0
    order = np.argsort(universe)
    at = np.clip(np.searchsorted(universe[order], values), 0, len(universe) - 1)
    found = universe[order][at] == values
    return order[at], found


def statistics(
    family: str,
    x: np.ndarray,
    y: np.ndarray,
    dosages: np.ndarray,
    beta: np.ndarray | None,
    *,
    dosage: bool = True,
) -> dict[str, np.ndarray]:
    """Per-variant statistics of :mod:`fedflow.core.gwas` for ``c`` variants at once.

    ``x`` is n by p (covariates), ``y`` n, ``dosages`` n by c int8 (-1: missing). ``beta`` is
    None (start from the data), the p covariate coefficients shared by every variant with the
    dosage's at 0 (the null model: every sum is then one matrix product over the call mask and
    the dosages), or c by p + 1 coefficients, one row per variant (dosage last). Without
    ``dosage`` the design is the covariates only (``dosages`` n by 1, all called: the null
    model). ``zwz`` is filled for a linear model only (0 otherwise: nothing uses it).
    """
    n_obs, p = x.shape
    c = dosages.shape[1]
    called = dosages >= 0
    m = called.astype(np.float64)
    gz = np.maximum(dosages, 0).astype(np.float64)
    k = p + 1 if dosage else p
    pairs = [(a, b) for a in range(p) for b in range(a, p)]
    products = np.stack([x[:, a] * x[:, b] for a, b in pairs], axis=1)
    xtwx = np.empty((c, k, k))
    xtwz = np.empty((c, k))
    gaussian = family == "gaussian"
    if beta is None or beta.ndim == 1:
        if beta is None:  # start from the data, as statsmodels and R do
            mu = y.copy() if gaussian else (y + 0.5) / 2
            eta = mu if gaussian else np.log(mu / (1 - mu))
        else:
            eta = x @ beta
            mu = eta if gaussian else 1 / (1 + np.exp(-eta))
        variance = np.ones(n_obs) if gaussian else mu * (1 - mu)
        q = variance * eta + (y - mu)  # W z per person, z = eta + (y - mu) / V
        block = (products * variance[:, None]).T @ m
        xtwz[:, :p] = ((x * q[:, None]).T @ m).T
        zwz = ((q * q) / variance) @ m if gaussian else np.zeros(c)
        if dosage:
            xtwx[:, :p, p] = xtwx[:, p, :p] = ((x * variance[:, None]).T @ gz).T
            xtwx[:, p, p] = variance @ (gz * gz)
            xtwz[:, p] = q @ gz
    else:
        eta = x @ beta[:, :p].T + gz * beta[:, p]
        mu = eta if gaussian else 1 / (1 + np.exp(-eta))
        variance = np.ones_like(eta) if gaussian else mu * (1 - mu)
        w = variance * m
        wz = (variance * eta + (y[:, None] - mu)) * m
        block = products.T @ w
        xtwz[:, :p] = (x.T @ wz).T
        zwz = (wz * wz).sum(axis=0) if gaussian else np.zeros(c)  # W = 1: (W z)² = W z²
        wg = w * gz
        xtwx[:, :p, p] = xtwx[:, p, :p] = (x.T @ wg).T
        xtwx[:, p, p] = (wg * gz).sum(axis=0)
        xtwz[:, p] = (wz * gz).sum(axis=0)
    for i, (a, b) in enumerate(pairs):
        xtwx[:, a, b] = xtwx[:, b, a] = block[i]
    ones = np.full((c, k), -1, dtype=np.int64)
    for a in range(p):
        column = x[:, a]
        if np.all((column == 0) | (column == 1)):
            ones[:, a] = np.rint(column @ m).astype(np.int64)
    if dosage:
        binary = ~np.any(dosages > 1, axis=0)
        ones[:, p] = np.where(binary, np.count_nonzero(dosages == 1, axis=0), -1)
    return {
        "n": np.count_nonzero(called, axis=0).astype(np.int64),
        "cases": np.rint((y == 1).astype(np.float64) @ m).astype(np.int64),
        "controls": np.rint((y == 0).astype(np.float64) @ m).astype(np.int64),
        "allele_count": np.rint(gz.sum(axis=0)).astype(np.int64),
        "zwz": zwz,
        "xtwx": xtwx,
        "xtwz": xtwz,
        "indicator_ones": ones,
    }
