"""Dataset locations: local folders and object stores, chosen by URL scheme.

``open_location("s3://bucket/prefix")`` returns a :class:`Location` whose pyarrow filesystem
reads that prefix. Cloud schemes are imported lazily, so a site that reads local folders never
imports a cloud SDK.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from executors.errors import StorageError
from executors.storage.base import Location
from executors.storage.local import LocalLocation
from executors.storage.reader import read_parquet, read_schema

__all__ = ["LocalLocation", "Location", "open_location", "read_parquet", "read_schema"]

# scheme -> "module:Class"; each class lists its schemes in ``Location.schemes``.
_SCHEMES: dict[str, str] = {
    "": "executors.storage.local:LocalLocation",
    "file": "executors.storage.local:LocalLocation",
    "s3": "executors.storage.s3:S3Location",
    "az": "executors.storage.azure:AzureBlobLocation",
    "abfs": "executors.storage.azure:AzureBlobLocation",
    "abfss": "executors.storage.azure:AzureBlobLocation",
    "gs": "executors.storage.gcs:GcsLocation",
}


def open_location(url: str) -> Location:
    """The :class:`Location` for ``url`` (a folder path, ``file://``, or a registered scheme)."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(sorted(s for s in _SCHEMES if s)) or "none"
        raise StorageError(f"unsupported dataset location scheme {scheme!r} (known: {known})")
    module, _, name = target.partition(":")
    cls: type[Location] = getattr(importlib.import_module(module), name)
    return cls(url)
