"""The ``steps`` table: one row per tick, append-only, tailed by the gateway.

Each row carries the full state snapshot (``state``), so it is the source of truth for
resuming a session. The table is created with stable row ids so that readers can tail it
exactly once with ``_row_created_at_version`` (LANCEDB.md, "Tailing a table exactly once").
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from agentd.store.records import Record
from agentd.store.spec import IndexSpec, TableSpec, ts_field
from agentd.store.sql import sql_in, sql_str, sql_ts

__all__ = [
    "STEPS",
    "StepRecord",
    "StepStatus",
    "latest_seq",
    "latest_step",
    "latest_steps_since",
    "read_steps",
    "read_steps_between_versions",
    "steps_of_actions",
]

StepStatus = Literal["ok", "error", "info"]

SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("agent_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        ts_field("ts", nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("kind", pa.string()),
        pa.field("text", pa.string()),
        pa.field("data", pa.string()),
        pa.field("state", pa.string()),
        pa.field("guidance", pa.string()),
        pa.field("notes", pa.string()),
        pa.field("latency_ms", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("epoch", pa.int64()),
        # The control action that caused this step (guidance, lifecycle), so that a replayed
        # action is recognised and only re-acknowledged; None for ticks.
        pa.field("action_id", pa.string()),
    ]
)

STEPS = TableSpec(
    name="steps",
    schema=SCHEMA,
    stable_row_ids=True,
    indexes=(IndexSpec("session_id"),),
)


class StepRecord(Record):
    SCHEMA = SCHEMA
    JSON_FIELDS = ("data", "state", "guidance")

    session_id: str
    agent_id: str
    shard: int
    seq: int
    ts: datetime
    status: StepStatus = "ok"
    # tick | guidance | lifecycle: what produced the step.
    kind: str = "tick"
    text: str | None = None
    data: dict[str, Any] | None = None
    # The session snapshot after this step: status, iteration, context (incl. paused).
    state: dict[str, Any] = Field(default_factory=dict)
    guidance: dict[str, Any] | None = None
    notes: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    # Ownership epoch of the writer (fencing; 0 when not fenced).
    epoch: int = 0
    action_id: str | None = None


async def read_steps(table: Any, session_id: str, *, since: int = 0, limit: int | None = None) -> list[StepRecord]:
    """Steps of one session with ``seq > since``, in seq order."""
    query = table.query().where(f"session_id = {sql_str(session_id)} AND seq > {int(since)}")
    rows = await query.to_arrow()
    records = sorted(StepRecord.from_arrow(rows), key=lambda r: r.seq)
    return records[:limit] if limit is not None else records


async def latest_seq(table: Any, session_id: str) -> int:
    """The highest seq of a session's steps (0 before its first), read from the ``seq`` column only.

    Unlike ``latest_step`` this works when a step row cannot be parsed (quarantine uses it).
    """
    rows = await table.query().where(f"session_id = {sql_str(session_id)}").select(["seq"]).to_arrow()
    return max(rows.column("seq").to_pylist()) if rows.num_rows else 0


async def latest_step(table: Any, session_id: str) -> StepRecord | None:
    """The step with the highest seq of a session (None before its first step)."""
    top = await latest_seq(table, session_id)
    if top == 0:
        return None
    found = await table.query().where(f"session_id = {sql_str(session_id)} AND seq = {top}").to_arrow()
    return StepRecord.from_arrow(found)[0]


async def read_steps_between_versions(table: Any, after: int, upto: int, where: str | None = None) -> pa.Table:
    """Rows committed in table versions ``(after, upto]``: the exactly-once tail primitive."""
    clause = f"_row_created_at_version > {int(after)} AND _row_created_at_version <= {int(upto)}"
    if where:
        clause = f"({clause}) AND ({where})"
    return await table.query().where(clause).to_arrow()


async def steps_of_actions(table: Any, actions: list[tuple[str, str]]) -> dict[str, StepRecord]:
    """The step each of ``(session_id, action_id)`` caused, if any: how a replayed action is recognised."""
    if not actions:
        return {}
    sessions = sorted({session_id for session_id, _ in actions})
    where = f"{sql_in('session_id', sessions)} AND {sql_in('action_id', [aid for _, aid in actions])}"
    records, _bad = StepRecord.from_arrow_tolerant(await table.query().where(where).to_arrow())
    return {r.action_id: r for r in records if r.action_id is not None}


async def latest_steps_since(
    table: Any, shards: list[int], since: datetime, last_seqs: dict[str, int]
) -> tuple[dict[str, StepRecord], dict[str, str]]:
    """The newest step of each session of ``last_seqs`` whose steps go past its row's ``last_seq``,
    among steps of ``shards`` stamped at or after ``since``.

    Used when a host resumes sessions: a crash between the steps commit and the sessions
    commit of one flush leaves steps newer than the session rows, all stamped after the
    newest session row of those shards. Bounding by time keeps this a small scan.

    Only ``session_id`` and ``seq`` are read for the whole window; whole rows only for the few
    sessions found ahead of their rows (none, unless a worker died between its two commits).
    Reading every row of the window whole (its state, parsed) took 0.2 s to 1.9 s of a warm
    spare's takeover with 1,000 sessions ticking, growing with the daemon's uptime.

    Also returns, per session, why one of those steps could not be read: resuming such a
    session could repeat a seq, so the host quarantines it instead of failing its boot.
    """
    window = f"{sql_in('shard', shards)} AND ts >= {sql_ts(since)}"
    seqs = await table.query().where(window).select(["session_id", "seq"]).to_arrow()
    unreadable: dict[str, str] = {}
    for session_id in seqs.filter(pc.is_null(seqs.column("seq"))).column("session_id").to_pylist():
        if session_id in last_seqs:
            unreadable[session_id] = "a step without a seq is unreadable"
    tops = seqs.group_by("session_id").aggregate([("seq", "max")])  # one row per session, not per step
    pairs = zip(tops.column("session_id").to_pylist(), tops.column("seq_max").to_pylist(), strict=True)
    ahead = [sid for sid, top in pairs if sid in last_seqs and top is not None and top > last_seqs[sid]]
    newest: dict[str, StepRecord] = {}
    if not ahead:
        return newest, unreadable
    rows = await table.query().where(f"{window} AND {sql_in('session_id', ahead)}").to_arrow()
    records, bad = StepRecord.from_arrow_tolerant(rows)
    for row, reason in bad:
        unreadable[str(row.get("session_id"))] = f"step {row.get('seq')} is unreadable: {reason}"
    for record in records:
        current = newest.get(record.session_id)
        if current is None or record.seq > current.seq:
            newest[record.session_id] = record
    return newest, unreadable
