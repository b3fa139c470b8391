"""Review files: suggestions out, approved rows become source_to_concept_map for later runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harmonize import (
    HarmonizeReport,
    HarmonizeSettings,
    ReviewFileInvalid,
    VocabularyStore,
    accept_review,
    harmonize_synthea,
    write_review,
)
from harmonize.review import REVIEW_COLUMNS

Cdm = tuple[Path, HarmonizeReport]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REVIEW_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_review_round_trip_maps_the_code_in_the_next_run(
    synthea_cdm: Cdm, private_settings: HarmonizeSettings, shared_data: Path, tmp_path: Path
) -> None:
    folder, before = synthea_cdm
    review = tmp_path / "review.csv"
    written = write_review(folder, review, private_settings, top=3, embeddings=False)
    rows = _rows(review)
    assert written == len(rows) > 0
    codes = {(r["source_vocabulary_id"], r["source_code"]) for r in rows}
    assert codes == {(u.vocabulary_id, u.code) for c in before.coverage for u in c.unmapped}
    assert all(r["mapping_status"] == "UNCHECKED" for r in rows)
    # A reviewer approves the first candidate for Synthea's local code QALY.
    choice = next(r for r in rows if r["source_code"] == "QALY" and r["rank"] == "1")
    choice["mapping_status"] = "APPROVED"
    _write(review, rows)
    assert accept_review(review, private_settings) == 1
    assert accept_review(review, private_settings) == 0  # idempotent
    store = VocabularyStore(private_settings.vocab_store)
    assert store.lookup("LOINC", "QALY").targets[0][0] == int(choice["target_concept_id"])

    after = harmonize_synthea(
        shared_data / "synthea_csv_v3_27pat", tmp_path / "again", settings=private_settings
    )
    zero_before = sum(a.concept_0 for a in before.accounts)
    zero_after = sum(a.concept_0 for a in after.accounts)
    assert zero_after == zero_before - int(choice["source_frequency"])
    assert after.balanced()


def test_invalid_review_files_are_refused(
    private_settings: HarmonizeSettings, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("source_code,mapping_status\nX,APPROVED\n")
    with pytest.raises(ReviewFileInvalid):
        accept_review(bad, private_settings)
    row = dict.fromkeys(REVIEW_COLUMNS, "")
    row.update(source_vocabulary_id="LOINC", source_code="X", mapping_status="APPROVED")
    row["target_concept_id"] = "123456789"  # not in the store
    _write(bad, [row])
    with pytest.raises(ReviewFileInvalid):
        accept_review(bad, private_settings)
