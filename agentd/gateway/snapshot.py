"""The first frames of a subscription: current state plus history after ``since``.

History is read up to the tail's watermark at registration (``upto``), never beyond: rows of
later versions reach the subscription through the live tail, so nothing is sent twice and
nothing falls between the two. The state is the latest ``sessions`` row (or conversation)
at read time; it may be a flush ahead of or behind the steps, which is fine for display
(a step carries its own ``state`` snapshot, which is the authoritative one).

No frame grows with the data (a default Python client refuses frames over 1 MiB): every frame
is assembled from pre-serialised items up to ``FRAME_BUDGET`` bytes.

- An agent room's state lists every session of the agent (2,000 sessions are ~2 MB): the
  ``snapshot`` frame carries the first sessions and ``"more": true``, then ``snapshot_page``
  frames carry the rest, the last one with ``"more": false``.
- Steps are read in pages of a seq window per session (seqs are gapless, so page k is the
  window (base + k*W, base + (k+1)*W]), W shrinking with the number of sessions so that one page
  holds about ``SNAPSHOT_PAGE_ROWS`` rows. A session's base is its since, or just below its
  first stored seq when retention trimmed the older steps (``_bases``: without it a trimmed
  history would start with empty pages and the paging would stop there). What fits goes in
  the ``snapshot`` frame's ``steps``, the rest follows as ordinary ``step`` events, page after
  page, before any live event of the room; the pages stop at the first empty one.
- Conversations are read whole (human-sized); messages that do not fit follow as ``message``
  events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from agentd.gateway.protocol import message_body, message_frame, step_frame
from agentd.gateway.rooms import AgentRoom, ConvRoom, Room, RunRoom
from agentd.gateway.rows import StepRow, decode_steps
from agentd.gateway.tailer import MESSAGE_COLUMNS, VERSION_COLUMN
from agentd.store.conversations import MessageRecord, get_conversation, list_participants
from agentd.store.sessions import SessionRecord, get_session
from agentd.store.sql import sql_in, sql_str
from agentd.store.steps import read_steps_between_versions

__all__ = ["FRAME_BUDGET", "SNAPSHOT_MAX_ITEMS", "SNAPSHOT_PAGE_ROWS", "Snapshot", "WrongAgent", "build_snapshot"]

log = logging.getLogger(__name__)

# Largest seq window per session and page (a single-session room reads 500 steps a page).
SNAPSHOT_MAX_ITEMS = 500
# Rows one page may hold across the sessions of an agent room (bounds the gateway's memory).
SNAPSHOT_PAGE_ROWS = 5_000
# Bytes of items per snapshot / snapshot_page frame: a quarter of a default client's max_size.
FRAME_BUDGET = 256 * 1024

Since = int | dict[str, int]
StepPages = AsyncGenerator[tuple[list[str], dict[str, int]], None]


class WrongAgent(ValueError):
    """``run::<agent_id>::<session_id>`` names a session that exists under another agent id.

    Without this the room would be an empty snapshot and then silence (its steps are filed
    under the other agent), which looks exactly like a session that never ticks.
    """


@dataclass(slots=True)
class Snapshot:
    frame: str
    # Agent rooms: snapshot_page frames with the sessions that did not fit in ``frame``.
    pages: list[str] = field(default_factory=list)
    # Step rooms: step frames of the first page that did not fit in ``frame``.
    steps: list[str] = field(default_factory=list)
    # Conv rooms: message frames that did not fit in ``frame``.
    backlog: list[str] = field(default_factory=list)
    # Step rooms: the following pages, as (frames, last seq per session in the page).
    later: StepPages | None = None
    # Step rooms: the last seq covered per session by the first page (sent in frame + steps).
    last: dict[str, int] = field(default_factory=dict)
    # Conv rooms: how many messages exist up to the watermark (the next live one is count + 1).
    count: int = 0


def _fit(items: list[str], budget: int) -> int:
    """How many of ``items`` (JSON texts) fit in ``budget`` bytes; at least one if any."""
    used = 0
    for n, item in enumerate(items):
        used += len(item.encode()) + 1
        if used > budget and n > 0:
            return n
    return len(items)


def _chunks(items: list[str], budget: int) -> list[list[str]]:
    chunks: list[list[str]] = []
    while items:
        n = _fit(items, budget)
        chunks.append(items[:n])
        items = items[n:]
    return chunks


def _snapshot_frame(room: str, state: str, key: str, items: list[str], more: bool) -> str:
    """A ``SnapshotEvent`` as text, from pre-serialised parts (``key`` is steps or messages)."""
    return (
        f'{{"type":"snapshot","room":{json.dumps(room)},"state":{state},'
        f'"{key}":[{",".join(items)}],"more":{"true" if more else "false"}}}'
    )


def _page_frame(room: str, sessions: list[str], more: bool) -> str:
    """A ``SnapshotPageEvent`` as text."""
    return (
        f'{{"type":"snapshot_page","room":{json.dumps(room)},'
        f'"sessions":[{",".join(sessions)}],"more":{"true" if more else "false"}}}'
    )


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
        if record is not None and record.agent_id != room.agent_id:
            raise WrongAgent(
                f"session {room.session_id} belongs to agent {record.agent_id!r}, not {room.agent_id!r}; "
                f"subscribe to run::{record.agent_id}::{room.session_id}"
            )
        state = record.model_dump_json() if record else "null"
        scope = f"session_id = {sql_str(room.session_id)} AND agent_id = {sql_str(room.agent_id)}"
        chunks, width = [], SNAPSHOT_MAX_ITEMS
    else:
        sessions = await _agent_sessions(store, room)
        chunks = _chunks(sessions, FRAME_BUDGET)
        scope = f"agent_id = {sql_str(room.agent_id)}"
        width = max(1, min(SNAPSHOT_MAX_ITEMS, SNAPSHOT_PAGE_ROWS // max(1, len(sessions))))
    bases = await _bases(store, scope, since, upto)
    first = await _step_page(store, scope, bases, 0, width, upto)
    bodies = [r.body for r in first if r.body]
    snap = Snapshot(frame="", last=_last_seqs(first))
    if first:
        snap.later = _later_pages(store, room.name, scope, bases, width, upto)
    if isinstance(room, AgentRoom):
        head = chunks[0] if chunks else []
        state = f'{{"agent_id":{json.dumps(room.agent_id)},"sessions":[{",".join(head)}]}}'
        snap.pages = [_page_frame(room.name, c, n < len(chunks) - 1) for n, c in enumerate(chunks[1:], start=1)]
        if snap.pages:  # steps follow the last page, so that a client has every session first
            snap.frame = _snapshot_frame(room.name, state, "steps", [], more=True)
            snap.steps = [step_frame(room.name, b) for b in bodies]
            return snap
    fit = _fit(bodies, FRAME_BUDGET - len(state.encode()))
    snap.frame = _snapshot_frame(room.name, state, "steps", bodies[:fit], more=False)
    snap.steps = [step_frame(room.name, b) for b in bodies[fit:]]
    return snap


async def _agent_sessions(store: Any, room: AgentRoom) -> list[str]:
    """The agent's session rows as JSON texts, by session_id; an undecodable row is skipped."""
    rows = await store.sessions.query().where(f"agent_id = {sql_str(room.agent_id)}").to_arrow()
    texts: list[tuple[str, str]] = []
    for row in rows.to_pylist():
        try:
            record = SessionRecord.from_row(row)
        except (ValueError, TypeError, RecursionError) as exc:
            log.warning("sessions row %s cannot be decoded (%s); left out of the snapshot", row.get("session_id"), exc)
            continue
        texts.append((record.session_id, record.model_dump_json()))
    return [text for _, text in sorted(texts)]


def _grouped(bases: dict[str, int], low: int, high: int | None) -> list[str]:
    """One clause per distinct base: a resume (most sessions at nearby seqs) stays short."""
    by_value: dict[int, list[str]] = {}
    for sid, seq in bases.items():
        by_value.setdefault(int(seq), []).append(sid)
    upper = "" if high is None else " AND seq <= {}"
    return [
        f"({sql_in('session_id', sids)} AND seq > {value + low}{upper.format(value + (high or 0))})"
        for value, sids in sorted(by_value.items())
    ]


def _beyond(since: Since) -> str:
    """Rows after ``since``: sessions a since map does not name start at 0."""
    if isinstance(since, int):
        return f"seq > {int(since)}"
    others = f"NOT ({sql_in('session_id', list(since))})" if since else "TRUE"
    return "(" + " OR ".join([*_grouped(since, 0, None), f"({others})"]) + ")"


async def _bases(store: Any, scope: str, since: Since, upto: int) -> dict[str, int]:
    """Per session with steps after ``since`` (up to version ``upto``): one below the first of them.

    Two columns of the room's rows after since; with retention on, a bounded read.
    """
    clause = f"{VERSION_COLUMN} <= {int(upto)} AND {scope} AND {_beyond(since)}"
    rows = await store.steps.query().where(clause).select(["session_id", "seq"]).to_arrow()
    if rows.num_rows == 0:
        return {}
    grouped = rows.group_by("session_id").aggregate([("seq", "min")])
    firsts = zip(grouped.column("session_id").to_pylist(), grouped.column("seq_min").to_pylist(), strict=True)
    return {str(sid): int(seq) - 1 for sid, seq in firsts}


async def _step_page(store: Any, scope: str, bases: dict[str, int], page: int, width: int, upto: int) -> list[StepRow]:
    """Page ``page`` of the seq windows (base + page*W, base + (page+1)*W] of every session."""
    if not bases:
        return []
    window = " OR ".join(_grouped(bases, page * width, (page + 1) * width))
    rows = await read_steps_between_versions(store.steps, 0, upto, where=f"{scope} AND ({window})")
    return sorted(decode_steps(rows)[0], key=lambda r: (r.session_id, r.seq))


async def _later_pages(store: Any, room: str, scope: str, bases: dict[str, int], width: int, upto: int) -> StepPages:
    page = 1
    while records := await _step_page(store, scope, bases, page, width, upto):
        frames = [step_frame(room, r.body) for r in records if r.body]
        yield frames, _last_seqs(records)
        page += 1


def _last_seqs(records: list[StepRow]) -> dict[str, int]:
    last: dict[str, int] = {}
    for record in records:
        last[record.session_id] = max(record.seq, last.get(record.session_id, 0))
    return last


async def _conv_snapshot(store: Any, room: ConvRoom, since: int, upto: int) -> Snapshot:
    conversation = await get_conversation(store.conversations, room.conversation_id)
    participants = await list_participants(store.participants, room.conversation_id)
    state = json.dumps(
        {
            "conversation": conversation.model_dump(mode="json") if conversation else None,
            "participants": [p.model_dump(mode="json") for p in participants],
        },
        separators=(",", ":"),
    )
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
    head = [message_body(m, seq).model_dump_json() for seq, m in numbered[:SNAPSHOT_MAX_ITEMS]]
    fit = _fit(head, FRAME_BUDGET - len(state.encode()))
    snap = Snapshot(frame=_snapshot_frame(room.name, state, "messages", head[:fit], more=False), count=len(ordered))
    snap.backlog = [message_frame(room.name, m, seq) for seq, m in numbered[fit:]]
    return snap
