"""Signed receipts: a release verifies only against the pinned key, its payload and its request."""

from __future__ import annotations

import stat
from pathlib import Path

import pyarrow as pa
import pytest

from fedflow.core import to_ipc
from fedflow.core.analysis import AnalysisRef
from fedflow.core.digest import digest_bytes
from fedflow.core.messages import Release, ReleaseOutcome, Request
from governance.errors import IssuerKeyInvalid, ReceiptInvalid
from governance.receipts import ReceiptKey, verify_release


def _request() -> Request:
    ref = AnalysisRef(name="cohort_count", version="1.0", code_digest="sha256:" + "1" * 64)
    return Request(analysis=ref, dataset="omop", token="a.b.c")


def _signed(key: ReceiptKey, request: Request, rows: int = 3) -> Release:
    payload = to_ipc(pa.table({"cohort": ["*"], "count": [rows]}))
    release = Release(
        site="site-a",
        request_id=request.request_id,
        job_id="job1",
        outcome=ReleaseOutcome.RELEASED,
        partial=payload,
        digests={
            "request": request.digest(),
            "policy": "sha256:" + "2" * 64,
            "result": digest_bytes(payload),
        },
    )
    return release.model_copy(update={"receipt": key.sign(release)})


def test_a_signed_release_verifies_and_survives_json(tmp_path: Path) -> None:
    key = ReceiptKey.load_or_create(tmp_path / "receipt.key.pem")
    assert stat.S_IMODE((tmp_path / "receipt.key.pem").stat().st_mode) == 0o600
    assert ReceiptKey.load_or_create(tmp_path / "receipt.key.pem").key_id == key.key_id
    request = _request()
    release = Release.model_validate_json(_signed(key, request).model_dump_json())
    receipt = verify_release(release, key.public_pem, site="site-a", request=request)
    assert receipt.key_id == key.key_id and len(receipt.signature) == 64


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("payload", "payload_changed"),
        ("digests", "mismatch"),
        ("signed_digests", "bad_signature"),
        ("site", "mismatch"),
        ("outcome", "mismatch"),
        ("other_key", "unknown_key"),
        ("no_receipt", "missing"),
        ("no_pin", "no_pinned_key"),
        ("other_request", "other_request"),
    ],
)
def test_every_change_is_refused_with_its_reason(tmp_path: Path, change: str, reason: str) -> None:
    key = ReceiptKey.load_or_create(tmp_path / "k.pem")
    request = _request()
    release = _signed(key, request)
    assert release.receipt is not None
    pinned: bytes | None = key.public_pem
    site = "site-a"
    if change == "payload":
        release = release.model_copy(update={"partial": _signed(key, request, 4).partial})
    elif change == "digests":
        release = release.model_copy(update={"digests": {**release.digests, "policy": "x"}})
    elif change == "signed_digests":
        forged = release.receipt.model_copy(update={"digests": {**release.digests, "policy": "x"}})
        release = release.model_copy(update={"receipt": forged, "digests": forged.digests})
    elif change == "site":
        site = "site-b"
    elif change == "outcome":
        release = release.model_copy(update={"outcome": ReleaseOutcome.SUPPRESSED})
    elif change == "other_key":
        pinned = ReceiptKey.load_or_create(tmp_path / "other.pem").public_pem
    elif change == "no_receipt":
        release = release.model_copy(update={"receipt": None})
    elif change == "no_pin":
        pinned = None
    elif change == "other_request":
        request = _request()
    with pytest.raises(ReceiptInvalid) as refused:
        verify_release(release, pinned, site=site, request=request)
    assert refused.value.reason == reason
    assert "3" not in refused.value.message  # names what failed, never a value


def test_a_key_file_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(IssuerKeyInvalid):
        ReceiptKey.load_or_create(tmp_path / "bad.pem")
