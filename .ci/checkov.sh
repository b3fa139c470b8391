#!/usr/bin/env bash
# Run checkov on the Terraform modules and examples from its own virtual environment.
#
# checkov pins many dependencies (boto3, packaging, cachetools, ...) that would downgrade the
# project's, so it never goes into the project venv: on first use this script creates
# .cache/checkov-venv (override with FEDFLOW_CHECKOV_VENV) and installs a pinned checkov there,
# with uv when $PYTHON has it (the project's `infra` extra installs it: 5-10 s instead of pip's
# ~2.5 min for checkov's ~90 dependencies), else with pip.
#
#   .ci/checkov.sh                  # scan every module and example; exit 1 on any failed check
#   .ci/checkov.sh --json           # the same, as one JSON report per directory
#   .ci/checkov.sh --install-only   # create the venv if needed and print the checkov path
#   .ci/checkov.sh -d DIR [ARGS]    # run the checkov CLI with your own arguments
#
# The scan runs checkov's Terraform runner once per directory inside one Python process: importing
# checkov costs 10-15 s on two cores, the scans 2-5 s each, so one process for the five
# directories takes ~30 s where five checkov CLI runs take ~1.5-2.5 min. The CLI gets
# --skip-download to stay offline (no Prisma Cloud guideline lookups); the runner never calls out.
set -euo pipefail

CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDFLOW_CHECKOV_VENV:-$ROOT/.cache/checkov-venv}"
PYTHON="${PYTHON:-python3}"

installed_version() {
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("checkov"))' 2>/dev/null || true
}

install() {
  mkdir -p "$(dirname "$VENV")"
  # One installer at a time (parallel test sessions share the venv).
  exec 9>"$VENV.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [ "$(installed_version)" = "$CHECKOV_VERSION" ]; then return; fi
  rm -rf "$VENV"
  if "$PYTHON" -m uv --version >/dev/null 2>&1; then
    "$PYTHON" -m uv venv --quiet --python "$PYTHON" "$VENV" >&2
    "$PYTHON" -m uv pip install --quiet --python "$VENV/bin/python" "checkov==$CHECKOV_VERSION" >&2
  else
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "checkov==$CHECKOV_VERSION" >&2
  fi
}

if [ "$(installed_version)" != "$CHECKOV_VERSION" ]; then
  install
fi
CHECKOV="$VENV/bin/checkov"

if [ "${1:-}" = "--install-only" ]; then
  echo "$CHECKOV"
  exit 0
fi

if [ "$#" -gt 0 ] && [ "$1" != "--json" ]; then
  exec "$CHECKOV" --skip-download "$@"
fi

cd "$ROOT/infra/terraform"
exec "$VENV/bin/python" - "${1:-}" modules/*/ examples/*/ <<'PY'
import json
import sys

from checkov.runner_filter import RunnerFilter
from checkov.terraform.runner import Runner

as_json, directories = sys.argv[1] == "--json", [d.rstrip("/") for d in sys.argv[2:]]
reports, failed = {}, 0
for directory in directories:
    report = Runner().run(root_folder=directory, runner_filter=RunnerFilter(framework=["terraform"]))
    checks = [
        {"check_id": c.check_id, "check_name": c.check_name, "resource": c.resource,
         "file_path": c.file_path, "line": c.file_line_range[0]}
        for c in report.failed_checks
    ]
    reports[directory] = {
        "summary": report.get_summary(),
        "resource_count": len(report.resources),
        "failed_checks": checks,
    }
    failed += len(checks)
    if not as_json:
        summary = report.get_summary()
        print(f"{directory}: passed {summary['passed']}, failed {summary['failed']}, "
              f"skipped {summary['skipped']}, parsing errors {summary['parsing_errors']}")
        for c in checks:
            print(f"  {c['check_id']} {c['resource']} ({c['file_path']}:{c['line']}): {c['check_name']}")
if as_json:
    json.dump(reports, sys.stdout, indent=1)
sys.exit(1 if failed else 0)
PY
