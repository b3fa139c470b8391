"""The ``harmonize`` Typer app, driven with CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmonize import HarmonizeSettings, VocabularyStore
from harmonize.cli import app

runner = CliRunner()


@pytest.fixture
def env(
    settings: HarmonizeSettings, store: VocabularyStore, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point the CLI at the session's spec and store through its environment variables."""
    monkeypatch.setenv("FEDFLOW_HARMONIZE_CDM_SPEC", str(settings.cdm_spec))
    return store.path


def test_synthea_then_dq_then_suggest(env: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "omop"
    result = runner.invoke(
        app,
        [
            "synthea",
            str(shared_data / "synthea_csv_v3_27pat"),
            "--out",
            str(out),
            "--vocab-store",
            str(env),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "balanced" in result.output and "DQ passed" in result.output
    assert (out / "person.parquet").is_file()
    assert json.loads((out / "_harmonize" / "dq.json").read_text())["results"]

    result = runner.invoke(app, ["dq", str(out)])
    assert result.exit_code == 0
    assert "is_foreign_key:" in result.output

    review = tmp_path / "review.csv"
    result = runner.invoke(
        app, ["suggest", str(out), "--review", str(review), "--lexical", "--vocab-store", str(env)]
    )
    assert result.exit_code == 0, result.output
    assert review.read_text().startswith("source_vocabulary_id,")


def test_fhir_command(env: Path, shared_data: Path, tmp_path: Path) -> None:
    bundle = (
        shared_data
        / "synthea_fhir_r4"
        / "Alfonzo975_Hickle134_cd3d3588-94fc-b980-9e94-0390d989d921.json"
    )
    result = runner.invoke(
        app,
        [
            "fhir",
            str(bundle),
            "--out",
            str(tmp_path / "o"),
            "--vocab-store",
            str(env),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Patient" in result.output


def test_vocab_command_builds_a_store(
    settings: HarmonizeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFLOW_HARMONIZE_CDM_SPEC", str(settings.cdm_spec))
    source = settings.vocab_sources[1]
    result = runner.invoke(app, ["vocab", "--store", str(tmp_path / "s"), "--source", str(source)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["concept_relationship"] == 24860


def test_errors_exit_2_without_traceback(env: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "synthea",
            str(tmp_path / "absent"),
            "--out",
            str(tmp_path / "o"),
            "--vocab-store",
            str(env),
        ],
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["dq", str(tmp_path / "absent")])
    assert result.exit_code == 2


def test_min_coverage_fails_the_run_but_keeps_the_folder(
    env: Path, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "omop"
    args = ["synthea", str(shared_data / "synthea_csv_v3_27pat"), "--out", str(out)]
    args += ["--vocab-store", str(env), "--no-progress", "--min-coverage", "0.99"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "below 99.0%" in result.output
    assert (out / "_harmonize" / "unmapped.csv").is_file()
