"""A dataset in Azure Blob Storage.

URL forms: ``az://<container>/<prefix>``, or with the account in the URL
``abfs[s]://<container>@<account>.dfs.core.windows.net/<prefix>`` (the ADLS Gen2 form; also
``az://<container>@<account>.blob.core.windows.net/<prefix>``). Without an account in the URL it
comes from the environment the Azure CLI and SDK samples use:

1. ``AZURE_STORAGE_CONNECTION_STRING`` (account, key or SAS, and endpoint: Azurite uses this);
2. ``AZURE_STORAGE_ACCOUNT_URL`` or ``AZURE_STORAGE_ACCOUNT`` (name), with ``AZURE_STORAGE_KEY``
   or ``AZURE_STORAGE_SAS_TOKEN`` when set, else ``DefaultAzureCredential`` from azure-identity
   (managed identity, workload identity on AKS, environment service principal, Azure CLI login).

Fingerprints are the blobs' ETags, read from a listing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient

from executors.errors import ObjectNotFound, StorageAccessDenied, StorageError
from executors.storage.objectstore import ObjectInfo, ObjectStore, ObjectStoreLocation

__all__ = ["AzureBlobLocation", "AzureBlobStore", "blob_service_client"]

_MISSING_CONTAINER = "ContainerNotFound"


def blob_service_client(account_host: str | None = None) -> BlobServiceClient:
    """A client for ``account_host`` (``<account>.blob.core.windows.net``) or the environment's."""
    env = os.environ
    if account_host is None and env.get("AZURE_STORAGE_CONNECTION_STRING"):
        return BlobServiceClient.from_connection_string(
            env["AZURE_STORAGE_CONNECTION_STRING"], retry_total=2
        )
    if account_host is not None:
        url = f"https://{account_host.replace('.dfs.', '.blob.')}"
    elif env.get("AZURE_STORAGE_ACCOUNT_URL"):
        url = env["AZURE_STORAGE_ACCOUNT_URL"]
    elif env.get("AZURE_STORAGE_ACCOUNT"):
        url = f"https://{env['AZURE_STORAGE_ACCOUNT']}.blob.core.windows.net"
    else:
        raise StorageError(
            "no Azure storage account: use az://<container>@<account>.blob.core.windows.net/... "
            "or set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_URL or "
            "AZURE_STORAGE_ACCOUNT"
        )
    credential: Any = env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_SAS_TOKEN")
    if not credential:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(url, credential=credential, retry_total=2)


class AzureBlobStore(ObjectStore):
    """Object reads through an azure-storage-blob service client."""

    def __init__(self, client: BlobServiceClient) -> None:
        self.client = client

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            props = self.client.get_blob_client(bucket, key).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _error_code(exc) == _MISSING_CONTAINER:
                raise
            return None
        return ObjectInfo(key, props.size, props.last_modified, _fingerprint(props))

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        container = self.client.get_container_client(bucket)
        for props in container.list_blobs(name_starts_with=prefix or None):
            yield ObjectInfo(props.name, props.size, props.last_modified, _fingerprint(props))

    def read_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        blob = self.client.get_blob_client(bucket, key)
        return blob.download_blob(offset=start, length=stop - start, max_concurrency=1).readall()

    def classify(self, exc: BaseException) -> tuple[type[StorageError], str] | None:
        if isinstance(exc, ResourceNotFoundError):
            if _error_code(exc) == _MISSING_CONTAINER:
                return ObjectNotFound, "the container does not exist"
            return ObjectNotFound, "no such object"
        if isinstance(exc, ClientAuthenticationError) or (
            isinstance(exc, HttpResponseError) and exc.status_code in (401, 403)
        ):
            code = _error_code(exc) or type(exc).__name__
            return StorageAccessDenied, f"access denied ({code})"
        if isinstance(exc, HttpResponseError):
            return StorageError, f"Azure Blob error {_error_code(exc) or exc.status_code}"
        if isinstance(exc, AzureError):
            return StorageError, f"Azure Blob unreachable ({type(exc).__name__})"
        return None


class AzureBlobLocation(ObjectStoreLocation):
    """A container prefix in Azure Blob Storage (see the module docstring for URL forms)."""

    schemes: ClassVar[tuple[str, ...]] = ("az", "abfs", "abfss")

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path | str | None = None,
        client: BlobServiceClient | None = None,
    ) -> None:
        self._account_host: str | None = None
        super().__init__(url, cache_dir=cache_dir)
        self.store = AzureBlobStore(client or blob_service_client(self._account_host))

    def _split(self, netloc: str, path: str) -> tuple[str, str]:
        container, at, host = netloc.partition("@")
        if at:
            self._account_host = host
        return container, path


def _error_code(exc: BaseException) -> str | None:
    """The storage service's error code (``BlobNotFound``, ``AuthenticationFailed``...)."""
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def _fingerprint(props: Any) -> str:
    return f"etag:{str(props.etag).strip(chr(34))}"
