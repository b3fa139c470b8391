"""VCF genotypes into the genotype store (``harmonize.vcf``, ``fedflow harmonize vcf``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cyvcf2 import VCF
from typer.testing import CliRunner

from fedflow.cli import app
from harmonize import InvalidSource
from harmonize.vcf import import_vcf, in_region, region_bin


@pytest.fixture(scope="module")
def genomics(shared_data: Path) -> Path:
    return shared_data / "genomics_1000g_vcf"


@pytest.fixture(scope="module")
def sample_store(genomics: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "sample"
    import_vcf(genomics / "sample.vcf.gz", genomics / "sample.fam", out)
    return out


def _chr22_sheet(genomics: Path, folder: Path) -> Path:
    """A CSV sample sheet for chr22.vcf.gz's own samples, person ids 1001 onward."""
    sheet = folder / "chr22.csv"
    with sheet.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "person_id"])
        for i, sample in enumerate(VCF(str(genomics / "chr22.vcf.gz")).samples):
            writer.writerow([sample, 1001 + i])
    return sheet


def test_sample_vcf_imports_346_variants_by_100_samples(genomics: Path, sample_store: Path) -> None:
    variants = pq.read_table(sample_store / "variant.parquet")
    genotypes = pq.read_table(sample_store / "genotype.parquet")
    samples = pq.read_table(sample_store / "genotype_sample.parquet")
    assert variants.num_rows == 346
    assert genotypes.num_rows == 34_600
    fam = [line.split()[1] for line in (genomics / "sample.fam").read_text().splitlines()]
    person_of = {sample: i for i, sample in enumerate(fam, start=1)}  # .fam order from 1
    assert samples["person_id"].to_pylist() == [
        person_of[s] for s in samples["sample_id"].to_pylist()
    ]
    assert genotypes.schema.field("dosage").type == pa.int8()
    assert pc.count_distinct(genotypes["person_id"]).as_py() == 100
    assert set(pc.unique(genotypes["dosage"].drop_null()).to_pylist()) <= {0, 1, 2}


def test_each_region_is_its_own_row_group(sample_store: Path) -> None:
    file = pq.ParquetFile(sample_store / "genotype.parquet")
    variants = pq.read_table(sample_store / "variant.parquet")
    bins = set()
    for i in range(file.num_row_groups):
        group = file.read_row_group(i, columns=["chrom", "bin"])
        assert pc.count_distinct(group["bin"]).as_py() == 1
        assert pc.count_distinct(group["chrom"]).as_py() == 1
        bins.add(group["bin"][0].as_py())
    expected = {region_bin(p) for p in variants["pos"].to_pylist()}
    assert bins == expected and file.num_row_groups == len(expected) == 8


def test_counts_equal_the_vcf_info_ac_and_an(genomics: Path, sample_store: Path) -> None:
    """GATK wrote AC and AN into INFO: the store's dosages must reproduce them per variant."""
    genotypes = pq.read_table(sample_store / "genotype.parquet")
    called = genotypes.filter(pc.is_valid(genotypes["dosage"]))
    sums = called.group_by("variant_id").aggregate([("dosage", "sum"), ("dosage", "count")])
    ours = {
        v: (ac, 2 * n)
        for v, ac, n in zip(
            sums["variant_id"].to_pylist(),
            sums["dosage_sum"].to_pylist(),
            sums["dosage_count"].to_pylist(),
            strict=True,
        )
    }
    info = [(r.INFO["AC"], r.INFO["AN"]) for r in VCF(str(genomics / "sample.vcf.gz"))]
    assert [ours[i + 1] for i in range(346)] == info


def test_missing_calls_stay_missing(genomics: Path, tmp_path: Path) -> None:
    out = tmp_path / "chr22"
    result = import_vcf(genomics / "chr22.vcf.gz", _chr22_sheet(genomics, tmp_path), out)
    genotypes = pq.read_table(out / "genotype.parquet")
    # cyvcf2's own count of unknown genotypes, once per split alternate allele
    unknown = sum(r.num_unknown * len(r.ALT) for r in VCF(str(genomics / "chr22.vcf.gz")))
    assert genotypes["dosage"].null_count == result.missing == unknown > 0
    call_rate = 1 - genotypes["dosage"].null_count / genotypes.num_rows
    assert 0.2 < call_rate < 0.5  # PROVENANCE: call rate 0.32


def test_multiallelic_records_are_split(genomics: Path, tmp_path: Path) -> None:
    out = tmp_path / "chr22"
    result = import_vcf(genomics / "chr22.vcf.gz", _chr22_sheet(genomics, tmp_path), out)
    records = [r for r in VCF(str(genomics / "chr22.vcf.gz")) if len(r.ALT) > 1]
    assert result.multiallelic_records == len(records) == 4
    assert result.records == 100
    assert result.variants == 100 + sum(len(r.ALT) - 1 for r in records)
    variants = pq.read_table(out / "variant.parquet")
    genotypes = pq.read_table(out / "genotype.parquet").sort_by([("variant_id", "ascending")])
    for record in records:
        mine = variants.filter(pc.equal(variants["pos"], record.POS))
        assert mine["alt"].to_pylist() == record.ALT
        assert set(mine["ref"].to_pylist()) == {record.REF}
        calls = [g[:-1] for g in record.genotypes]  # allele indexes per sample, -1 missing
        for k, variant_id in enumerate(mine["variant_id"].to_pylist(), start=1):
            dosage = genotypes.filter(pc.equal(genotypes["variant_id"], variant_id))["dosage"]
            expected = [None if -1 in c else sum(a == k for a in c) for c in calls]
            assert dosage.to_pylist() == expected


def test_regions_are_half_open_and_zero_based(genomics: Path, tmp_path: Path) -> None:
    first = next(iter(VCF(str(genomics / "sample.vcf.gz")))).POS  # 10019093, 1-based
    assert region_bin(first, first - 1) == 1  # 0-based first-1 opens bin 1: [size, 2*size)
    assert region_bin(first, first) == 0  # the last base of [0, size)
    assert in_region(first, first - 1, first)
    assert not in_region(first, first, first + 1)
    assert not in_region(first, first - 2, first - 1)
    out = tmp_path / "bins"
    import_vcf(genomics / "sample.vcf.gz", genomics / "sample.fam", out, bin_size=first - 1)
    variants = pq.read_table(out / "variant.parquet")
    assert variants["bin"][0].as_py() == 1


def test_corrupt_files_name_file_and_record_not_genotypes(genomics: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes((genomics / "sample.vcf.gz").read_bytes()[:120_000])
    with pytest.raises(InvalidSource) as caught:
        import_vcf(cut, genomics / "sample.fam", tmp_path / "out")
    message = str(caught.value)
    assert str(cut) in message and "record 185 (after 20:" in message
    assert "/" not in message.replace(str(cut), "")  # no genotype such as 0/1


def test_samples_missing_from_the_sheet_are_an_error(genomics: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "short.fam"
    sheet.write_text("".join((genomics / "sample.fam").read_text().splitlines(True)[:90]))
    with pytest.raises(InvalidSource, match="10 VCF samples are not in the sample sheet"):
        import_vcf(genomics / "sample.vcf.gz", sheet, tmp_path / "out")


def test_the_cli_imports_with_labels(genomics: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    result = CliRunner().invoke(
        app,
        [
            "harmonize",
            "vcf",
            str(genomics / "sample.vcf.gz"),
            "--samples",
            str(genomics / "sample.fam"),
            "--labels",
            str(genomics / "ancestry-labels-1kg.tsv"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "346 variants" in result.output and "34600 genotypes" in result.output
    samples = pq.read_table(out / "genotype_sample.parquet")
    populations = samples["population"].to_pylist()
    assert populations.count("EUR") == 49 and populations.count(None) == 3
    assert np.array_equal(np.sort(samples["person_id"].to_numpy()), np.arange(1, 101))
