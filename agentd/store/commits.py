"""How one flush's rows get into the tables: the checks and repairs around the two commits.

Kept apart from ``BatchingWriter`` (which decides *when* to commit): a landed-but-failed append
must not be repeated (``landed``), a value the storage cannot hold is repaired instead of failing
every later flush (``to_arrow``), and a session row is only replaced by its owner's epoch or a
newer one (``upsert_sessions``: fencing inside the write).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa

from agentd.store.records import Record
from agentd.store.sql import sql_str

__all__ = ["FencedWrite", "append_versioned", "landed", "to_arrow", "upsert_sessions"]

log = logging.getLogger("agentd.store.writer")


async def append_versioned(table: Any, data: pa.Table) -> int | None:
    """Append ``data``; return the table version holding its rows, or None when that is unsure.

    LanceDB's ``add()`` reports the table's latest version once the commit is done, and when
    another process commits right after ours that is *its* version (seen: 2 adds in 900 with three
    processes appending; two commits then report one version). The gateway files a commit
    hint's rows under the version it names, so a wrong one delivers one batch twice and another
    never (the long chaos run: a subscriber got seq 2 right after 0). Only a report of exactly
    one version past the one read before the append is certainly ours; otherwise the hint goes
    without rows and the gateway reads the version from the table.
    """
    before = int(await table.version())
    reported = int((await table.add(data)).version)
    return reported if reported == before + 1 else None


async def landed(table: Any, data: pa.Table) -> bool:
    """Whether an append of ``data`` (steps) is in the table: an append commits all its rows or none."""
    if data.num_rows == 0:
        return True
    session_id, seq = data.column("session_id")[0].as_py(), data.column("seq")[0].as_py()
    try:
        return int(await table.count_rows(f"session_id = {sql_str(session_id)} AND seq = {int(seq)}")) > 0
    except Exception:
        return False  # cannot tell: the append is retried, as it would have been


_REPAIR_LOG_EVERY = 60.0
_repair_logged: dict[str, float] = {}


def to_arrow(record: type[Record], columns: list[list[Any]]) -> pa.Table:
    """Convert buffered columns; a value the schema cannot hold is repaired rather than poisoning the batch.

    One row the storage cannot hold (a plug-in agent's text with a lone surrogate, a number
    where a string belongs) would otherwise fail every flush of the worker forever. Strings are
    re-encoded with replacement characters, other bad values of nullable columns become null;
    the repair is logged once per column and flush.
    """
    try:
        return record.arrow_from_columns(columns)
    except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError) as exc:
        first_error = exc
    arrays = []
    for column, spec in zip(columns, record.SCHEMA, strict=True):
        try:
            arrays.append(pa.array(column, type=spec.type))
            continue
        except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
            pass
        repaired = [_repair(value, spec) for value in column]
        key = f"{record.__name__}.{spec.name}"
        now = time.monotonic()
        if now - _repair_logged.get(key, -_REPAIR_LOG_EVERY) >= _REPAIR_LOG_EVERY:  # an agent may do it every tick
            _repair_logged[key] = now
            log.error("%s: repaired values the storage cannot hold (%s)", key, first_error)
        arrays.append(pa.array(repaired, type=spec.type))
    return pa.Table.from_arrays(arrays, schema=record.SCHEMA)


def _repair(value: Any, field: pa.Field) -> Any:
    try:
        pa.array([value], type=field.type)
        return value
    except (pa.ArrowException, TypeError, ValueError, OverflowError, UnicodeError):
        pass
    if pa.types.is_string(field.type):
        text = value if isinstance(value, str) else str(value)
        return text.encode("utf-8", "replace").decode("utf-8")
    if field.nullable:
        return None
    raise ValueError(f"column {field.name} cannot hold {value!r}")


# Fencing inside the write: a session row is replaced only by a writer of the same or a newer
# ownership epoch. Epoch 0 is an unfenced writer (a worker run by hand, a test), null an old row.
_EPOCH_FENCE = "target.epoch IS NULL OR source.epoch IS NULL OR source.epoch = 0 OR source.epoch >= target.epoch"


class FencedWrite(Exception):
    """A session row was not replaced because a newer owner wrote it: this writer is stale."""

    fatal = True


async def upsert_sessions(table: Any, rows: pa.Table) -> None:
    """Write one row per session (schema order), refusing to overwrite a newer owner's row.

    A stale worker (one the supervisor replaced, e.g. resumed after SIGSTOP past its lease)
    passed the check-then-act fence before this commit; this condition stops it inside the
    write itself, and the shortfall in the result tells it that it is fenced out.
    """
    result = await (
        table.merge_insert("session_id")
        .when_matched_update_all(where=_EPOCH_FENCE)
        .when_not_matched_insert_all()
        .execute(rows)
    )
    written = int(getattr(result, "num_updated_rows", 0)) + int(getattr(result, "num_inserted_rows", 0))
    if result is not None and hasattr(result, "num_updated_rows") and written < rows.num_rows:
        raise FencedWrite(
            f"{rows.num_rows - written} of {rows.num_rows} session rows belong to a newer owner; this worker is stale"
        )
