"""A local store of OMOP vocabulary tables and the code -> standard concept lookups built on it.

``build_store`` merges vocabulary CSV folders (Athena export layout or the OHDSI seed and Eunomia
files in shared/data) into one parquet folder: rows are de-duplicated on each table's key, the
first source wins. A site builds the store once; every harmonization run loads it.

Mapping follows the OMOP conventions: a source code is looked up as a concept of its vocabulary
(its ``source_concept_id``), then followed through ``Maps to`` to standard concepts. A
``source_to_concept_map`` row (shipped seeds, or mapping suggestions a reviewer accepted) wins
over the vocabulary. Codes with no standard concept get concept 0 and keep their source value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from harmonize.errors import SourceNotFound, VocabularyMissing
from harmonize.spec import CdmSpec

__all__ = [
    "CONVENTION_CONCEPTS",
    "VOCAB_TABLES",
    "CodeMapping",
    "VocabularyStore",
    "build_store",
]

log = logging.getLogger(__name__)

#: Vocabulary tables and the columns that identify a row (for de-duplication).
VOCAB_TABLES: dict[str, tuple[str, ...]] = {
    "concept": ("concept_id",),
    "concept_relationship": ("concept_id_1", "concept_id_2", "relationship_id"),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id"),
    "vocabulary": ("vocabulary_id",),
    "domain": ("domain_id",),
    "concept_class": ("concept_class_id",),
    "relationship": ("relationship_id",),
    "concept_synonym": ("concept_id", "concept_synonym_name", "language_concept_id"),
    "drug_strength": ("drug_concept_id", "ingredient_concept_id"),
    "source_to_concept_map": ("source_vocabulary_id", "source_code", "target_concept_id"),
}

#: Standard concepts the CDM conventions emit as constants (gender, race, the EHR type concept)
#: that the shared vocabulary subsets lack. Names and codes as published in OHDSI Athena.
CONVENTION_CONCEPTS: tuple[tuple[int, str, str, str], ...] = (
    (8507, "MALE", "Gender", "M"),
    (8532, "FEMALE", "Gender", "F"),
    (8657, "American Indian or Alaska Native", "Race", "1"),
    (8515, "Asian", "Race", "2"),
    (8516, "Black or African American", "Race", "3"),
    (8557, "Native Hawaiian or Other Pacific Islander", "Race", "4"),
    (8527, "White", "Race", "5"),
    (32817, "EHR", "Type Concept", "OMOP4976890"),
)

_MANIFEST = "store.json"


def _find(folder: Path, table: str) -> Path | None:
    wanted = {f"{table}{suffix}" for suffix in (".csv", ".csv.gz", "_seed.csv", "_seed.csv.gz")}
    return next((p for p in sorted(folder.iterdir()) if p.name.lower() in wanted), None)


def _read_strings(path: Path) -> pl.DataFrame:
    frame = pl.read_csv(path, infer_schema=False, quote_char='"')
    frame = frame.rename({c: c.strip().lower() for c in frame.columns})
    return frame.with_columns(
        pl.when(pl.col(c).str.len_chars() == 0).then(None).otherwise(pl.col(c)).alias(c)
        for c in frame.columns
    )


def _to_spec(frame: pl.DataFrame, table: str, spec: CdmSpec) -> pa.Table:
    """Cast an all-string frame to the CDM schema of ``table`` (missing columns become null)."""
    exprs: list[pl.Expr] = []
    for field in spec[table]:
        col = pl.col(field.name) if field.name in frame.columns else pl.lit(None, pl.String)
        kind = field.datatype
        if kind == "integer":
            expr = col.cast(pl.Int32, strict=False)
        elif kind == "float":
            expr = col.cast(pl.Float64, strict=False)
        elif kind == "date":
            expr = pl.coalesce(
                col.str.to_date("%Y-%m-%d", strict=False), col.str.to_date("%Y%m%d", strict=False)
            )
        elif kind == "datetime":
            expr = col.str.to_datetime(strict=False, time_unit="us")
        else:
            expr = col.cast(pl.String)
        exprs.append(expr.alias(field.name))
    return frame.select(exprs).to_arrow().cast(spec.schema(table).remove_metadata(), safe=False)


def _convention_concepts(spec: CdmSpec) -> pl.DataFrame:
    rows = [
        {
            "concept_id": str(cid),
            "concept_name": name,
            "domain_id": domain,
            "vocabulary_id": domain,
            "concept_class_id": domain,
            "standard_concept": "S",
            "concept_code": code,
            "valid_start_date": "1970-01-01",
            "valid_end_date": "2099-12-31",
            "invalid_reason": None,
        }
        for cid, name, domain, code in CONVENTION_CONCEPTS
    ]
    return pl.DataFrame(rows, schema={f.name: pl.String for f in spec["concept"]})


def build_store(sources: Sequence[Path], store: Path, spec: CdmSpec) -> dict[str, int]:
    """Merge the vocabulary CSV folders ``sources`` into parquet files under ``store``.

    Returns the row count per table. Folders that lack a table are skipped for that table.
    """
    missing = [str(s) for s in sources if not s.is_dir()]
    if missing:
        raise SourceNotFound(f"vocabulary source folders not found: {', '.join(missing)}")
    store.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for table, key in VOCAB_TABLES.items():
        frames = [_read_strings(p) for s in sources if (p := _find(s, table)) is not None]
        if table == "concept":
            frames.append(_convention_concepts(spec))
        if frames:
            columns = [f.name for f in spec[table]]
            frames = [f.select([c for c in columns if c in f.columns]) for f in frames]
            merged = pl.concat(frames, how="diagonal").unique(
                subset=list(key), keep="first", maintain_order=True
            )
        else:
            merged = pl.DataFrame(schema={f.name: pl.String for f in spec[table]})
        arrow = _to_spec(merged, table, spec)
        pq.write_table(arrow, store / f"{table}.parquet")
        counts[table] = arrow.num_rows
    manifest = {"sources": [str(s) for s in sources], "rows": counts}
    (store / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("vocabulary store built at %s: %s", store, counts)
    return counts


@dataclass(frozen=True)
class CodeMapping:
    """Where one source code goes: its source concept and its standard targets with domains."""

    source_concept_id: int
    targets: tuple[tuple[int, str | None], ...]

    @property
    def mapped(self) -> bool:
        """True when at least one standard concept was found."""
        return any(cid != 0 for cid, _ in self.targets)


class VocabularyStore:
    """Read access to a built store: tables, code lookups and ``Maps to`` resolution."""

    def __init__(self, path: Path) -> None:
        if not (path / _MANIFEST).is_file():
            raise VocabularyMissing(f"no vocabulary store at {path}: run build_store first")
        self.path = path
        self._tables: dict[str, pa.Table] = {}
        self._by_code: dict[tuple[str, str], tuple[int, str, str | None]] | None = None
        self._concepts: dict[int, tuple[str, str | None]] | None = None
        self._maps_to: dict[int, list[int]] | None = None
        self._stcm: dict[tuple[str, str], list[int]] | None = None
        self._cache: dict[tuple[str, str], CodeMapping] = {}

    def table(self, name: str) -> pa.Table:
        """One vocabulary table as Arrow."""
        if name not in self._tables:
            file = self.path / f"{name}.parquet"
            if not file.is_file():
                raise VocabularyMissing(f"vocabulary table {name} missing from {self.path}")
            self._tables[name] = pq.read_table(file)
        return self._tables[name]

    def _index(self) -> None:
        concept = self.table("concept").select(
            ["concept_id", "vocabulary_id", "concept_code", "domain_id", "standard_concept"]
        )
        self._by_code = {}
        self._concepts = {}
        for cid, vocab, code, domain, std in zip(
            *(c.to_pylist() for c in concept.columns), strict=False
        ):
            self._concepts[cid] = (domain, std)
            self._by_code.setdefault((vocab, code), (cid, domain, std))
        rel = pl.from_arrow(self.table("concept_relationship"))
        assert isinstance(rel, pl.DataFrame)
        maps = rel.filter(
            (pl.col("relationship_id") == "Maps to") & pl.col("invalid_reason").is_null()
        )
        self._maps_to = {}
        for a, b in zip(
            maps["concept_id_1"].to_list(), maps["concept_id_2"].to_list(), strict=False
        ):
            self._maps_to.setdefault(a, []).append(b)
        self._stcm = {}
        stcm = self.table("source_to_concept_map").select(
            ["source_vocabulary_id", "source_code", "target_concept_id", "invalid_reason"]
        )
        for vocab, code, target, invalid in zip(
            *(c.to_pylist() for c in stcm.columns), strict=False
        ):
            if invalid is None and target is not None:
                self._stcm.setdefault((vocab, code), []).append(target)

    def domain_of(self, concept_id: int) -> str | None:
        """The domain of a concept, None when the store does not hold it."""
        if self._concepts is None:
            self._index()
        assert self._concepts is not None
        entry = self._concepts.get(concept_id)
        return entry[0] if entry else None

    def lookup(self, vocabulary_id: str, code: str) -> CodeMapping:
        """Map one source code of ``vocabulary_id`` to its standard concepts (or concept 0)."""
        key = (vocabulary_id, code)
        if key in self._cache:
            return self._cache[key]
        if self._by_code is None:
            self._index()
        assert self._by_code is not None and self._maps_to is not None
        assert self._stcm is not None and self._concepts is not None
        source = self._by_code.get(key)
        source_id = source[0] if source else 0
        targets: list[int] = list(self._stcm.get(key, []))
        if not targets and source:
            targets = list(self._maps_to.get(source_id, []))
            if not targets and source[2] == "S":
                targets = [source_id]
        # A target the store does not hold has no domain to route by: count it as unmapped.
        resolved = tuple(
            dict.fromkeys((t, self._concepts[t][0]) for t in targets if t in self._concepts)
        )
        result = CodeMapping(source_id, resolved or ((0, source[1] if source else None),))
        self._cache[key] = result
        return result

    def concept_names(self, concept_ids: Iterable[int]) -> dict[int, str]:
        """Names of the given concepts (missing ones are left out)."""
        wanted = set(concept_ids)
        concept = self.table("concept").select(["concept_id", "concept_name"])
        ids, names = (c.to_pylist() for c in concept.columns)
        return {i: n for i, n in zip(ids, names, strict=True) if i in wanted}
