"""Azure Blob locations against Azurite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from executors.errors import StorageAccessDenied, StorageError
from executors.storage import open_location, read_parquet
from executors.storage.azure import AzureBlobLocation

pytestmark = pytest.mark.integration

# A syntactically valid account key that is not Azurite's.
WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="


@pytest.mark.parametrize(
    ("url", "account"),
    [
        ("abfs://data@contoso.dfs.core.windows.net/omop/v1", "contoso"),
        ("abfss://data@contoso.dfs.core.windows.net/omop/v1", "contoso"),
        ("az://data@contoso.blob.core.windows.net/omop/v1", "contoso"),
    ],
)
def test_account_in_the_url(
    url: str, account: str, store_env: Callable[[Any], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", WRONG_KEY)
    location = open_location(url)
    assert isinstance(location, AzureBlobLocation)
    assert (location.bucket, location.prefix) == ("data", "omop/v1")
    assert location.store.client.url.startswith(f"https://{account}.blob.core.windows.net")


def test_account_from_the_environment(
    store_env: Callable[[Any], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StorageError, match="no Azure storage account"):
        open_location("az://data/omop")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "contoso")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "sv=2024-01-01&sig=abc")
    location = open_location("az://data/omop")
    assert isinstance(location, AzureBlobLocation)
    assert location.store.client.url.startswith("https://contoso.blob.core.windows.net")


def test_wrong_account_key_is_named_and_the_site_keeps_reading(
    get_store: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = get_store("az")
    healthy = open_location(store.url("omop"))
    good = store.env["AZURE_STORAGE_CONNECTION_STRING"]
    key = good.split("AccountKey=")[1].split(";")[0]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", good.replace(key, WRONG_KEY))
    denied = open_location(store.url("omop"))
    with pytest.raises(StorageAccessDenied, match="access denied") as caught:
        read_parquet(denied, "person", ["person_id"])
    assert "'person.parquet' of dataset location az://eunomia/omop" in str(caught.value)
    with pytest.raises(StorageAccessDenied, match=r"az://eunomia/omop: access denied"):
        denied.fingerprints()
    assert read_parquet(healthy, "person", ["person_id"]).num_rows == 2694
