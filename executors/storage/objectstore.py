"""Object stores as pyarrow filesystems: ranged reads, listings, fingerprints.

An object store is served to pyarrow as a read-only :class:`pyarrow.fs.PyFileSystem` whose files
issue one ranged GET per read, so pyarrow's parquet reader fetches the footer and then only the
column chunks it needs (column projection, row groups a filter keeps). Each cloud implements
:class:`ObjectStore` (three calls: head, list, read a byte range) and says which SDK errors mean a
missing bucket or object and which mean denied credentials; :class:`ObjectStoreLocation` turns
that into a :class:`~executors.storage.base.Location`.

Failures become :class:`~executors.errors.StorageError` subclasses that name the dataset
location and the object, never the object's contents.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from executors.errors import ObjectNotFound, StorageError
from executors.storage.base import Location

__all__ = [
    "CACHE_ENV",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStoreLocation",
    "TransferStats",
]

log = logging.getLogger(__name__)

CACHE_ENV = "FEDFLOW_STORAGE_CACHE"
"""Environment variable naming a folder where whole objects are cached (off when unset)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What an object store says about one object, without reading it."""

    key: str
    size: int
    mtime: datetime | None
    fingerprint: str


@dataclass
class TransferStats:
    """Ranged reads issued and bytes received by one location (for logs and tests)."""

    requests: int = 0
    bytes: int = 0


class ObjectStore(ABC):
    """The three calls a dataset location needs from a cloud SDK.

    Implementations raise the SDK's own errors; :meth:`classify` maps them to fedflow's.
    """

    @abstractmethod
    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Metadata of one object, or ``None`` when it does not exist."""

    @abstractmethod
    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (raises if the bucket is missing)."""

    @abstractmethod
    def read_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of an object, in one ranged request."""

    @abstractmethod
    def classify(self, exc: BaseException) -> tuple[type[StorageError], str] | None:
        """The fedflow error class and a short reason for an SDK error (``None``: not ours)."""


class _RangedFile(io.RawIOBase):
    """A seekable, read-only file whose every read is one ranged request."""

    def __init__(self, handler: _ObjectStoreHandler, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._handler, self._bucket, self._key, self._size = handler, bucket, key, size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        start = self._pos
        stop = min(start + len(buffer), self._size)
        while self._pos < stop:  # one request, unless a server answers a range only in part
            data = self._handler.read_range(self._bucket, self._key, self._pos, stop)
            if not data:
                break
            buffer[self._pos - start : self._pos - start + len(data)] = data
            self._pos += len(data)
        return self._pos - start


class _ObjectStoreHandler(pafs.FileSystemHandler):
    """A read-only pyarrow filesystem over an :class:`ObjectStore`; paths are ``bucket/key``."""

    def __init__(self, location: ObjectStoreLocation) -> None:
        self._location = location
        self._store = location.store
        self.stats = TransferStats()
        self._lock = threading.Lock()

    # -- errors ---------------------------------------------------------------------------
    def _fail(self, exc: BaseException, path: str) -> BaseException:
        found = self._store.classify(exc)
        if found is None:
            return exc
        cls, reason = found
        return cls(f"{self._location.describe(path)}: {reason}")

    def _head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return self._store.head(bucket, key)
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"{bucket}/{key}") from exc

    def _list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        try:
            return list(self._store.list(bucket, prefix))
        except StorageError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"{bucket}/{prefix}") from exc

    def read_range(self, bucket: str, key: str, start: int, stop: int) -> bytes:
        try:
            data = self._store.read_range(bucket, key, start, stop)
        except Exception as exc:
            raise self._fail(exc, f"{bucket}/{key}") from exc
        with self._lock:
            self.stats.requests += 1
            self.stats.bytes += len(data)
        return data

    # -- reading --------------------------------------------------------------------------
    def get_type_name(self) -> str:
        return f"fedflow-{type(self._store).__name__}"

    def normalize_path(self, path: str) -> str:
        return path.strip("/")

    def get_file_info(self, paths: Sequence[str]) -> list[pafs.FileInfo]:
        return [self._info(path.strip("/")) for path in paths]

    def _info(self, path: str) -> pafs.FileInfo:
        bucket, _, key = path.partition("/")
        if key:
            meta = self._head(bucket, key)
            if meta is not None:
                return pafs.FileInfo(path, pafs.FileType.File, size=meta.size, mtime=meta.mtime)
        # Not an object: a "folder" if some key lies under it. Listing also tells a missing bucket.
        children = self._list(bucket, f"{key}/" if key else "")
        kind = pafs.FileType.Directory if children or not key else pafs.FileType.NotFound
        return pafs.FileInfo(path, kind)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir.strip("/")
        bucket, _, key = base.partition("/")
        prefix = f"{key}/" if key else ""
        objects = self._list(bucket, prefix)
        if not objects and key and not selector.allow_not_found:
            raise ObjectNotFound(f"{self._location.describe(base)}: no such folder")
        infos: dict[str, pafs.FileInfo] = {}
        for obj in objects:
            parts = obj.key[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not selector.recursive:
                    break
                folder = f"{bucket}/{prefix}{'/'.join(parts[:depth])}"
                infos[folder] = pafs.FileInfo(folder, pafs.FileType.Directory)
            if len(parts) == 1 or selector.recursive:
                file = f"{bucket}/{obj.key}"
                infos[file] = pafs.FileInfo(
                    file, pafs.FileType.File, size=obj.size, mtime=obj.mtime
                )
        return list(infos.values())

    def open_input_file(self, path: str) -> pa.NativeFile:
        path = path.strip("/")
        bucket, _, key = path.partition("/")
        meta = self._head(bucket, key) if key else None
        if meta is None:
            raise ObjectNotFound(f"{self._location.describe(path)}: no such object")
        cache = self._location.cache_dir
        if cache is not None:
            return pa.memory_map(str(self._cached(cache, bucket, meta)))
        return pa.PythonFile(_RangedFile(self, bucket, key, meta.size), mode="r")

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _cached(self, cache: Path, bucket: str, meta: ObjectInfo) -> Path:
        """The whole object in the cache, keyed by its fingerprint (downloaded once)."""
        name = f"{self._location.scheme}://{bucket}/{meta.key}#{meta.fingerprint}"
        target = cache / hashlib.sha256(name.encode()).hexdigest()
        if not target.exists():
            cache.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")
            with partial.open("wb") as out:
                step = 64 << 20
                for start in range(0, meta.size, step):
                    out.write(
                        self.read_range(bucket, meta.key, start, min(start + step, meta.size))
                    )
            partial.replace(target)
            log.debug("cached %s (%d bytes)", name, meta.size)
        return target

    # -- a dataset location is read-only ---------------------------------------------------
    def _read_only(self, *_: Any) -> Any:
        raise PermissionError(f"{self._location.url}: dataset locations are read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ObjectStoreHandler) and other._location is self._location

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (e.g. to a Dask worker process) as its location, which reopens its SDK client.
        return (_ObjectStoreHandler, (self._location,))


class ObjectStoreLocation(Location):
    """A dataset under ``<scheme>://<bucket>/<prefix>`` in an object store.

    Subclasses build :attr:`store` from their SDK's standard credential chain. ``cache_dir``
    (default: the ``FEDFLOW_STORAGE_CACHE`` variable) keeps whole objects on local disk keyed
    by their fingerprint; without it every read is a ranged request.
    """

    store: ObjectStore

    def __init__(self, url: str, *, cache_dir: Path | str | None = None) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.bucket, self.prefix = self._split(parts.netloc, parts.path.strip("/"))
        if not self.bucket:
            raise StorageError(f"dataset location {url} names no bucket")
        env_cache = os.environ.get(CACHE_ENV)
        chosen = cache_dir if cache_dir is not None else env_cache
        self.cache_dir = Path(chosen).expanduser() if chosen else None
        self._handler: _ObjectStoreHandler | None = None
        self._fs: pafs.PyFileSystem | None = None

    def _split(self, netloc: str, path: str) -> tuple[str, str]:
        """``(bucket, prefix)`` from the URL's host and path (overridden by Azure's forms)."""
        return netloc, path

    def __reduce__(self) -> tuple[Any, ...]:
        # SDK clients do not pickle: a copy reopens the URL with the receiver's credentials.
        return (_reopen, (type(self), self.url, self.cache_dir))

    @property
    def filesystem(self) -> pafs.FileSystem:
        if self._fs is None:
            self._handler = _ObjectStoreHandler(self)
            self._fs = pafs.PyFileSystem(self._handler)
        return self._fs

    @property
    def stats(self) -> TransferStats:
        """Ranged requests and bytes this location has read so far."""
        _ = self.filesystem
        assert self._handler is not None
        return self._handler.stats

    @property
    def root(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def describe(self, path: str) -> str:
        """``object 'x' of dataset location URL`` for a ``bucket/key`` path."""
        relative = path.removeprefix(self.root).strip("/")
        return (
            f"object {relative!r} of dataset location {self.url}"
            if relative
            else (f"dataset location {self.url}")
        )

    def fingerprints(self) -> dict[str, str]:
        _ = self.filesystem
        assert self._handler is not None
        prefix = f"{self.prefix}/" if self.prefix else ""
        objects = self._handler._list(self.bucket, prefix)
        if not objects:
            raise ObjectNotFound(f"dataset location {self.url} holds no objects")
        return {obj.key[len(prefix) :]: obj.fingerprint for obj in objects}


def _reopen(cls: type[ObjectStoreLocation], url: str, cache_dir: Path | None) -> Location:
    return cls(url, cache_dir=cache_dir)
