"""Where a dataset's files lie: a pyarrow filesystem, a root in it, and object fingerprints.

Readers use :attr:`Location.filesystem` with pyarrow's parquet reader, which issues ranged
reads and reads only the projected columns and the row groups a filter keeps, so a dataset in
object storage is never downloaded whole.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import pyarrow.fs as pafs

__all__ = ["Location"]


class Location(ABC):
    """A dataset location. Subclasses serve one URL scheme."""

    schemes: ClassVar[tuple[str, ...]]

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    @abstractmethod
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem that reads this location."""

    @property
    @abstractmethod
    def root(self) -> str:
        """The dataset's folder inside :attr:`filesystem` (no trailing slash)."""

    @abstractmethod
    def fingerprints(self) -> dict[str, str]:
        """``{relative path: fingerprint}`` of every file (a content hash, ETag or generation).

        The dataset's snapshot digest is computed from this, so any change of content changes it.
        """

    def names(self) -> list[str]:
        """The relative path of every file, sorted (from the listing: no content is read)."""
        return sorted(self.fingerprints())

    def path(self, relative: str) -> str:
        """The filesystem path of a file in this location."""
        return f"{self.root}/{relative}" if self.root else relative

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
