"""Rooms: names clients subscribe to, and the registry that fans tailed rows out to them.

A step of session ``s`` of agent ``a`` goes to two rooms, ``run::a::s`` and ``run::a::*``; a
message goes to ``conv::<conversation_id>``.

The hand-over rule that makes snapshot + live exact: a batch of table versions (W, v] goes only
to subscriptions whose ``watermark`` (the tail version they registered at, which their
snapshot covers) is below v. A subscription registered while v is being dispatched gets
watermark v, so the batch is in its snapshot and not sent live; one registered earlier gets
it live and not in its snapshot.

Pacing: a batch is offered in chunks; after a chunk that pushed some outboxes above half of
``max_queue`` the tail waits (``Pacer``) for them to drain. A connection that sends nothing
during such a wait stops being waited for in this batch, and the wait is bounded per batch,
so a client that does not read delays the tail once, briefly, then overflows and is closed,
while a burst larger than ``max_queue`` still reaches the clients that do read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentd.gateway.protocol import step_frame
from agentd.gateway.rows import StepRow
from agentd.ids import validate_id
from agentd.store.conversations import MessageRecord

if TYPE_CHECKING:
    from agentd.gateway.subscriber import Connection
    from agentd.gateway.subscription import Subscription

__all__ = ["AgentRoom", "ConvRoom", "Pacer", "Room", "RoomError", "RoomRegistry", "RunRoom", "parse_room"]


class RoomError(ValueError):
    """A room name that is not one of the three forms; the message says which form was expected."""


@dataclass(frozen=True, slots=True)
class RunRoom:
    """All steps of one session: ``run::<agent_id>::<session_id>``."""

    agent_id: str
    session_id: str

    @property
    def name(self) -> str:
        return f"run::{self.agent_id}::{self.session_id}"


@dataclass(frozen=True, slots=True)
class AgentRoom:
    """All steps of every session of one agent: ``run::<agent_id>::*``."""

    agent_id: str

    @property
    def name(self) -> str:
        return f"run::{self.agent_id}::*"


@dataclass(frozen=True, slots=True)
class ConvRoom:
    """All messages of one conversation: ``conv::<conversation_id>``."""

    conversation_id: str

    @property
    def name(self) -> str:
        return f"conv::{self.conversation_id}"


Room = RunRoom | AgentRoom | ConvRoom

_FORMS = "run::<agent_id>::<session_id>, run::<agent_id>::* or conv::<conversation_id>"


def parse_room(name: str) -> Room:
    """Parse and validate a room name (ids as ``agentd.ids.validate_id`` accepts them)."""
    parts = name.split("::")
    try:
        if parts[0] == "run" and len(parts) == 3:
            agent_id = validate_id(parts[1], "agent_id")
            if parts[2] == "*":
                return AgentRoom(agent_id)
            return RunRoom(agent_id, validate_id(parts[2], "session_id"))
        if parts[0] == "conv" and len(parts) == 2:
            return ConvRoom(validate_id(parts[1], "conversation_id"))
    except ValueError as exc:
        raise RoomError(f"bad room {name[:200]!r}: {exc}") from None
    raise RoomError(f"bad room {name[:200]!r}: expected {_FORMS}")


class Pacer:
    """Connections whose outbox is above the pacing mark; the tails wait for them to drain."""

    def __init__(self) -> None:
        # Added by Connection.offer() above the high mark, removed by its sender at the low mark
        # or when it closes.
        self.crowded: set[Connection] = set()
        # Set on every release; a waiter re-checks the set.
        self._changed = asyncio.Event()

    def mark(self, conn: Connection) -> None:
        self.crowded.add(conn)

    def release(self, conn: Connection) -> None:
        self.crowded.discard(conn)
        self._changed.set()

    async def wait(self, timeout: float, ignore: set[Connection]) -> bool:
        """Wait until every crowded connection outside ``ignore`` drained; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self.crowded - ignore:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True


class RoomRegistry:
    """Room name -> live subscriptions, plus the fan-out of tailed batches.

    Dispatch only enqueues (``Subscription.offer`` never blocks): a slow subscriber's queue
    overflows and that connection is closed, so one reader can never stall others for longer
    than the pacing deadline.
    """

    def __init__(self) -> None:
        self.pacer = Pacer()
        # Set by add()/remove(); read by dispatch and by the tailers' "anyone listening?" checks.
        self._rooms: dict[str, set[Subscription]] = {}
        self._step_rooms = 0
        self._conv_rooms = 0

    def add(self, sub: Subscription) -> None:
        subs = self._rooms.get(sub.name)
        if subs is None:
            subs = self._rooms[sub.name] = set()
            self._count(sub.room, +1)
        subs.add(sub)

    def remove(self, sub: Subscription) -> None:
        subs = self._rooms.get(sub.name)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._rooms[sub.name]
            self._count(sub.room, -1)

    def _count(self, room: Room, delta: int) -> None:
        if isinstance(room, ConvRoom):
            self._conv_rooms += delta
        else:
            self._step_rooms += delta

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    @property
    def subscription_count(self) -> int:
        return sum(len(s) for s in self._rooms.values())

    def wants_steps(self) -> bool:
        return self._step_rooms > 0

    def wants_messages(self) -> bool:
        return self._conv_rooms > 0

    def step_filter(self, limit: int) -> tuple[set[str], set[str]] | None:
        """(session_ids, agent_ids) that have rooms, or None when there are more than ``limit``."""
        if self._step_rooms > limit:
            return None
        sessions: set[str] = set()
        agents: set[str] = set()
        for subs in self._rooms.values():
            room = next(iter(subs)).room
            if isinstance(room, RunRoom):
                sessions.add(room.session_id)
            elif isinstance(room, AgentRoom):
                agents.add(room.agent_id)
        return sessions, agents

    def dispatch_steps(self, records: Iterable[StepRow], version: int) -> int:
        """Offer steps of table versions <= ``version`` to both rooms of each, in order.

        Only subscriptions registered below ``version`` take them (module docstring). A row
        without a body (undecodable, ``rows.py``) is offered with an empty frame: it only moves
        the subscription's position past its seq. Returns the number of items offered.
        """
        offered = 0
        for record in records:
            for name in (f"run::{record.agent_id}::{record.session_id}", f"run::{record.agent_id}::*"):
                subs = self._rooms.get(name)
                if not subs:
                    continue
                frame = step_frame(name, record.body) if record.body else ""
                # A copy: an overflowing subscriber is removed from the set while we iterate.
                for sub in list(subs):
                    if sub.watermark < version:
                        sub.offer_step(record.session_id, record.seq, frame)
                        offered += 1
        return offered

    def dispatch_messages(self, records: Iterable[MessageRecord], version: int) -> int:
        offered = 0
        for record in records:
            subs = self._rooms.get(f"conv::{record.conversation_id}")
            if not subs:
                continue
            for sub in list(subs):
                if sub.watermark < version:
                    sub.offer_message(record)
                    offered += 1
        return offered
