"""S3 locations against moto in server mode, with IAM authentication switched on."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from executors.errors import StorageAccessDenied, StorageError
from executors.storage import open_location, read_parquet
from executors.storage.s3 import S3Location

pytestmark = pytest.mark.integration


def test_scheme_and_url_parts() -> None:
    location = open_location("s3://site-data/omop/v1/")
    assert isinstance(location, S3Location)
    assert (location.bucket, location.prefix, location.root) == (
        "site-data",
        "omop/v1",
        "site-data/omop/v1",
    )
    assert location.path("person.parquet") == "site-data/omop/v1/person.parquet"


@pytest.mark.parametrize("who", ["wrong secret key", "user without a policy"])
def test_denied_credentials_are_named_and_the_site_keeps_reading(
    who: str, get_store: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = get_store("s3")
    healthy = open_location(store.url("omop"))
    if who == "wrong secret key":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + "x" * 25)
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.extra["nobody_key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.extra["nobody_secret"])
    denied = open_location(store.url("omop"))
    with pytest.raises(StorageAccessDenied, match="access denied") as caught:
        read_parquet(denied, "person", ["person_id"])
    assert "'person.parquet' of dataset location s3://eunomia/omop" in str(caught.value)
    with pytest.raises(StorageAccessDenied, match="dataset location s3://eunomia/omop"):
        denied.fingerprints()
    # Another dataset location with the site's own credentials still reads.
    assert read_parquet(healthy, "person", ["person_id"]).num_rows == 2694


def test_bucket_denied_by_policy_is_named(get_store: Callable[[str], Any]) -> None:
    store = get_store("s3")
    denied = open_location("s3://restricted/omop")
    with pytest.raises(StorageAccessDenied, match=r"s3://restricted/omop.*access denied"):
        read_parquet(denied, "person", ["person_id"])
    with pytest.raises(StorageAccessDenied, match="AccessDenied"):
        denied.fingerprints()
    assert read_parquet(open_location(store.url("omop")), "person").num_rows == 2694


def test_unreachable_endpoint_is_a_storage_error(
    store_env: Callable[[Any], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(StorageError, match=r"s3://eunomia/omop: S3 unreachable"):
        open_location("s3://eunomia/omop").fingerprints()
