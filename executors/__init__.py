"""The site node: dataset catalogue, Dask cluster, gates, and the transports that reach it."""

from executors.catalogue import Catalogue, Dataset
from executors.config import SiteConfig
from executors.errors import (
    AnalysisFailed,
    CorruptObject,
    DatasetNotFound,
    FitNotOpen,
    JobNotFound,
    ObjectNotFound,
    RequestRefused,
    SiteError,
    SiteUnavailable,
    StorageAccessDenied,
    StorageError,
)
from executors.node import SiteNode
from executors.transport import HttpsSiteTransport, InProcessSiteTransport, SiteTransport

__all__ = [
    "AnalysisFailed",
    "Catalogue",
    "CorruptObject",
    "Dataset",
    "DatasetNotFound",
    "FitNotOpen",
    "HttpsSiteTransport",
    "InProcessSiteTransport",
    "JobNotFound",
    "ObjectNotFound",
    "RequestRefused",
    "SiteConfig",
    "SiteError",
    "SiteNode",
    "SiteTransport",
    "SiteUnavailable",
    "StorageAccessDenied",
    "StorageError",
]
