"""The ``sessions`` table: one row per session, the latest snapshot for fast listing.

The row is written after the steps of the same flush, so after a crash it may lag the steps
table; the runtime resumes from whichever of the two has the higher seq (DESIGN.md §4).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from agentd.store.records import Record
from agentd.store.spec import IndexSpec, TableSpec, ts_field
from agentd.store.sql import sql_in, sql_str

__all__ = ["SESSIONS", "SessionRecord", "SessionStatus", "get_session", "list_sessions", "upsert_sessions"]

SessionStatus = Literal["starting", "running", "paused", "stopping", "stopped", "error"]
SESSION_STATUSES: tuple[str, ...] = ("starting", "running", "paused", "stopping", "stopped", "error")

SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("agent_id", pa.string(), nullable=False),
        pa.field("agent_type", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("desired_status", pa.string()),
        pa.field("config", pa.string()),
        pa.field("context", pa.string()),
        pa.field("iteration", pa.int64()),
        pa.field("last_seq", pa.int64()),
        pa.field("last_result", pa.string()),
        pa.field("conversation_id", pa.string()),
        ts_field("created_at"),
        ts_field("updated_at"),
        pa.field("version", pa.int64()),
        # Ownership epoch of the worker that wrote the row (fencing: a row is only replaced by a
        # writer of the same or a newer epoch; null on rows of older agentd versions).
        pa.field("epoch", pa.int64()),
    ]
)

SESSIONS = TableSpec(
    name="sessions",
    schema=SCHEMA,
    primary_key="session_id",
    indexes=(IndexSpec("session_id"), IndexSpec("shard", "bitmap"), IndexSpec("agent_id")),
)


class SessionRecord(Record):
    SCHEMA = SCHEMA
    JSON_FIELDS = ("config", "context")

    session_id: str
    agent_id: str
    agent_type: str
    shard: int
    status: SessionStatus
    desired_status: SessionStatus | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    iteration: int = 0
    last_seq: int = 0
    last_result: str | None = None
    conversation_id: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int = 0
    epoch: int | None = None


async def upsert_sessions(table: Any, records: list[SessionRecord]) -> None:
    """Insert or replace session rows (one commit); callers pass one row per session."""
    if not records:
        return
    await (
        table.merge_insert("session_id")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute(SessionRecord.to_arrow(records))
    )


async def get_session(table: Any, session_id: str) -> SessionRecord | None:
    rows = await table.query().where(f"session_id = {sql_str(session_id)}").limit(2).to_arrow()
    found = SessionRecord.from_arrow(rows)
    return found[0] if found else None


async def list_sessions(
    table: Any,
    *,
    shards: list[int] | None = None,
    agent_id: str | None = None,
    statuses: list[str] | None = None,
    limit: int | None = None,
) -> list[SessionRecord]:
    """Session rows matching every given filter (None = no filter; an empty list matches nothing).

    ``statuses`` filters inside the query, so a worker booting with the live statuses reads only
    the sessions it will run, not every session ever created (retention keeps the rest bounded).
    """
    clauses = []
    if shards is not None:
        clauses.append(sql_in("shard", shards))
    if agent_id is not None:
        clauses.append(f"agent_id = {sql_str(agent_id)}")
    if statuses is not None:
        clauses.append(sql_in("status", statuses))
    query = table.query()
    if clauses:
        query = query.where(" AND ".join(clauses))
    if limit is not None:
        query = query.limit(limit)
    return SessionRecord.from_arrow(await query.to_arrow())
