"""``fedflow demo --transport https``: each site its own service process, stopped at the end."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedflow.cli import app
from governance.audit import AuditLog

pytestmark = pytest.mark.integration


def test_the_https_demo_runs_three_site_processes_and_stops_them(
    tmp_path: Path,
    prefect_server,  # type: ignore[no-untyped-def]
) -> None:
    root = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--dir", str(root), "--transport", "https"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert out.count("mutual TLS") == 3 and "federation-https.yaml" in out
    assert out.count("0 differ") == 3  # every released value equals the pooled answer
    for pid in re.findall(r"\(pid (\d+)\)", out):
        with pytest.raises(ProcessLookupError):  # each service process has exited
            os.kill(int(pid), 0)
    for site in ("eu-hospital", "us-clinic", "uk-registry"):
        assert '"service.stopping"' in (root / "logs" / f"{site}.log").read_text()
        with AuditLog(root / "sites" / site / "state" / "audit.db", site=site) as audit:
            assert audit.verify().ok
            assert audit.entries()[-1].event == "site.stopped"
    with AuditLog(root / "orchestrator" / "audit.db", site="orchestrator") as audit:
        receipts = [e.details["receipt"] for e in audit.entries(event="site.outcome")]
    assert sum(1 for r in receipts if r) == 8  # 3 + 3 + 2 releases (uk-registry refuses one)
