"""``fedflow pki`` and ``fedflow site``: certificates that chain; a service that refuses HTTP."""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from executors.quarantine import Quarantine
from fedflow.cli.pki import app as pki_app
from fedflow.cli.site import app as site_app
from fedflow.core.messages import JobState
from governance.audit import AuditLog
from tests.quarantined import age, run

runner = CliRunner()


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_makes_a_ca_and_server_and_client_certificates_that_chain(tmp_path: Path) -> None:
    assert runner.invoke(pki_app, ["init", "--dir", str(tmp_path)]).exit_code == 0
    ca = _cert(tmp_path / "ca.pem")
    server = runner.invoke(pki_app, ["issue", "--dir", str(tmp_path), "site-a", "--host", "::1"])
    client = runner.invoke(pki_app, ["issue", "--dir", str(tmp_path), "orch", "--client"])
    assert server.exit_code == 0 and client.exit_code == 0, server.output + client.output
    for name, usage in (("site-a", "SERVER_AUTH"), ("orch", "CLIENT_AUTH")):
        cert = _cert(tmp_path / f"{name}.pem")
        cert.verify_directly_issued_by(ca)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [getattr(ExtendedKeyUsageOID, usage)]
        assert stat.S_IMODE((tmp_path / f"{name}.key.pem").stat().st_mode) == 0o600
    san = _cert(tmp_path / "site-a.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    # init keeps an existing CA: certificates issued before still chain
    assert runner.invoke(pki_app, ["init", "--dir", str(tmp_path)]).exit_code == 0
    _cert(tmp_path / "orch.pem").verify_directly_issued_by(_cert(tmp_path / "ca.pem"))
    missing = runner.invoke(pki_app, ["issue", "--dir", str(tmp_path / "none"), "x"])
    assert missing.exit_code == 2 and "no usable CA" in missing.output


def _site(tmp_path: Path, **extra: object) -> Path:
    config = {
        "site": "site-a",
        "datasets": {"omop": {"location": "data"}},
        "policy": "policy.yaml",
        "state_dir": "state",
        **extra,
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_serve_refuses_plain_http_and_half_configured_tls(tmp_path: Path) -> None:
    plain = runner.invoke(site_app, ["serve", "--config", str(_site(tmp_path))])
    assert plain.exit_code == 2 and "plain HTTP" in plain.output
    half = _site(tmp_path, service={"tls_cert": "a.pem"})
    result = runner.invoke(site_app, ["serve", "--config", str(half)])
    assert result.exit_code == 2 and "go together" in result.output


def test_receipt_key_is_made_once_and_openapi_lists_the_v1_api(tmp_path: Path) -> None:
    config = _site(tmp_path)
    first = runner.invoke(site_app, ["receipt-key", "--config", str(config)])
    second = runner.invoke(site_app, ["receipt-key", "--config", str(config)])
    assert first.exit_code == 0 and first.output.startswith("-----BEGIN PUBLIC KEY-----")
    assert first.output == second.output
    assert stat.S_IMODE((tmp_path / "state" / "receipt.key.pem").stat().st_mode) == 0o600
    document = json.loads(runner.invoke(site_app, ["openapi"]).output)
    assert set(document["paths"]) == {
        "/v1/health",
        "/v1/info",
        "/v1/checkpoint",
        "/v1/check",
        "/v1/jobs",
        "/v1/steps",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/release",
        "/v1/jobs/{job_id}/result",
    }


def test_prune_jobs_deletes_old_finished_jobs_and_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _site(tmp_path)
    quarantine = Quarantine(tmp_path / "state" / "quarantine")
    for number in (1, 2):
        run(quarantine, number, finish=True)
    age(tmp_path / "state" / "quarantine" / "finished", "job001", 40)
    pruned = runner.invoke(site_app, ["prune-jobs", "-c", str(config), "--older-than", "30"])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith("deleted 1 finished job(s) from before ")
    with AuditLog(tmp_path / "state" / "audit.db", site="site-a") as log:
        [entry] = log.entries(event="quarantine.pruned")
        assert entry.details["jobs"] == 1 and log.verify().ok
    assert Quarantine(tmp_path / "state" / "quarantine").get("job002").state is JobState.REFUSED
    negative = runner.invoke(site_app, ["prune-jobs", "-c", str(config), "--older-than", "-1"])
    assert negative.exit_code == 2
    # a file that cannot be deleted: a clear error, audited, and the other jobs kept

    def refused(self: Quarantine, before: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Quarantine, "prune", refused)
    failed = runner.invoke(site_app, ["prune-jobs", "-c", str(config), "--older-than", "0"])
    assert failed.exit_code == 1
    assert "cannot prune" in failed.output and "Permission denied" in failed.output
    with AuditLog(tmp_path / "state" / "audit.db", site="site-a") as log:
        [entry] = log.entries(event="quarantine.prune_failed")
        assert entry.details["error"] == "PermissionError" and log.verify().ok
    assert (tmp_path / "state" / "quarantine" / "finished" / "job002.json").exists()
