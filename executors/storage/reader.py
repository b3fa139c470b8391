"""Reading parquet tables from any dataset location, with errors that name the object.

:func:`read_parquet` and :func:`read_schema` read ``<root>/<table>.parquet`` through the
location's pyarrow filesystem and turn failures into :class:`~executors.errors.StorageError`
subclasses that name the dataset location and the object, never the object's contents.

A read opens the one file, keeps the row groups whose statistics can match the filter, reads
only the wanted column chunks of those (ranged reads on object stores), then applies the exact
filter. It uses no dataset discovery and no pyarrow thread pool: a site's Dask workers already
read in parallel, and pyarrow's discovery, called from many worker threads at once, deadlocked
here (every thread waiting, the CPU idle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from executors.errors import CorruptObject, ObjectNotFound, StorageError
from executors.storage.base import Location
from fedflow.core.errors import InvalidRequest

__all__ = ["read_parquet", "read_schema"]

# For ``column OP value``: can a row group whose values lie in [low, high] hold a match?
_MAY_MATCH: dict[str, Callable[[Any, Any, Any], bool]] = {
    "==": lambda low, high, v: low <= v <= high,
    "=": lambda low, high, v: low <= v <= high,
    "<": lambda low, high, v: low < v,
    "<=": lambda low, high, v: low <= v,
    ">": lambda low, high, v: high > v,
    ">=": lambda low, high, v: high >= v,
}


def _open(location: Location, table: str) -> tuple[pq.ParquetFile, str]:
    name = f"{table}.parquet"
    path = location.path(name)
    where = f"object {name!r} of dataset location {location.url}"
    fs = location.filesystem
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise ObjectNotFound(f"{where}: no such object")
    try:
        return pq.ParquetFile(fs.open_input_file(path)), where
    except StorageError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CorruptObject(f"{where} is not a readable parquet file") from exc


def read_schema(location: Location, table: str) -> pa.Schema:
    """The schema of ``<root>/<table>.parquet`` (from its footer only)."""
    return _open(location, table)[0].schema_arrow


def _filter_columns(filters: Any) -> set[str]:
    """Column names used by pyarrow's list-of-tuples filters (empty for an expression)."""
    if not isinstance(filters, list):
        return set()
    terms = [t for group in filters for t in (group if isinstance(group, list) else [group])]
    return {t[0] for t in terms if isinstance(t, tuple) and t and isinstance(t[0], str)}


def _row_groups(file: pq.ParquetFile, filters: Any) -> list[int]:
    """Row groups that may hold matches of a conjunction of ``(column, op, value)`` terms."""
    groups = list(range(file.num_row_groups))
    terms = filters if isinstance(filters, list) else []
    if not all(isinstance(t, tuple) and len(t) == 3 and t[1] in _MAY_MATCH for t in terms):
        return groups  # another filter form: no pruning; the exact filter decides
    names = file.schema_arrow.names
    kept = []
    for i in groups:
        meta = file.metadata.row_group(i)
        for column, op, value in terms:
            stats = meta.column(names.index(column)).statistics
            if (
                stats is not None
                and stats.has_min_max
                and not _MAY_MATCH[op](stats.min, stats.max, value)
            ):
                break
        else:
            kept.append(i)
    return kept


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
    file, where = _open(location, table)
    names = file.schema_arrow.names
    wanted = list(columns) if columns is not None else list(names)
    used = _filter_columns(filters)
    missing = sorted((set(wanted) | used) - set(names))
    if missing:
        raise InvalidRequest(f"{where} has no column(s) {', '.join(missing)}")
    read = wanted + sorted(used - set(wanted))
    try:
        data = file.read_row_groups(_row_groups(file, filters), columns=read, use_threads=False)
        if filters:
            data = data.filter(pq.filters_to_expression(filters))
    except StorageError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"{where} is not a readable parquet file") from exc
    return data.select(wanted)
