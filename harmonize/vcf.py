"""VCF genotypes into the site's genotype store: parquet by genomic region, one row per call.

The VCF is read with cyvcf2 (htslib), bgzipped or plain. Every record with ``n`` alternate
alleles becomes ``n`` biallelic variants (``ALT`` split; the alleles are not trimmed or
left-normalised). The store is a folder the site catalogue reads as tables:

``variant.parquet``
    ``variant_id`` (int64, 1.. in file order), ``chrom``, ``pos`` (the VCF ``POS``, 1-based),
    ``ref``, ``alt``, ``id`` (the VCF ``ID``, null for ``.``), ``bin``.
``genotype.parquet``
    One row per sample per variant: ``person_id``, ``variant_id``, ``chrom``, ``bin`` and
    ``dosage`` (int8: copies of the alternate allele, 0/1/2, 0/1 for a haploid call). A call
    with any missing allele (``./.``, ``./1``) is kept as a row whose ``dosage`` is **null**.
    After a split, a call of another alternate allele counts 0 copies of this one.
    Rows are ordered by region and each region is its own row group, so a reader prunes
    regions by the ``chrom``/``bin`` statistics.
``genotype_sample.parquet``
    ``sample_id`` (the VCF column name), ``person_id`` (the OMOP person) and ``population``
    (a label such as a 1000 Genomes super-population, null when unknown).

**Regions.** A genomic bin is the half-open, 0-based interval ``[bin * size, (bin + 1) * size)``
of ``POS - 1`` (the Beacon v2 / UCSC convention): ``bin = (POS - 1) // size``. Queries over a
region use the same convention (see :func:`in_region`).

**Sample sheet.** A PLINK ``.fam`` (whitespace-separated FID, IID, father, mother, sex,
phenotype; the IID is the VCF sample, and the person ids are ``first_person_id`` onward in the
file's order), or a CSV with a header holding ``sample_id`` and ``person_id``.

**Labels** (optional): a tab-separated file with a header whose first column is the sample
(``#sample superpop population`` as 1000 Genomes ships it). A VCF sample of the form
``PREFIX::NAME`` is also looked up as ``NAME``.

Errors name the file and the record (its number and position), never a genotype value.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harmonize.errors import InvalidSource, SourceNotFound

__all__ = [
    "DEFAULT_BIN_SIZE",
    "GENOTYPE_SCHEMA",
    "VARIANT_SCHEMA",
    "GenotypeImport",
    "import_vcf",
    "in_region",
    "read_labels",
    "read_sample_sheet",
    "region_bin",
]

log = logging.getLogger(__name__)

DEFAULT_BIN_SIZE = 1_000_000
MAX_ROW_GROUP = 4_000_000

VARIANT_SCHEMA = pa.schema(
    [
        ("variant_id", pa.int64()),
        ("chrom", pa.string()),
        ("pos", pa.int64()),
        ("ref", pa.string()),
        ("alt", pa.string()),
        ("id", pa.string()),
        ("bin", pa.int32()),
    ]
)
GENOTYPE_SCHEMA = pa.schema(
    [
        ("person_id", pa.int64()),
        ("variant_id", pa.int64()),
        ("chrom", pa.string()),
        ("bin", pa.int32()),
        ("dosage", pa.int8()),
    ]
)
SAMPLE_SCHEMA = pa.schema(
    [("sample_id", pa.string()), ("person_id", pa.int64()), ("population", pa.string())]
)


@dataclass(frozen=True)
class GenotypeImport:
    """What an import wrote: counts only."""

    out: Path
    records: int
    """VCF records read."""
    variants: int
    """Biallelic variants written (records with several ALT alleles count once per allele)."""
    samples: int
    genotypes: int
    """Genotype rows written (variants x samples), missing calls included."""
    missing: int
    """Genotype rows whose call is missing (null dosage)."""
    multiallelic_records: int
    regions: int
    """Region row groups written."""


def region_bin(pos: int, size: int = DEFAULT_BIN_SIZE) -> int:
    """The bin of a 1-based VCF ``POS``: bins are 0-based half-open ``[b*size, (b+1)*size)``."""
    return (pos - 1) // size


def in_region(pos: int, start: int, end: int) -> bool:
    """Whether 1-based ``pos`` lies in the 0-based half-open region ``[start, end)``."""
    return start <= pos - 1 < end


def read_sample_sheet(path: Path, *, first_person_id: int = 1) -> dict[str, int]:
    """Sample id to person id from a ``.fam`` or a ``sample_id,person_id`` CSV (see module)."""
    if not path.is_file():
        raise SourceNotFound(f"sample sheet {path} does not exist")
    out: dict[str, int] = {}
    if path.suffix == ".fam":
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise InvalidSource(f"{path} line {line_no}: a .fam line needs 6 fields")
            _add(out, fields[1], first_person_id + len(out), path, line_no)
        return out
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"sample_id", "person_id"} <= set(reader.fieldnames or ()):
            raise InvalidSource(f"{path}: a sample sheet CSV needs columns sample_id, person_id")
        for line_no, row in enumerate(reader, start=2):
            try:
                person = int(row["person_id"])
            except (TypeError, ValueError):
                raise InvalidSource(f"{path} line {line_no}: person_id is not an integer") from None
            _add(out, row["sample_id"], person, path, line_no)
    if len(set(out.values())) != len(out):
        raise InvalidSource(f"{path}: a person_id is given to more than one sample")
    return out


def _add(out: dict[str, int], sample: str, person: int, path: Path, line_no: int) -> None:
    if sample in out:
        raise InvalidSource(f"{path} line {line_no}: sample listed twice")
    out[sample] = person


def read_labels(path: Path, column: str = "superpop") -> dict[str, str]:
    """Sample id to label from a tab-separated file whose first column is the sample."""
    if not path.is_file():
        raise SourceNotFound(f"labels file {path} does not exist")
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split("\t") if lines else []
    if column not in header[1:]:
        raise InvalidSource(f"{path}: no label column {column!r} (has {', '.join(header[1:])})")
    at = header.index(column)
    labels: dict[str, str] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise InvalidSource(f"{path} line {line_no}: expected {len(header)} fields")
        labels[fields[0]] = fields[at]
    return labels


def _label(labels: dict[str, str], sample: str) -> str | None:
    return labels.get(sample) or labels.get(sample.rpartition("::")[2])


def import_vcf(
    vcf: Path,
    samples: Path,
    out: Path,
    *,
    labels: Path | None = None,
    label_column: str = "superpop",
    bin_size: int = DEFAULT_BIN_SIZE,
    first_person_id: int = 1,
) -> GenotypeImport:
    """Write the genotype store of ``vcf`` (see the module docstring) under ``out``."""
    from cyvcf2 import VCF

    if bin_size < 1:
        raise InvalidSource("the region bin size must be at least 1")
    if not vcf.is_file():
        raise SourceNotFound(f"VCF {vcf} does not exist")
    sheet = read_sample_sheet(samples, first_person_id=first_person_id)
    label_of = read_labels(labels, label_column) if labels is not None else {}
    try:
        reader = VCF(str(vcf), gts012=False, lazy=True)
    except (OSError, ValueError) as exc:
        raise InvalidSource(f"{vcf}: not a readable VCF ({type(exc).__name__})") from None
    try:
        names = list(reader.samples)
        if not names:
            raise InvalidSource(f"{vcf}: the VCF has no sample columns (no genotypes to import)")
        unknown = [i for i, s in enumerate(names) if s not in sheet]
        if unknown:
            raise InvalidSource(
                f"{vcf}: {len(unknown)} VCF samples are not in the sample sheet {samples} "
                f"(first at sample column {unknown[0] + 1})"
            )
        persons = np.array([sheet[s] for s in names], dtype=np.int64)
        out.mkdir(parents=True, exist_ok=True)
        stats = _write(reader, vcf, out, persons, bin_size)
    finally:
        reader.close()
    pq.write_table(
        pa.table(
            {
                "sample_id": names,
                "person_id": persons,
                "population": [_label(label_of, s) for s in names],
            },
            schema=SAMPLE_SCHEMA,
        ),
        out / "genotype_sample.parquet",
    )
    result = GenotypeImport(out=out, samples=len(names), **stats)
    log.info("imported %s: %s", vcf, result)
    return result


def _records(reader: Any, vcf: Path) -> Iterator[tuple[int, Any]]:
    """Number and record, turning a reader failure into an error naming file and record."""
    number, where = 0, "the header"
    iterator = iter(reader)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # htslib reports corruption as several exception types
            raise InvalidSource(
                f"{vcf}: record {number + 1} (after {where}) cannot be read ({type(exc).__name__})"
            ) from None
        number += 1
        where = f"{record.CHROM}:{record.POS}"
        yield number, record


def _write(reader: Any, vcf: Path, out: Path, persons: np.ndarray, bin_size: int) -> dict[str, int]:
    n = len(persons)
    variants: dict[str, list[Any]] = {name: [] for name in VARIANT_SCHEMA.names}
    chunk: list[tuple[np.ndarray, np.ndarray]] = []  # (variant ids, dosages with -1 missing)
    region: tuple[str, int] | None = None
    counts = {"records": 0, "variants": 0, "genotypes": 0, "missing": 0}
    counts |= {"multiallelic_records": 0, "regions": 0}
    writer = pq.ParquetWriter(out / "genotype.parquet", GENOTYPE_SCHEMA)

    def flush() -> None:
        if not chunk or region is None:
            return
        ids = np.concatenate([c[0] for c in chunk])
        dosage = np.concatenate([c[1] for c in chunk])
        missing = dosage < 0
        table = pa.table(
            {
                "person_id": np.tile(persons, len(ids) // n),
                "variant_id": ids,
                "chrom": pa.array([region[0]] * len(ids), pa.string()),
                "bin": np.full(len(ids), region[1], dtype=np.int32),
                "dosage": pa.array(dosage, pa.int8(), mask=missing),
            },
            schema=GENOTYPE_SCHEMA,
        )
        writer.write_table(table, row_group_size=MAX_ROW_GROUP)
        counts["genotypes"] += len(ids)
        counts["missing"] += int(missing.sum())
        counts["regions"] += 1
        chunk.clear()

    try:
        for number, record in _records(reader, vcf):
            counts["records"] = number
            alleles = record.genotype.array()[:, :-1]
            if alleles.shape[0] != n:
                raise InvalidSource(f"{vcf}: record {number} has no genotype for every sample")
            missing = (alleles == -1).any(axis=1)
            alts = record.ALT or []
            if len(alts) > 1:
                counts["multiallelic_records"] += 1
            here = (record.CHROM, region_bin(record.POS, bin_size))
            if here != region or sum(len(c[0]) for c in chunk) >= MAX_ROW_GROUP:
                flush()
                region = here
            for k, alt in enumerate(alts, start=1):
                counts["variants"] += 1
                variant_id = counts["variants"]
                for name, value in zip(
                    VARIANT_SCHEMA.names,
                    (variant_id, record.CHROM, record.POS, record.REF, alt, record.ID, here[1]),
                    strict=True,
                ):
                    variants[name].append(value)
                dosage = (alleles == k).sum(axis=1).astype(np.int8)
                dosage[missing] = -1
                chunk.append((np.full(n, variant_id, dtype=np.int64), dosage))
        flush()
    finally:
        writer.close()
    pq.write_table(pa.table(variants, schema=VARIANT_SCHEMA), out / "variant.parquet")
    return counts
