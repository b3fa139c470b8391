"""GCS locations against gcp-storage-emulator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from executors.errors import StorageAccessDenied
from executors.storage import open_location
from executors.storage.gcs import GcsLocation, GcsStore

pytestmark = pytest.mark.integration


def test_generation_changes_on_every_write(get_store: Callable[[str], Any]) -> None:
    store = get_store("gs")
    prefix = f"scratch-{uuid.uuid4().hex[:8]}"
    store.put(f"{prefix}/t.parquet", b"PAR1 same bytes PAR1")
    location = open_location(store.url(prefix))
    assert isinstance(location, GcsLocation)
    before = location.fingerprints()["t.parquet"]
    assert before.startswith("generation:")
    store.put(f"{prefix}/t.parquet", b"PAR1 same bytes PAR1")
    assert location.fingerprints()["t.parquet"] != before


def test_forbidden_is_access_denied(get_store: Callable[[str], Any]) -> None:
    # The emulator has no authentication, so the SDK's own 403 error stands in for a denial.
    get_store("gs")
    store = GcsStore()
    found = store.classify(gexc.Forbidden("caller does not have storage.objects.get access"))
    assert found is not None and found[0] is StorageAccessDenied
