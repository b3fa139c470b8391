"""``fedflow harmonize``: raw EHR exports and FHIR bundles into OMOP CDM v5.4 parquet, at the site.

Commands: ``synthea`` and ``fhir`` build a CDM folder; ``vcf`` imports genotypes into the site's
genotype store; ``dq`` runs the conformance checks;
``vocab`` builds the local vocabulary store; ``suggest`` ranks standard concepts for unmapped
codes into a review file; ``accept`` turns the accepted rows into source_to_concept_map entries.
Nothing leaves the machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from harmonize.accounting import HarmonizeReport
from harmonize.dq import DqReport, check_folder
from harmonize.errors import HarmonizeError
from harmonize.fhir import read_fhir
from harmonize.pipeline import harmonize_staged
from harmonize.review import accept_review, write_review
from harmonize.settings import HarmonizeSettings
from harmonize.spec import load_spec
from harmonize.staging import StagedSource
from harmonize.synthea import read_synthea
from harmonize.vcf import DEFAULT_BIN_SIZE, import_vcf
from harmonize.vocabulary import build_store

__all__ = ["app"]

app = typer.Typer(
    help="Harmonize Synthea CSV or FHIR R4 bundles into OMOP CDM v5.4 parquet, with vocabulary "
    "mapping, AI-assisted mapping suggestions and data-quality checks. Runs at the site.",
    no_args_is_help=True,
)
console = Console()

StoreOption = Annotated[
    Path | None, typer.Option("--vocab-store", help="vocabulary store folder (built if absent)")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="OMOP CDM output folder")]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar")]
CoverageOption = Annotated[
    float, typer.Option("--min-coverage", help="fail (exit 2) below this mapping coverage, 0-1")
]


def _settings(store: Path | None) -> HarmonizeSettings:
    settings = HarmonizeSettings()
    if store is not None:
        settings = settings.model_copy(update={"vocab_store": store})
    return settings


def _fail(exc: HarmonizeError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def _print_report(report: HarmonizeReport, dq: DqReport) -> None:
    rows = Table(title=f"{report.kind}: source rows")
    for col in ("source table", "read", "written", "concept 0", "rejected"):
        rows.add_column(col, justify="left" if col == "source table" else "right")
    for a in report.accounts:
        reasons = ", ".join(f"{k} {v}" for k, v in a.rejected.items())
        rows.add_row(a.source_table, str(a.read), str(a.written), str(a.concept_0), reasons)
    console.print(rows)
    cov = Table(title="mapping coverage")
    for col in ("table", "coded rows", "mapped", "coverage", "local codes"):
        cov.add_column(col)
    for c in report.coverage:
        cov.add_row(
            c.table,
            str(c.coded_rows),
            str(c.mapped_rows),
            f"{c.coverage:.1%}",
            str(c.local_code_rows),
        )
    console.print(cov)
    console.print(
        f"coverage {report.mapping_coverage:.1%} of coded rows "
        f"({report.vocabulary_code_coverage:.1%} of rows with vocabulary codes); "
        f"accounting {'balanced' if report.balanced() else 'UNBALANCED'}; "
        f"DQ {'passed' if dq.passed else 'FAILED'} ({len(dq.results)} checks, "
        f"{len(dq.failures())} failed); {report.seconds:.1f} s"
    )


def _run(
    stage: Callable[[], StagedSource],
    out: Path,
    source: Path,
    kind: str,
    store: Path | None,
    progress: bool,
    min_coverage: float,
) -> None:
    settings = _settings(store)
    try:
        report = harmonize_staged(
            stage,
            out,
            source=str(source),
            kind=kind,
            settings=settings,
            progress=progress,
            min_coverage=min_coverage,
        )
        dq = check_folder(out, load_spec(settings.cdm_spec))
    except HarmonizeError as exc:
        raise _fail(exc) from None
    (out / "_harmonize" / "dq.json").write_text(dq.model_dump_json(indent=2) + "\n")
    _print_report(report, dq)
    if not report.balanced() or not dq.passed:
        raise typer.Exit(1)


@app.command()
def synthea(
    raw_dir: Annotated[Path, typer.Argument(help="folder of Synthea v3 CSV files")],
    out: OutOption,
    vocab_store: StoreOption = None,
    progress: ProgressOption = True,
    min_coverage: CoverageOption = 0.0,
) -> None:
    """Build an OMOP CDM folder from a Synthea CSV export (ETL-Synthea conventions)."""
    stage = lambda: read_synthea(raw_dir)  # noqa: E731
    _run(stage, out, raw_dir, "synthea", vocab_store, progress, min_coverage)


@app.command()
def fhir(
    bundles: Annotated[Path, typer.Argument(help="a FHIR R4 bundle (.json) or a folder of them")],
    out: OutOption,
    vocab_store: StoreOption = None,
    progress: ProgressOption = True,
    min_coverage: CoverageOption = 0.0,
) -> None:
    """Build an OMOP CDM folder from FHIR R4 bundles (HL7 FHIR-to-OMOP conventions)."""
    stage = lambda: read_fhir(bundles)  # noqa: E731
    _run(stage, out, bundles, "fhir", vocab_store, progress, min_coverage)


@app.command()
def dq(
    omop_dir: Annotated[Path, typer.Argument(help="OMOP CDM folder of parquet tables")],
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
) -> None:
    """Run the conformance checks (generated from the CDM field-level spec) on a CDM folder."""
    try:
        report = check_folder(omop_dir, load_spec(HarmonizeSettings().cdm_spec))
    except HarmonizeError as exc:
        raise _fail(exc) from None
    if json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2) + "\n")
    for check, counts in report.summary().items():
        console.print(f"{check}: {counts['passed']} passed, {counts['failed']} failed")
    for failure in report.failures():
        console.print(
            f"[red]FAIL[/red] {failure.check} {failure.table}.{failure.field}: "
            f"{failure.violations} of {failure.rows} rows"
        )
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def vocab(
    store: Annotated[Path | None, typer.Option("--store", help="store folder")] = None,
    source: Annotated[
        list[Path] | None, typer.Option("--source", help="vocabulary CSV folder (repeatable)")
    ] = None,
) -> None:
    """Build the local vocabulary store from OMOP vocabulary CSV folders."""
    settings = _settings(store)
    try:
        counts = build_store(
            source or settings.vocab_sources, settings.vocab_store, load_spec(settings.cdm_spec)
        )
    except HarmonizeError as exc:
        raise _fail(exc) from None
    console.print(json.dumps(counts, indent=2))


@app.command()
def suggest(
    omop_dir: Annotated[Path, typer.Argument(help="a harmonized CDM folder")],
    review: Annotated[Path, typer.Option("--review", help="review CSV to write")],
    top: Annotated[int, typer.Option(help="candidates per code")] = 5,
    embeddings: Annotated[
        bool, typer.Option("--embeddings/--lexical", help="use the sentence-embedding model")
    ] = True,
    vocab_store: StoreOption = None,
) -> None:
    """Rank standard concepts for the unmapped codes of a CDM folder into a review file."""
    settings = _settings(vocab_store)
    try:
        rows = write_review(omop_dir, review, settings, top=top, embeddings=embeddings)
    except HarmonizeError as exc:
        raise _fail(exc) from None
    console.print(f"wrote {rows} candidate rows to {review}: set 'accepted' to 1 on the right ones")


@app.command()
def accept(
    review: Annotated[Path, typer.Argument(help="a reviewed suggestion file")],
    vocab_store: StoreOption = None,
) -> None:
    """Add the accepted rows of a review file to the store's source_to_concept_map."""
    settings = _settings(vocab_store)
    try:
        added = accept_review(review, settings)
    except HarmonizeError as exc:
        raise _fail(exc) from None
    console.print(f"added {added} source_to_concept_map rows; later runs use them")


@app.command()
def vcf(
    vcf_file: Annotated[Path, typer.Argument(help="a VCF, bgzipped (.vcf.gz) or plain")],
    samples: Annotated[
        Path,
        typer.Option("--samples", help="sample sheet: PLINK .fam, or CSV with sample_id,person_id"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="genotype store folder")],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="population labels (TSV, first column the sample)"),
    ] = None,
    label_column: Annotated[str, typer.Option(help="the labels column to keep")] = "superpop",
    bin_size: Annotated[int, typer.Option(min=1, help="region bin size in bases")] = (
        DEFAULT_BIN_SIZE
    ),
    first_person_id: Annotated[
        int, typer.Option(help="person id of the first .fam sample (then in file order)")
    ] = 1,
) -> None:
    """Import VCF genotypes into the site's genotype store (parquet by region, dosages)."""
    try:
        result = import_vcf(
            vcf_file,
            samples,
            out,
            labels=labels,
            label_column=label_column,
            bin_size=bin_size,
            first_person_id=first_person_id,
        )
    except HarmonizeError as exc:
        raise _fail(exc) from None
    console.print(
        f"{result.records} records -> {result.variants} variants "
        f"({result.multiallelic_records} multi-allelic records split) x {result.samples} "
        f"samples = {result.genotypes} genotypes ({result.missing} missing) in "
        f"{result.regions} region row groups under {result.out}"
    )
