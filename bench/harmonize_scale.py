"""Harmonization speed: the 27-patient Synthea sample scaled to 10k and 100k patients.

Each patient (with all their encounters and clinical rows) is replicated with new ids until the
population reaches the target; providers and organizations are shared. Every size is harmonized
in a fresh subprocess (vocabulary store already built) and we report wall time, source rows per
second and the child's peak resident memory. Target (issue 7): 100k patients in under 2 minutes
on 2 cores.

    python bench/harmonize_scale.py                 # 10k and 100k
    python bench/harmonize_scale.py --patients 1000 # a quick look

Writes ``bench/results/harmonize_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from harmonize.settings import HarmonizeSettings
from harmonize.spec import load_spec
from harmonize.vocabulary import build_store

ROOT = Path(__file__).resolve().parents[1]
FILES = {  # file -> columns holding a patient or encounter id
    "patients": ["Id"],
    "encounters": ["Id", "PATIENT"],
    "conditions": ["PATIENT", "ENCOUNTER"],
    "medications": ["PATIENT", "ENCOUNTER"],
    "immunizations": ["PATIENT", "ENCOUNTER"],
    "procedures": ["PATIENT", "ENCOUNTER"],
    "observations": ["PATIENT", "ENCOUNTER"],
    "allergies": ["PATIENT", "ENCOUNTER"],
    "devices": ["PATIENT", "ENCOUNTER"],
    "providers": [],
    "organizations": [],
}


def scale(raw: Path, out: Path, patients: int) -> int:
    """Write a Synthea export of at least ``patients`` people (whole copies of the 27) to
    ``out``; return its source rows."""
    copies = math.ceil(patients / 27)
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, id_columns in FILES.items():
        names = pacsv.open_csv(raw / f"{name}.csv").schema.names
        source = pacsv.read_csv(
            raw / f"{name}.csv",
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
        parts = [source] if not id_columns else []
        for copy in range(copies if id_columns else 0):
            part = source
            for column in id_columns:
                index = part.schema.get_field_index(column)
                renamed = pc.binary_join_element_wise(part[column], pa.scalar(f"{copy:05d}"), "-")
                part = part.set_column(index, column, renamed)
            parts.append(part)
        table = pa.concat_tables(parts)
        pacsv.write_csv(table, out / f"{name}.csv")
        total += table.num_rows
    return total


_CHILD = """
import json, sys, time
from pathlib import Path
from harmonize import harmonize_synthea, HarmonizeSettings
settings = HarmonizeSettings(vocab_store=Path(sys.argv[3]))
began = time.perf_counter()
report = harmonize_synthea(Path(sys.argv[1]), Path(sys.argv[2]), settings=settings)
seconds = time.perf_counter() - began
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak / 1024, "cdm_rows": report.cdm_rows,
                  "balanced": report.balanced(), "coverage": report.mapping_coverage}))
"""


def run(patients: int, work: Path, store: Path, raw: Path) -> dict[str, object]:
    """Scale, then harmonize in a subprocess; return the figures."""
    data = work / f"synthea_{patients}"
    began = time.perf_counter()
    rows = scale(raw, data, patients)
    generated = time.perf_counter() - began
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data), str(work / f"omop_{patients}"), str(store)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    figures.update(
        patients=figures["cdm_rows"]["person"],
        source_rows=rows,
        rows_per_second=round(rows / figures["seconds"]),
        generate_seconds=round(generated, 1),
    )
    figures["seconds"] = round(figures["seconds"], 2)
    figures["peak_rss_mb"] = round(figures["peak_rss_mb"])
    return figures


def main() -> None:
    """Run the sizes asked for and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fedflow-bench-harmonize"))
    args = parser.parse_args()
    settings = HarmonizeSettings()
    raw = settings.cdm_spec.parents[1] / "synthea_csv_v3_27pat"
    store = args.work / "vocabulary"
    if not (store / "store.json").is_file():
        build_store(settings.vocab_sources, store, load_spec(settings.cdm_spec))
    results = []
    for patients in args.patients:
        figures = run(patients, args.work, store, raw)
        print(
            f"{patients:>7} patients: {figures['source_rows']:>10,} source rows in "
            f"{figures['seconds']:6.1f} s = {figures['rows_per_second']:>9,} rows/s, "
            f"peak {figures['peak_rss_mb']:,} MB"
        )
        results.append(figures)
    out = ROOT / "bench" / "results" / "harmonize_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "target": "100k patients in under 120 s on 2 cores",
        "results": results,
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
