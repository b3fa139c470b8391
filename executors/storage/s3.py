"""A dataset in Amazon S3 (or any S3-compatible store): ``s3://<bucket>/<prefix>``.

Credentials and endpoint come from boto3's standard chain: environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``),
shared config files, web identity (EKS IRSA), container and instance roles; ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) points at an S3-compatible endpoint such as MinIO or moto.
Fingerprints are the objects' ETags, read from a listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from executors.errors import ObjectNotFound, StorageAccessDenied, StorageError
from executors.storage.objectstore import ObjectInfo, ObjectStore, ObjectStoreLocation

__all__ = ["S3Location", "S3Store"]

_MISSING_OBJECT = {"404", "NoSuchKey", "NotFound"}
_DENIED = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
}


class S3Store(ObjectStore):
    """Object reads through a boto3 S3 client."""

    def __init__(self, client: Any | None = None) -> None:
        # Few, quick retries: a dataset read is retried by the caller, not by minutes of backoff.
        config = Config(retries={"max_attempts": 3, "mode": "standard"})
        self.client = client or boto3.session.Session().client("s3", config=config)

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            meta = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING_OBJECT:
                return None
            raise
        return ObjectInfo(key, meta["ContentLength"], meta.get("LastModified"), _etag(meta))

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", ()):
                yield ObjectInfo(obj["Key"], obj["Size"], obj.get("LastModified"), _etag(obj))

    def read_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        reply = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")
        data: bytes = reply["Body"].read()
        return data

    def classify(self, exc: BaseException) -> tuple[type[StorageError], str] | None:
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                return ObjectNotFound, "the bucket does not exist"
            if code in _MISSING_OBJECT:
                return ObjectNotFound, "no such object"
            if code in _DENIED:
                return StorageAccessDenied, f"access denied ({code})"
            return StorageError, f"S3 error {code}"
        if isinstance(exc, NoCredentialsError):
            return StorageAccessDenied, "no AWS credentials found in the standard chain"
        if isinstance(exc, BotoCoreError):
            return StorageError, f"S3 unreachable ({type(exc).__name__})"
        return None


class S3Location(ObjectStoreLocation):
    """``s3://<bucket>/<prefix>`` read with boto3's standard credential chain."""

    schemes: ClassVar[tuple[str, ...]] = ("s3",)

    def __init__(
        self, url: str, *, cache_dir: Path | str | None = None, client: Any | None = None
    ) -> None:
        super().__init__(url, cache_dir=cache_dir)
        self.store = S3Store(client)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _etag(meta: dict[str, Any]) -> str:
    return f"etag:{str(meta.get('ETag', '')).strip(chr(34))}"
