"""A dataset in Google Cloud Storage: ``gs://<bucket>/<prefix>``.

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, GKE workload identity, the metadata server);
``STORAGE_EMULATOR_HOST`` points the client at an emulator (anonymous credentials then).
Fingerprints are the objects' generation and MD5, read from a listing: a generation changes on
every write, even of identical bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import storage

from executors.errors import ObjectNotFound, StorageAccessDenied, StorageError
from executors.storage.objectstore import ObjectInfo, ObjectStore, ObjectStoreLocation

__all__ = ["GcsLocation", "GcsStore"]


class GcsStore(ObjectStore):
    """Object reads through a google-cloud-storage client."""

    def __init__(self, client: storage.Client | None = None) -> None:
        try:
            self.client = client or storage.Client()
        except auth_exc.DefaultCredentialsError as exc:
            raise StorageAccessDenied(
                "no Google Application Default Credentials found (set "
                "GOOGLE_APPLICATION_CREDENTIALS or run on a workload identity)"
            ) from exc

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        blob = self.client.bucket(bucket).get_blob(key)
        return None if blob is None else _info(blob)

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        for blob in self.client.list_blobs(bucket, prefix=prefix or None):
            yield _info(blob)

    def read_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        blob = self.client.bucket(bucket).blob(key)
        # A ranged download carries no whole-object checksum to verify.
        data: bytes = blob.download_as_bytes(start=start, end=stop - 1, checksum=None)
        return data

    def classify(self, exc: BaseException) -> tuple[type[StorageError], str] | None:
        if isinstance(exc, gexc.NotFound):
            # Only a listing (``.../b/<bucket>/o``) fails with 404 for a missing bucket alone.
            url = str(getattr(getattr(exc, "response", None), "url", ""))
            if urlsplit(url).path.endswith("/o"):
                return ObjectNotFound, "the bucket does not exist"
            return ObjectNotFound, "no such object"
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized | auth_exc.GoogleAuthError):
            return StorageAccessDenied, f"access denied ({type(exc).__name__})"
        if isinstance(exc, gexc.GoogleAPIError):
            return StorageError, f"GCS error ({type(exc).__name__})"
        return None


class GcsLocation(ObjectStoreLocation):
    """``gs://<bucket>/<prefix>`` read with Application Default Credentials."""

    schemes: ClassVar[tuple[str, ...]] = ("gs",)

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path | str | None = None,
        client: storage.Client | None = None,
    ) -> None:
        super().__init__(url, cache_dir=cache_dir)
        self.store = GcsStore(client)


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(
        blob.name,
        int(blob.size or 0),
        blob.updated,
        f"generation:{blob.generation}:md5:{blob.md5_hash}",
    )
