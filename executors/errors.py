"""Errors of the site node and the transports that reach it.

::

    FedflowError
    └── SiteError                        anything that goes wrong at or on the way to a site
        ├── SiteUnavailable              the site cannot be reached or did not answer in time
        ├── RequestRefused               the site's gate refused the request (carries the reasons)
        ├── JobNotFound (LookupError)    no job with that id at this site
        │   └── FitNotOpen               no open fit for a step: use the full protocol
        ├── AnalysisFailed               the analysis raised while running at the site
        └── StorageError                 a dataset's files cannot be read
            ├── DatasetNotFound (LookupError)
            ├── ObjectNotFound (FileNotFoundError)
            ├── StorageAccessDenied (PermissionError)
            └── CorruptObject
"""

from __future__ import annotations

from fedflow.core.errors import FedflowError

__all__ = [
    "AnalysisFailed",
    "CorruptObject",
    "DatasetNotFound",
    "FitNotOpen",
    "JobNotFound",
    "ObjectNotFound",
    "RequestRefused",
    "SiteError",
    "SiteUnavailable",
    "StorageAccessDenied",
    "StorageError",
]


class SiteError(FedflowError):
    """Anything that goes wrong at, or on the way to, a site."""


class SiteUnavailable(SiteError):
    """The site cannot be reached or did not answer in time."""


class RequestRefused(SiteError):
    """The site's gate refused the request; ``reasons`` says why."""

    def __init__(
        self, message: str, *, reasons: tuple[str, ...] = (), **context: str | None
    ) -> None:
        super().__init__(message, **context)
        self.reasons = reasons


class JobNotFound(SiteError, LookupError):
    """No job with that id at this site."""


class FitNotOpen(JobNotFound):
    """The site has no open fit the step belongs to (:mod:`executors.fits`): send the request
    through the full protocol (pre-gate, run, airlock), which decides afresh."""


class AnalysisFailed(SiteError):
    """The analysis raised while running at the site."""


class StorageError(SiteError):
    """A dataset's files cannot be read; names the dataset and object, never their contents."""


class DatasetNotFound(StorageError, LookupError):
    """The site has no dataset of that name."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """A bucket, container or object a dataset needs does not exist."""


class StorageAccessDenied(StorageError, PermissionError):
    """The site's credentials may not read the object."""


class CorruptObject(StorageError):
    """An object exists but is not a readable parquet file."""
