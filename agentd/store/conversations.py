"""Conversations, their messages and their participants (first-class tables).

``messages`` is append-mostly and tailed by the gateway (stable row ids). A message id may be
chosen by the writer (deterministically, for exactly-once replies across a crash): inserting
it is a ``merge_insert`` on the declared primary key, so a replay is a no-op.

Order is commit order. ``created_at`` is stamped by the writer *before* its commit, so a message
stamped earlier can commit later; a reader that keeps "the newest created_at I saw" as its
marker would never read it. With stable row ids, Lance's ``_row_created_at_version`` is the
version of the commit that added the row: messages are ordered by (that version, created_at,
message_id), and a reader keeps the highest version it read as its marker ("new" means
``_row_created_at_version > marker``): a message that commits later always has a higher one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from agentd.store.records import Record
from agentd.store.spec import IndexSpec, TableSpec, ts_field
from agentd.store.sql import sql_str, sql_ts

__all__ = [
    "CONVERSATIONS",
    "MESSAGES",
    "PARTICIPANTS",
    "VERSION_COLUMN",
    "ConversationRecord",
    "MessageRecord",
    "MessageRole",
    "ParticipantRecord",
    "add_participant",
    "get_conversation",
    "get_message",
    "insert_conversation",
    "insert_messages",
    "list_participants",
    "read_messages",
    "read_messages_after_version",
]

MessageRole = Literal["agent", "user", "system"]

CONVERSATION_SCHEMA = pa.schema(
    [
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("meta", pa.string()),
        ts_field("created_at", nullable=False),
    ]
)
MESSAGE_SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("author_id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("reply_to", pa.string()),
        pa.field("meta", pa.string()),
        ts_field("created_at", nullable=False),
    ]
)
PARTICIPANT_SCHEMA = pa.schema(
    [
        pa.field("participant_id", pa.string(), nullable=False),
        pa.field("conversation_id", pa.string(), nullable=False),
        pa.field("agent_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("persona_config", pa.string()),
        ts_field("joined_at", nullable=False),
    ]
)

CONVERSATIONS = TableSpec(
    "conversations",
    CONVERSATION_SCHEMA,
    primary_key="conversation_id",
    indexes=(IndexSpec("conversation_id"),),
)
MESSAGES = TableSpec(
    "messages",
    MESSAGE_SCHEMA,
    primary_key="message_id",
    stable_row_ids=True,
    indexes=(IndexSpec("conversation_id"), IndexSpec("message_id")),
)
# Lance's change-data column: the table version whose commit added the row (MESSAGES has stable
# row ids, without which it reads 1 for every row; the store asserts them at open).
VERSION_COLUMN = "_row_created_at_version"
_VERSIONED_COLUMNS = [*MESSAGE_SCHEMA.names, VERSION_COLUMN]

PARTICIPANTS = TableSpec(
    "participants", PARTICIPANT_SCHEMA, primary_key="participant_id", indexes=(IndexSpec("conversation_id"),)
)


class ConversationRecord(Record):
    SCHEMA = CONVERSATION_SCHEMA
    JSON_FIELDS = ("meta",)

    conversation_id: str
    title: str | None = None
    meta: dict[str, Any] | None = None
    created_at: datetime


class MessageRecord(Record):
    SCHEMA = MESSAGE_SCHEMA
    JSON_FIELDS = ("meta",)

    message_id: str
    conversation_id: str
    author_id: str
    role: MessageRole
    text: str
    reply_to: str | None = None
    meta: dict[str, Any] | None = None
    created_at: datetime


class ParticipantRecord(Record):
    SCHEMA = PARTICIPANT_SCHEMA
    JSON_FIELDS = ("persona_config",)

    participant_id: str
    conversation_id: str
    agent_id: str | None = None
    session_id: str | None = None
    persona_config: dict[str, Any] = Field(default_factory=dict)
    joined_at: datetime


async def _insert_new(table: Any, key: str, data: pa.Table) -> int:
    """Insert rows whose key is new; existing keys are left untouched. Returns rows inserted."""
    result = await table.merge_insert(key).when_not_matched_insert_all().execute(data)
    return int(result.num_inserted_rows)


async def insert_conversation(table: Any, record: ConversationRecord) -> bool:
    """True if created, False if the id already existed."""
    return await _insert_new(table, "conversation_id", ConversationRecord.to_arrow([record])) == 1


async def get_conversation(table: Any, conversation_id: str) -> ConversationRecord | None:
    rows = await table.query().where(f"conversation_id = {sql_str(conversation_id)}").limit(1).to_arrow()
    found = ConversationRecord.from_arrow(rows)
    return found[0] if found else None


async def insert_messages(table: Any, records: list[MessageRecord]) -> int:
    """Exactly-once insert by message_id; returns how many were new."""
    if not records:
        return 0
    return await _insert_new(table, "message_id", MessageRecord.to_arrow(records))


async def get_message(table: Any, message_id: str) -> MessageRecord | None:
    """One message by id (an indexed lookup), or None."""
    rows = await table.query().where(f"message_id = {sql_str(message_id)}").limit(1).to_arrow()
    found = MessageRecord.from_arrow(rows)
    return found[0] if found else None


async def _read_versioned(table: Any, clause: str) -> list[tuple[int, MessageRecord]]:
    """(commit version, message) pairs matching ``clause``, in commit order."""
    rows = await table.query().where(clause).select(_VERSIONED_COLUMNS).to_arrow()
    versions = [int(v) for v in rows.column(VERSION_COLUMN).to_pylist()]
    records = MessageRecord.from_arrow(rows.drop_columns([VERSION_COLUMN]))
    pairs = list(zip(versions, records, strict=True))
    # One commit may add several messages: within it, the writer's stamp and then the id.
    pairs.sort(key=lambda p: (p[0], p[1].created_at, p[1].message_id))
    return pairs


async def read_messages_after_version(table: Any, conversation_id: str, after: int) -> list[tuple[int, MessageRecord]]:
    """Messages of a conversation committed after table version ``after``, in commit order.

    Each comes with its commit version; the highest one is the reader's next marker. A message
    committed after this read has a higher version than any returned, so nothing is skipped.
    """
    clause = f"conversation_id = {sql_str(conversation_id)} AND {VERSION_COLUMN} > {int(after)}"
    return await _read_versioned(table, clause)


async def read_messages(
    table: Any, conversation_id: str, *, since: datetime | None = None, limit: int | None = None
) -> list[MessageRecord]:
    """Messages of a conversation in commit order, optionally stamped after ``since``.

    ``limit`` keeps the last ones. Commit order is the order every reader (personas, the
    gateway's conversation rooms) sees; for messages committed one at a time it is also the
    order of ``created_at`` unless two writers raced.
    """
    clause = f"conversation_id = {sql_str(conversation_id)}"
    if since is not None:
        clause += f" AND created_at > {sql_ts(since)}"
    records = [m for _, m in await _read_versioned(table, clause)]
    return records[-limit:] if limit is not None else records


async def add_participant(table: Any, record: ParticipantRecord) -> bool:
    return await _insert_new(table, "participant_id", ParticipantRecord.to_arrow([record])) == 1


async def list_participants(table: Any, conversation_id: str) -> list[ParticipantRecord]:
    rows = await table.query().where(f"conversation_id = {sql_str(conversation_id)}").to_arrow()
    return ParticipantRecord.from_arrow(rows)
