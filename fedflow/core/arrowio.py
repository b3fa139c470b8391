"""Arrow IPC: how tables cross every boundary (site to orchestrator, quarantine to disk)."""

from __future__ import annotations

import pyarrow as pa

from fedflow.core.errors import InvalidRequest, PayloadTooLarge

__all__ = ["DEFAULT_MAX_IPC_BYTES", "from_ipc", "to_ipc"]

DEFAULT_MAX_IPC_BYTES = 64 * 1024 * 1024


def to_ipc(table: pa.Table) -> bytes:
    """Serialise a table to the Arrow IPC stream format."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(data: bytes, *, max_bytes: int = DEFAULT_MAX_IPC_BYTES) -> pa.Table:
    """Read an Arrow IPC stream, refusing oversize or corrupt payloads with a clear error."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"Arrow payload of {len(data)} bytes exceeds the {max_bytes} limit")
    try:
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise InvalidRequest(
            "payload is not a valid Arrow IPC stream", reason=type(exc).__name__
        ) from exc
