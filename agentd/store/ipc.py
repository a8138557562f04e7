"""Arrow tables as text, for rows that ride along a pipe message (``CommitHint.steps_ipc``).

Why: the gateway tails ``steps`` by table version. Reading a version back costs a scan of the
table (9-15 ms at 1,000 sessions), while the worker that committed it still holds the rows.
An Arrow IPC stream keeps the exact schema and values the writer committed, so the gateway
decodes hinted rows and read rows with one code path (``agentd.gateway.rows``).
"""

from __future__ import annotations

import base64

import pyarrow as pa

__all__ = ["table_from_text", "table_to_text"]


def table_to_text(table: pa.Table, max_bytes: int) -> str | None:
    """``table`` as base64 Arrow IPC, or None when its encoding exceeds ``max_bytes``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    buffer = sink.getvalue()
    if buffer.size > max_bytes:
        return None
    return base64.b64encode(memoryview(buffer)).decode("ascii")


def table_from_text(text: str) -> pa.Table:
    """The table ``table_to_text`` encoded; ValueError when ``text`` is not one."""
    try:
        data = base64.b64decode(text, validate=True)
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            return reader.read_all()
    except (ValueError, pa.ArrowInvalid) as exc:
        raise ValueError(f"not an Arrow IPC stream: {exc}") from exc
