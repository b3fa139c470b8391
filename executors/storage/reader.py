"""Reading parquet tables from any dataset location, with errors that name the object.

:func:`read_parquet` and :func:`read_schema` read ``<root>/<table>.parquet`` through the
location's pyarrow filesystem (ranged reads, column projection, row-group filters) and turn
failures into :class:`~executors.errors.StorageError` subclasses that name the dataset location
and the object, never the object's contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from executors.errors import CorruptObject, ObjectNotFound, StorageError
from executors.storage.base import Location
from fedflow.core.errors import InvalidRequest

__all__ = ["read_parquet", "read_schema"]


def _open(location: Location, table: str) -> tuple[pads.Dataset, str]:
    name = f"{table}.parquet"
    path = location.path(name)
    where = f"object {name!r} of dataset location {location.url}"
    fs = location.filesystem
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise ObjectNotFound(f"{where}: no such object")
    try:
        return pads.dataset(path, filesystem=fs, format="parquet"), where
    except StorageError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptObject(f"{where} is not a readable parquet file") from exc


def read_schema(location: Location, table: str) -> pa.Schema:
    """The schema of ``<root>/<table>.parquet`` (from its footer only)."""
    return _open(location, table)[0].schema


def _filter_columns(filters: Any) -> set[str]:
    """Column names used by pyarrow's list-of-tuples filters (empty for an expression)."""
    if not isinstance(filters, list):
        return set()
    terms = [t for group in filters for t in (group if isinstance(group, list) else [group])]
    return {t[0] for t in terms if isinstance(t, tuple) and t and isinstance(t[0], str)}


def read_parquet(
    location: Location,
    table: str,
    columns: Sequence[str] | None = None,
    filters: Any = None,
) -> pa.Table:
    """Read ``<root>/<table>.parquet`` with column projection and pyarrow ``filters``.

    Raises :class:`~executors.errors.ObjectNotFound`, ``StorageAccessDenied`` or
    :class:`~executors.errors.CorruptObject` naming the location and object, and
    :class:`~fedflow.core.errors.InvalidRequest` for columns the table does not have.
    """
    dataset, where = _open(location, table)
    wanted = set(columns or ()) | _filter_columns(filters)
    missing = sorted(wanted - set(dataset.schema.names))
    if missing:
        raise InvalidRequest(f"{where} has no column(s) {', '.join(missing)}")
    expression = pq.filters_to_expression(filters) if filters else None
    try:
        return dataset.to_table(
            columns=list(columns) if columns is not None else None, filter=expression
        )
    except StorageError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"{where} is not a readable parquet file") from exc
