"""One harmonization run: stage a source, build the CDM tables, write the folder and its report.

The output folder holds one ``<table>.parquet`` per CDM table (lower-case names, v5.4 columns
and types), the vocabulary tables of the store (so cohort definitions with descendants work at
the site), and ``_harmonize/report.json`` plus ``_harmonize/unmapped.csv`` (a leading underscore
keeps dataset readers from taking them for tables).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import Progress

from harmonize.accounting import HarmonizeReport, SourceAccount
from harmonize.conform import conform
from harmonize.entities import (
    build_care_sites,
    build_death,
    build_locations,
    build_observation_period,
    build_persons,
    build_providers,
    build_visits,
)
from harmonize.errors import UnmappedCode
from harmonize.events import EVENT_TABLES, build_events
from harmonize.settings import HarmonizeSettings
from harmonize.spec import CdmSpec, load_spec
from harmonize.staging import StagedSource
from harmonize.vocabulary import VOCAB_TABLES, VocabularyStore, build_store

__all__ = [
    "REPORT_DIR",
    "build_cdm",
    "cdm_source",
    "harmonize_staged",
    "open_store",
    "write_cdm",
]

log = logging.getLogger(__name__)

REPORT_DIR = "_harmonize"


def open_store(settings: HarmonizeSettings, spec: CdmSpec) -> VocabularyStore:
    """The site's vocabulary store, built from ``settings.vocab_sources`` on first use."""
    if not (settings.vocab_store / "store.json").is_file():
        build_store(settings.vocab_sources, settings.vocab_store, spec)
    return VocabularyStore(settings.vocab_store)


def build_cdm(
    staged: StagedSource,
    vocab: VocabularyStore,
    spec: CdmSpec,
    step: Callable[[str], None] = lambda _: None,
    *,
    merge_visits: bool = True,
) -> tuple[dict[str, pa.Table], list[SourceAccount], HarmonizeReport]:
    """All CDM tables of ``staged``, with the accounting of every source row.

    ``merge_visits`` groups encounters into visits the ETL-Synthea way (else one per encounter).
    """
    names = staged.names
    step("location")
    locations, location_ids = build_locations(staged.persons, staged.care_sites, spec)
    step("care_site / provider")
    care_site, site_ids = build_care_sites(staged.care_sites, location_ids, spec)
    provider, provider_ids = build_providers(staged.providers, site_ids, spec)
    step("person")
    person, person_ids, person_rejected = build_persons(staged.persons, location_ids, spec)
    death = build_death(staged.persons, person_ids, spec)
    step("visit_occurrence")
    visit, visit_ids, visit_providers, visit_rejected, visit_zero = build_visits(
        staged.visits, person_ids, provider_ids, site_ids, spec, merge=merge_visits
    )
    step("clinical events")
    events = build_events(staged.iter_events(), person_ids, visit_ids, visit_providers, vocab, spec)
    step("observation_period")
    dates = [
        (visit["person_id"], visit["visit_start_date"]),
        (visit["person_id"], visit["visit_end_date"]),
    ]
    for table in EVENT_TABLES:
        t = events.tables[table]
        start = next(c for c in t.column_names if c.endswith("_date"))
        dates.append((t["person_id"], t[start]))
    period = build_observation_period(dates, spec)
    tables = {
        "person": person,
        "observation_period": period,
        "visit_occurrence": visit,
        **events.tables,
        "death": death,
        "location": locations,
        "care_site": care_site,
        "provider": provider,
    }
    kept_visits = staged.visits.num_rows - sum(visit_rejected.values())
    accounts = [
        SourceAccount(
            source_table=names["persons"],
            read=staged.persons.num_rows,
            written=person.num_rows,
            rejected={k: v for k, v in person_rejected.items() if v},
        ),
        SourceAccount(
            source_table=names["visits"],
            read=staged.visits.num_rows,
            written=kept_visits - visit_zero,
            concept_0=visit_zero,
            rejected={k: v for k, v in visit_rejected.items() if v},
        ),
        SourceAccount(
            source_table=names["providers"],
            read=staged.providers.num_rows,
            written=provider.num_rows,
        ),
        SourceAccount(
            source_table=names["care_sites"],
            read=staged.care_sites.num_rows,
            written=care_site.num_rows,
        ),
    ]
    for _, account in sorted(events.accounts.items()):
        accounts.append(account)
    for name, reasons in staged.rejected.items():
        found = next((a for a in accounts if a.source_table == name), None)
        account = found or SourceAccount(source_table=name)
        if found is None:
            accounts.append(account)
        account.read = staged.source_rows.get(name, account.read)
        for reason, count in reasons.items():
            account.rejected[reason] = account.rejected.get(reason, 0) + count
    for name, rows in staged.source_rows.items():
        if rows == 0 and not any(a.source_table == name for a in accounts):
            accounts.append(SourceAccount(source_table=name))
    report = HarmonizeReport(
        source="",
        kind="",
        cdm_rows={k: v.num_rows for k, v in tables.items()},
        accounts=accounts,
        coverage=[events.coverage[t] for t in EVENT_TABLES],
        issues=staged.issues,
    )
    return tables, accounts, report


_ETL = {
    "synthea": "fedflow harmonize synthea (OHDSI ETL-Synthea conventions)",
    "fhir": "fedflow harmonize fhir (HL7 FHIR-to-OMOP IG conventions)",
}


def cdm_source(source: str, kind: str, vocab: VocabularyStore, spec: CdmSpec) -> pa.Table:
    """The one-row ``cdm_source`` table describing this run (CDM v5.4, vocabulary version)."""
    vocabulary = vocab.table("vocabulary")
    versions = dict(
        zip(
            vocabulary["vocabulary_id"].to_pylist(),
            vocabulary["vocabulary_version"].to_pylist(),
            strict=True,
        )
    )
    today = dt.date.today()
    columns = {
        "cdm_source_name": pa.array([Path(source).name or source]),
        "cdm_source_abbreviation": pa.array([kind]),
        "cdm_holder": pa.array(["the data custodian running this site"]),
        "source_description": pa.array([f"{kind} source harmonized at the site: {source}"]),
        "cdm_etl_reference": pa.array([_ETL.get(kind, "fedflow harmonize")]),
        "source_release_date": pa.array([today]),
        "cdm_release_date": pa.array([today]),
        "cdm_version": pa.array(["v5.4"]),
        # The CDM version concept (756265) is not in the shared vocabulary subsets: 0 keeps the
        # foreign key valid; cdm_version says the version.
        "cdm_version_concept_id": pa.array([0], pa.int32()),
        "vocabulary_version": pa.array([versions.get("None") or "unknown"]),
    }
    return conform("cdm_source", columns, spec, num_rows=1)


def write_cdm(
    tables: dict[str, pa.Table], out: Path, vocab: VocabularyStore, report: HarmonizeReport
) -> None:
    """Write the CDM tables, the vocabulary tables and the run report under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet")
    for name in VOCAB_TABLES:
        shutil.copyfile(vocab.path / f"{name}.parquet", out / f"{name}.parquet")
    reports = out / REPORT_DIR
    reports.mkdir(exist_ok=True)
    (reports / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
    with (reports / "unmapped.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "vocabulary_id", "code", "description", "rows"])
        for cov in report.coverage:
            for u in cov.unmapped:
                writer.writerow([cov.table, u.vocabulary_id, u.code, u.description, u.rows])


def harmonize_staged(
    stage: Callable[[], StagedSource],
    out: Path,
    *,
    source: str,
    kind: str,
    settings: HarmonizeSettings | None = None,
    progress: bool = False,
    min_coverage: float = 0.0,
) -> HarmonizeReport:
    """Stage with ``stage()``, build the CDM and write it to ``out``; return the report.

    Raises :class:`UnmappedCode` (after writing the folder and its report, so the unmapped codes
    can be reviewed) when the mapping coverage of coded rows is below ``min_coverage``.
    """
    settings = settings or HarmonizeSettings()
    began = time.perf_counter()
    spec = load_spec(settings.cdm_spec)
    steps = ["vocabulary", "read source", "location", "care_site / provider", "person"]
    steps += ["visit_occurrence", "clinical events", "observation_period", "write"]
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"harmonize {kind}", total=len(steps))

        def step(name: str) -> None:
            bar.update(task, advance=1, description=f"{kind}: {name}")

        vocab = open_store(settings, spec)
        step("read source")
        staged = stage()
        tables, _, report = build_cdm(staged, vocab, spec, step, merge_visits=settings.merge_visits)
        step("write")
        report.source, report.kind = source, kind
        tables["cdm_source"] = cdm_source(source, kind, vocab, spec)
        report.cdm_rows["cdm_source"] = 1
        report.seconds = round(time.perf_counter() - began, 3)
        write_cdm(tables, out, vocab, report)
        bar.update(task, advance=1)
    log.info("harmonized %s (%s) into %s in %.1f s", source, kind, out, report.seconds)
    if report.mapping_coverage < min_coverage:
        unmapped = sum(len(c.unmapped) for c in report.coverage)
        raise UnmappedCode(
            f"mapping coverage {report.mapping_coverage:.1%} is below {min_coverage:.1%}: "
            f"{unmapped} codes unmapped, listed in {out / REPORT_DIR / 'unmapped.csv'}",
            vocabulary_id="*",
        )
    return report
