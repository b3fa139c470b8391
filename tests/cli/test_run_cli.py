"""``fedflow run`` and ``fedflow analyses`` as a researcher uses them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedflow.cli import app
from flows.demo import DEMO_SITES

pytestmark = pytest.mark.integration

runner = CliRunner()
GI_BLEED = json.dumps({"domain": "condition", "concept_ids": [192671], "include_descendants": True})


@pytest.fixture
def demo_profile(make_federation, prefect_server):  # type: ignore[no-untyped-def]
    profile, _ = make_federation(DEMO_SITES, seed=20261128)
    return profile


def test_run_prints_result_and_site_outcomes_as_json(demo_profile) -> None:
    result = runner.invoke(
        app, ["run", "cohort_count", "-f", str(demo_profile), "--params", GI_BLEED]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["analysis"] == "cohort_count@1.0"
    assert document["result"] == [{"count": 479}]
    assert [s["site"] for s in document["sites"]] == [s.name for s in DEMO_SITES]
    assert {s["status"] for s in document["sites"]} == {"released"}
    assert document["result_digest"].startswith("sha256:")


def test_secure_aggregation_is_on_by_default_and_can_be_turned_off(demo_profile) -> None:
    for flag, masked in (([], True), (["--no-secure"], False)):
        args = ["run", "cohort_count", "-f", str(demo_profile), "--params", GI_BLEED, *flag]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert document["result"] == [{"count": 479}]
        notes = [
            any("masked for secure aggregation" in r for r in s["reasons"])
            for s in document["sites"]
        ]
        assert notes == [masked] * len(DEMO_SITES)


def test_run_as_table_and_refusals(demo_profile, tmp_path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"table": "person", "column": "year_of_birth"}))
    result = runner.invoke(
        app,
        [
            "run",
            "numeric_summary",
            "-f",
            str(demo_profile),
            "--params",
            f"@{params}",
            "--format",
            "table",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "uk-registry" in result.stdout and "refused" in result.stdout
    assert "analysis numeric_summary is not allowed at this" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such", "--params", "{}"], "unknown analysis 'no_such'"),
        (["run", "cohort_count", "--params", "{not json"], "not valid JSON"),
        (["run", "cohort_count", "--params", "[1, 2]"], "must be a JSON object"),
        (["run", "cohort_count", "--params", '{"domain": "condition"}'], "concept_ids"),
        (["run", "cohort_count", "--params", GI_BLEED, "--min-sites", "4"], "the step needs 4"),
    ],
)
def test_bad_input_gets_a_clear_error(demo_profile, args, message) -> None:
    result = runner.invoke(app, [*args, "-f", str(demo_profile)])
    assert result.exit_code != 0
    assert message in result.output


def test_missing_profile_is_a_clear_error(tmp_path, prefect_server) -> None:
    result = runner.invoke(app, ["run", "cohort_count", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read federation profile" in result.output


def test_analyses_lists_the_library() -> None:
    result = runner.invoke(app, ["analyses"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("cohort_count@1.0\tfrequency\tsha256:") for line in lines)
    assert any(line.startswith("numeric_summary@1.0\tsummary\t") for line in lines)
