"""FHIR harmonization throughput: the 7 shared bundles copied with fresh ids.

Every UUID in a copy gets a copy number in its last five digits (references stay consistent),
so copies are distinct patients. Reports resources per second (all entries, validated or
counted out of scope) and peak memory of a fresh process.

    python bench/harmonize_fhir.py --copies 20

Writes ``bench/results/harmonize_fhir.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from harmonize.settings import HarmonizeSettings
from harmonize.spec import load_spec
from harmonize.vocabulary import build_store

ROOT = Path(__file__).resolve().parents[1]
_UUID = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{7})[0-9a-f]{5}")

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from harmonize import harmonize_fhir, HarmonizeSettings
settings = HarmonizeSettings(vocab_store=Path(sys.argv[3]))
began = time.perf_counter()
report = harmonize_fhir(Path(sys.argv[1]), Path(sys.argv[2]), settings=settings)
seconds = time.perf_counter() - began
print(json.dumps({"seconds": round(seconds, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "resources": sum(a.read for a in report.accounts
                                   if a.source_table != "Observation.component"),
                  "persons": report.cdm_rows["person"], "balanced": report.balanced(),
                  "coverage": round(report.mapping_coverage, 4)}))
"""


def main() -> None:
    """Copy, harmonize in a subprocess, write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/fedflow-bench-harmonize"))
    args = parser.parse_args()
    settings = HarmonizeSettings()
    source = settings.cdm_spec.parents[1] / "synthea_fhir_r4"
    store = args.work / "vocabulary"
    if not (store / "store.json").is_file():
        build_store(settings.vocab_sources, store, load_spec(settings.cdm_spec))
    bundles = args.work / f"fhir_{args.copies}"
    bundles.mkdir(parents=True, exist_ok=True)
    for bundle in sorted(source.glob("*.json")):
        text = bundle.read_text()
        for copy in range(args.copies):
            renamed = _UUID.sub(rf"\g<1>{copy:05d}", text)
            (bundles / f"{bundle.stem}-{copy:05d}.json").write_text(renamed)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(bundles), str(args.work / "omop_fhir"), str(store)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    figures["bundles"] = args.copies * 7
    figures["resources_per_second"] = round(figures["resources"] / figures["seconds"])
    print(
        f"{figures['bundles']} bundles, {figures['resources']:,} resources, "
        f"{figures['persons']} persons: {figures['seconds']} s = "
        f"{figures['resources_per_second']:,} resources/s, peak {figures['peak_rss_mb']:,} MB"
    )
    out = ROOT / "bench" / "results" / "harmonize_fhir.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
