"""The ``actions`` table: the control queue's rows.

Claims are compare-and-set updates on ``version`` (see agentd.queue); the table is
update-heavy, so it has no stable row ids (their index would grow with every update).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from agentd.protocol import AckInfo
from agentd.store.records import Record
from agentd.store.spec import IndexSpec, TableSpec, ts_field
from agentd.store.sql import delete_where, sql_ts

__all__ = ["ACTIONS", "ActionKind", "ActionRecord", "ActionStatus", "purge_finished_actions"]

ActionStatus = Literal["pending", "claimed", "done", "failed"]
# Open set: agent types and later issues add kinds; these are the built-in ones.
ActionKind = str
BUILTIN_KINDS: tuple[str, ...] = ("create", "pause", "resume", "interrupt", "destroy")

SCHEMA = pa.schema(
    [
        pa.field("action_id", pa.string(), nullable=False),
        pa.field("idempotency_key", pa.string()),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("payload", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("attempts", pa.int32()),
        pa.field("claimed_by", pa.string()),
        pa.field("claim_token", pa.string()),
        ts_field("claimed_at"),
        ts_field("lease_until"),
        pa.field("result", pa.string()),
        pa.field("error", pa.string()),
        ts_field("created_at", nullable=False),
        ts_field("done_at"),
        # Why it failed, as a code clients map to exit codes (agentd.protocol.ErrorCode); added
        # after the first release, so null on older rows (clients then read the message).
        pa.field("error_code", pa.string()),
        # Ownership epoch of the claimer: a shard owner takes over live claims only from an older
        # epoch, so a stale worker can never take a newer owner's actions (null: unfenced or old).
        pa.field("claim_epoch", pa.int64()),
    ]
)

ACTIONS = TableSpec(
    name="actions",
    schema=SCHEMA,
    primary_key="action_id",
    indexes=(
        IndexSpec("action_id"),
        IndexSpec("status", "bitmap"),
        IndexSpec("shard", "bitmap"),
        IndexSpec("session_id"),
    ),
)


class ActionRecord(Record):
    SCHEMA = SCHEMA
    JSON_FIELDS = ("payload", "result")

    action_id: str
    idempotency_key: str | None = None
    session_id: str
    shard: int
    kind: ActionKind
    payload: dict[str, Any] = Field(default_factory=dict)
    status: ActionStatus = "pending"
    version: int = 0
    attempts: int = 0
    claimed_by: str | None = None
    claim_token: str | None = None
    claimed_at: datetime | None = None
    lease_until: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime
    done_at: datetime | None = None
    error_code: str | None = None
    claim_epoch: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def ack_info(self) -> AckInfo:
        """A finished action as the acknowledgement pushed to (or read by) a waiting client."""
        status: Literal["done", "failed"] = "done" if self.status == "done" else "failed"
        return AckInfo(
            action_id=self.action_id,
            session_id=self.session_id,
            kind=self.kind,
            status=status,
            result=self.result,
            error=self.error,
            code=self.error_code,
        )


async def purge_finished_actions(table: Any, older_than: float) -> int:
    """Delete done/failed actions finished more than ``older_than`` seconds ago.

    Counts first: a delete commits a new version even when nothing matches.
    """
    cutoff = datetime.now().astimezone() - timedelta(seconds=older_than)
    return await delete_where(table, f"status IN ('done', 'failed') AND done_at < {sql_ts(cutoff)}")
