"""Mapping review files: suggestions out, accepted rows back in as source_to_concept_map.

The review file is a CSV in the spirit of OHDSI Usagi: one row per (source code, candidate),
with the source's frequency, the candidate's scores and a ``mapping_status`` column the reviewer
sets to ``APPROVED`` on the right rows. ``accept_review`` turns approved rows into
``source_to_concept_map`` rows of the vocabulary store, which every later run uses before the
vocabulary's own ``Maps to``.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harmonize.errors import EmbeddingUnavailable, ReviewFileInvalid, SourceNotFound
from harmonize.events import DOMAIN_TABLE
from harmonize.pipeline import REPORT_DIR, open_store
from harmonize.settings import HarmonizeSettings
from harmonize.spec import load_spec
from harmonize.suggest import ConceptIndex

__all__ = ["REVIEW_COLUMNS", "accept_review", "write_review"]

REVIEW_COLUMNS = (
    "source_vocabulary_id",
    "source_code",
    "source_name",
    "source_table",
    "source_frequency",
    "rank",
    "target_concept_id",
    "target_concept_name",
    "target_domain_id",
    "target_vocabulary_id",
    "lexical_score",
    "semantic_score",
    "match_score",
    "mapping_status",
)
_TABLE_DOMAIN = {table: domain for domain, table in DOMAIN_TABLE.items()}


def write_review(
    omop_dir: Path,
    review: Path,
    settings: HarmonizeSettings,
    *,
    top: int = 5,
    embeddings: bool = True,
) -> int:
    """Rank candidates for the unmapped codes of a harmonized folder; return rows written."""
    report_path = omop_dir / REPORT_DIR / "report.json"
    if not report_path.is_file():
        raise SourceNotFound(f"no harmonization report in {omop_dir}: harmonize it first")
    report = json.loads(report_path.read_text())
    vocab = open_store(settings, load_spec(settings.cdm_spec))
    embedder = None
    if embeddings:
        try:
            from harmonize.embedding import load_embedder

            embedder = load_embedder()
        except EmbeddingUnavailable:
            embedder = None
    sources = [(cov["table"], u) for cov in report["coverage"] for u in cov["unmapped"]]
    domains = sorted({_TABLE_DOMAIN[table] for table, _ in sources if table in _TABLE_DOMAIN})
    index = ConceptIndex(vocab, embedder, domains=domains)
    ranked = index.rank(
        [u["description"] or u["code"] for _, u in sources],
        [_TABLE_DOMAIN.get(table) for table, _ in sources],
        top=top,
    )
    rows = 0
    review.parent.mkdir(parents=True, exist_ok=True)
    with review.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REVIEW_COLUMNS)
        for (table, u), candidates in zip(sources, ranked, strict=True):
            for rank, c in enumerate(candidates, start=1):
                writer.writerow(
                    [
                        u["vocabulary_id"],
                        u["code"],
                        u["description"],
                        table,
                        u["rows"],
                        rank,
                        c.concept_id,
                        c.concept_name,
                        c.domain_id,
                        c.vocabulary_id,
                        c.lexical,
                        "" if c.semantic is None else c.semantic,
                        c.score,
                        "UNCHECKED",
                    ]
                )
                rows += 1
    return rows


def accept_review(review: Path, settings: HarmonizeSettings) -> int:
    """Add the ``APPROVED`` rows of ``review`` to the store's source_to_concept_map."""
    if not review.is_file():
        raise SourceNotFound(f"review file not found: {review}")
    with review.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(REVIEW_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ReviewFileInvalid(f"{review.name} lacks columns: {', '.join(sorted(missing))}")
        approved = [r for r in reader if r["mapping_status"].strip().upper() == "APPROVED"]
    vocab = open_store(settings, load_spec(settings.cdm_spec))
    for line, r in enumerate(approved, start=1):
        if not r["target_concept_id"].strip().isdigit():
            raise ReviewFileInvalid(f"approved row {line} of {review.name} has no target concept")
        if vocab.domain_of(int(r["target_concept_id"])) is None:
            raise ReviewFileInvalid(
                f"approved row {line} of {review.name}: target concept not in the vocabulary store"
            )
    if not approved:
        return 0
    path = vocab.path / "source_to_concept_map.parquet"
    existing = pq.read_table(path)
    n = len(approved)
    rows = pa.table(
        {
            "source_code": [r["source_code"] for r in approved],
            "source_concept_id": [0] * n,
            "source_vocabulary_id": [r["source_vocabulary_id"] for r in approved],
            "source_code_description": [r["source_name"] for r in approved],
            "target_concept_id": [int(r["target_concept_id"]) for r in approved],
            "target_vocabulary_id": [r["target_vocabulary_id"] for r in approved],
            "valid_start_date": [dt.date.today()] * n,
            "valid_end_date": [dt.date(2099, 12, 31)] * n,
            "invalid_reason": [None] * n,
        }
    )
    merged = pa.concat_tables([existing, rows.select(existing.schema.names).cast(existing.schema)])
    keys = set()
    keep = []
    for i, key in enumerate(
        zip(
            merged["source_vocabulary_id"].to_pylist(),
            merged["source_code"].to_pylist(),
            merged["target_concept_id"].to_pylist(),
            strict=False,
        )
    ):
        if key not in keys:
            keys.add(key)
            keep.append(i)
    pq.write_table(merged.take(pa.array(keep)), path)
    return len(keep) - existing.num_rows
