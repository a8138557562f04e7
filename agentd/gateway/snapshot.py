"""The first frames of a subscription: current state plus history after ``since``.

History is read up to the tail's watermark at registration (``upto``), never beyond: rows of
later versions reach the subscription through the live tail, so nothing is sent twice and
nothing falls between the two. The state is the latest ``sessions`` row (or conversation)
at read time; it may be a flush ahead of or behind the steps, which is fine for display
(a step carries its own ``state`` snapshot, which is the authoritative one).

A long history is neither packed into one frame (a default Python client refuses frames over
1 MiB) nor held in memory at once: steps are read in pages of ``SNAPSHOT_MAX_ITEMS`` seqs per
session (seqs are gapless, so page k is the seq window (since + k*P, since + (k+1)*P]). The
snapshot frame carries page 0; the sender reads and sends the next pages as ordinary ``step``
events, before any live event of the room, and stops at the first empty page. Conversations
are read whole (human-sized) and their tail beyond the first page follows as ``message`` events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from agentd.gateway.protocol import (
    SnapshotEvent,
    message_body,
    message_frame,
    step_body,
    step_body_json,
    step_frame,
)
from agentd.gateway.rooms import ConvRoom, Room, RunRoom
from agentd.gateway.rows import SkippedStep, decode_steps
from agentd.gateway.tailer import MESSAGE_COLUMNS, VERSION_COLUMN
from agentd.store.conversations import MessageRecord, get_conversation, list_participants
from agentd.store.sessions import get_session, list_sessions
from agentd.store.sql import sql_in, sql_str
from agentd.store.steps import StepRecord, read_steps_between_versions

__all__ = ["SNAPSHOT_MAX_ITEMS", "Snapshot", "build_snapshot"]

SNAPSHOT_MAX_ITEMS = 500

Since = int | dict[str, int]


@dataclass(slots=True)
class Snapshot:
    frame: str
    # Conv rooms: frames that follow the snapshot frame (messages beyond the first page).
    backlog: list[str] = field(default_factory=list)
    # Step rooms: the following pages, as (frames, last seq per session in the page).
    pages: AsyncGenerator[tuple[list[str], dict[str, int]], None] | None = None
    # Step rooms: the last seq covered per session by the snapshot frame.
    last: dict[str, int] = field(default_factory=dict)
    # Conv rooms: how many messages exist up to the watermark (the next live one is count + 1).
    count: int = 0


async def build_snapshot(store: Any, room: Room, since: Since, upto: int) -> Snapshot:
    """Read the snapshot of ``room`` for a subscription registered at tail version ``upto``."""
    if isinstance(room, ConvRoom):
        if not isinstance(since, int):
            raise ValueError("since must be an integer for a conv room")
        return await _conv_snapshot(store, room, since, upto)
    if isinstance(room, RunRoom):
        if not isinstance(since, int):
            raise ValueError("since must be an integer for a session room")
        record = await get_session(store.sessions, room.session_id)
        state = record.model_dump(mode="json") if record and record.agent_id == room.agent_id else None
        scope = f"session_id = {sql_str(room.session_id)} AND agent_id = {sql_str(room.agent_id)}"
    else:
        sessions = await list_sessions(store.sessions, agent_id=room.agent_id)
        state = {"agent_id": room.agent_id, "sessions": [s.model_dump(mode="json") for s in sessions]}
        scope = f"agent_id = {sql_str(room.agent_id)}"
    first = await _step_page(store, scope, since, 0, upto)
    event = SnapshotEvent(
        room=room.name, state=state, steps=[step_body(r) for r in first if type(r) is not SkippedStep]
    )
    return Snapshot(
        frame=event.model_dump_json(exclude={"messages"}),
        pages=_later_pages(store, room.name, scope, since, upto) if first else None,
        last=_last_seqs(first),
    )


def _window(since: Since, page: int) -> str:
    """Seqs of page ``page``: (base + page*P, base + (page+1)*P] with base = the session's since."""
    low, high = page * SNAPSHOT_MAX_ITEMS, (page + 1) * SNAPSHOT_MAX_ITEMS
    if isinstance(since, int):
        return f"seq > {since + low} AND seq <= {since + high}"
    named = [
        f"(session_id = {sql_str(sid)} AND seq > {int(seq) + low} AND seq <= {int(seq) + high})"
        for sid, seq in since.items()
    ]
    others = f"(NOT ({sql_in('session_id', list(since))}) AND seq > {low} AND seq <= {high})"
    return "(" + " OR ".join([*named, others]) + ")"


async def _step_page(store: Any, scope: str, since: Since, page: int, upto: int) -> list[StepRecord]:
    rows = await read_steps_between_versions(store.steps, 0, upto, where=f"{scope} AND {_window(since, page)}")
    return sorted(decode_steps(rows)[0], key=lambda r: (r.session_id, r.seq))


async def _later_pages(
    store: Any, room: str, scope: str, since: Since, upto: int
) -> AsyncGenerator[tuple[list[str], dict[str, int]], None]:
    page = 1
    while records := await _step_page(store, scope, since, page, upto):
        frames = [step_frame(room, step_body_json(r)) for r in records if type(r) is not SkippedStep]
        yield frames, _last_seqs(records)
        page += 1


def _last_seqs(records: list[StepRecord]) -> dict[str, int]:
    last: dict[str, int] = {}
    for record in records:
        last[record.session_id] = max(record.seq, last.get(record.session_id, 0))
    return last


async def _conv_snapshot(store: Any, room: ConvRoom, since: int, upto: int) -> Snapshot:
    conversation = await get_conversation(store.conversations, room.conversation_id)
    participants = await list_participants(store.participants, room.conversation_id)
    state = {
        "conversation": conversation.model_dump(mode="json") if conversation else None,
        "participants": [p.model_dump(mode="json") for p in participants],
    }
    clause = f"conversation_id = {sql_str(room.conversation_id)} AND {VERSION_COLUMN} <= {int(upto)}"
    rows = await store.messages.query().where(clause).select(MESSAGE_COLUMNS).to_arrow()
    versions = rows.column(VERSION_COLUMN).to_pylist()
    records = MessageRecord.from_arrow(rows.drop_columns([VERSION_COLUMN]))
    ordered = [
        m
        for _, m in sorted(
            zip(versions, records, strict=True), key=lambda vm: (vm[0], vm[1].created_at, vm[1].message_id)
        )
    ]
    numbered = list(enumerate(ordered, start=1))[since:]
    head, tail = numbered[:SNAPSHOT_MAX_ITEMS], numbered[SNAPSHOT_MAX_ITEMS:]
    event = SnapshotEvent(room=room.name, state=state, messages=[message_body(m, seq) for seq, m in head])
    snap = Snapshot(frame=event.model_dump_json(exclude={"steps"}), count=len(ordered))
    snap.backlog = [message_frame(room.name, m, seq) for seq, m in tail]
    return snap
