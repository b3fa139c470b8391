"""The README's code works as written."""

from __future__ import annotations

import re

import pyarrow.compute as pc

from fedflow.core.settings import REPO_ROOT


def python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_analysis_example_runs_and_counts_right(eunomia) -> None:  # type: ignore[no-untyped-def]
    source = next(b for b in python_blocks() if "class SexCount" in b)
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    analysis = namespace["SexCount"]()  # type: ignore[operator]
    params = analysis.parse_params({"year_from": 1950})
    person = eunomia["person"].select(["person_id", "gender_concept_id", "year_of_birth"])
    halves = [person.slice(0, 1000), person.slice(1000)]
    merged = analysis.merge([analysis.local({"person": h}, params) for h in halves])
    rows = {r["gender"]: r["count"] for r in analysis.finalize(merged, params).to_pylist()}
    expected = person.filter(pc.field("year_of_birth") >= 1950)
    assert rows["*"] == expected.num_rows
    assert rows["8507"] == pc.sum(pc.equal(expected["gender_concept_id"], 8507)).as_py()


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert block is not None and text.index("```bash") < text.index("\n## ")
    demo, tests = block.group(1).strip().splitlines()
    assert demo.endswith("fedflow demo")
    assert tests in (REPO_ROOT / ".ci" / "run").read_text()
