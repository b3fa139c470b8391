"""Which variants of a site's genotype store a query names: the Beacon v2 variant coordinates.

A query names a chromosome (``referenceName``; ``chr22`` and ``22`` are the same) and either a
*sequence query* (``start`` and ``alternateBases``, optionally ``referenceBases``) or a
*range query* (``start`` and ``end``, optionally narrowed by the bases). Coordinates are
Beacon v2's: 0-based, and a range is half-open, ``[start, end)``. A VCF ``POS`` (1-based)
matches ``start`` when ``POS - 1 == start`` and lies in a range when ``start <= POS - 1 < end``.
The store's tables are written by :mod:`harmonize.vcf`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from fedflow.core import Params

__all__ = ["VARIANT_COLUMNS", "VariantQuery", "matching_variants", "same_chrom", "variant_key"]

VARIANT_COLUMNS = ["variant_id", "chrom", "pos", "ref", "alt"]


def same_chrom(name: str) -> str:
    """A chromosome name without a ``chr`` prefix, so GRCh37 and GRCh38 spellings compare."""
    return name.removeprefix("chr")


class VariantQuery(Params):
    """Beacon v2 variant coordinates (names as in the Beacon v2 request parameters)."""

    referenceName: str = Field(min_length=1, max_length=64)
    start: int = Field(ge=0)
    end: int | None = Field(default=None, ge=1)
    referenceBases: str | None = Field(
        default=None, min_length=1, max_length=1000, pattern=r"^[ACGTNacgtn*<>:A-Za-z0-9.]+$"
    )
    alternateBases: str | None = Field(
        default=None, min_length=1, max_length=1000, pattern=r"^[ACGTNacgtn*<>:A-Za-z0-9.]+$"
    )

    @model_validator(mode="after")
    def _shape(self) -> VariantQuery:
        if self.end is None and self.alternateBases is None:
            raise ValueError("a sequence query needs alternateBases (or give end for a range)")
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be greater than start (the range is [start, end))")
        return self


def matching_variants(variants: pa.Table, query: VariantQuery) -> pa.Table:
    """The rows of the ``variant`` table that ``query`` names."""
    chrom = variants["chrom"]
    stripped = pc.if_else(pc.starts_with(chrom, "chr"), pc.utf8_slice_codeunits(chrom, 3), chrom)
    mask = pc.equal(stripped, same_chrom(query.referenceName))
    zero_based = pc.subtract(variants["pos"], 1)
    if query.end is None:
        mask = pc.and_(mask, pc.equal(zero_based, query.start))
    else:
        in_range = pc.and_(
            pc.greater_equal(zero_based, query.start), pc.less(zero_based, query.end)
        )
        mask = pc.and_(mask, in_range)
    if query.referenceBases is not None:
        mask = pc.and_(mask, pc.equal(pc.utf8_upper(variants["ref"]), query.referenceBases.upper()))
    if query.alternateBases is not None:
        mask = pc.and_(mask, pc.equal(pc.utf8_upper(variants["alt"]), query.alternateBases.upper()))
    return variants.filter(mask)


def variant_key(variants: pa.Table) -> pa.ChunkedArray:
    """``chrom:pos:ref:alt`` per row: the same variant has the same key at every site."""
    return pc.binary_join_element_wise(
        variants["chrom"],
        pc.cast(variants["pos"], pa.string()),
        variants["ref"],
        variants["alt"],
        ":",
    )
