"""A dataset in a local folder (or a mounted network share)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pyarrow.fs as pafs

from executors.errors import ObjectNotFound
from executors.storage.base import Location
from fedflow.core.digest import digest_file

__all__ = ["LocalLocation"]


class LocalLocation(Location):
    """A folder on the site's own disk; fingerprints are SHA-256 digests of the file contents."""

    schemes: ClassVar[tuple[str, ...]] = ("", "file")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._path = Path(url.removeprefix("file://")).expanduser().resolve()
        self._fs = pafs.LocalFileSystem()

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    @property
    def root(self) -> str:
        return self._path.as_posix()

    def fingerprints(self) -> dict[str, str]:
        return {name: digest_file(self._path / name) for name in self.names()}

    def names(self) -> list[str]:
        """The files' relative paths, without reading them (a job lists its tables at every
        run; hashing every file each time was most of a small job's work)."""
        if not self._path.is_dir():
            raise ObjectNotFound(f"dataset folder {self._path} does not exist")
        return sorted(
            p.relative_to(self._path).as_posix() for p in self._path.rglob("*") if p.is_file()
        )
