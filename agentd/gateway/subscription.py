"""What a connection queues: its subscriptions and the items of its bounded outbox.

Kept apart from ``subscriber.py`` (the connection's tasks) because the room registry and the
tails only need these shapes: ``Subscription.offer_*`` is all the fan-out ever calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentd.gateway.health import DeliveryStats
from agentd.gateway.rooms import Room, RoomRegistry
from agentd.gateway.snapshot import Since, Snapshot
from agentd.gateway.tailer import TableTail
from agentd.store.conversations import MessageRecord

if TYPE_CHECKING:
    from agentd.gateway.control_ops import ControlOps
    from agentd.gateway.subscriber import Connection

__all__ = ["SNAPSHOT_CONCURRENCY", "GatewayContext", "Item", "MessageItem", "SnapshotItem", "Subscription", "TextItem"]


# Snapshots read at once. A reconnect storm (1,000 clients resubscribing) would otherwise put
# 1,000 filtered scans in LanceDB's thread pool at once, and the tail's reads queue behind
# them: live delivery of every room stalled for seconds (measured: 14 s per tail read).
SNAPSHOT_CONCURRENCY = 4


@dataclass(slots=True)
class GatewayContext:
    """What every connection shares; built once by the server."""

    store: Any
    registry: RoomRegistry
    steps: TableTail
    messages: TableTail
    stats: DeliveryStats
    max_queue: int
    max_frame_bytes: int
    # Deadline for a closing handshake; a peer that does not read is aborted after it.
    close_timeout: float
    # The console's write ops (action, post); None answers them as unavailable.
    control: ControlOps | None = None
    # Bounds the snapshot reads in flight (SNAPSHOT_CONCURRENCY); the waiting ones queue in order.
    snapshot_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SNAPSHOT_CONCURRENCY))


@dataclass(eq=False, slots=True)
class Subscription:
    """One room on one connection. Identity-hashed: the registry keeps them in sets."""

    conn: Connection
    room: Room
    name: str
    since: Since
    # Tail watermark at registration: the snapshot reads history up to it.
    watermark: int
    active: bool = True
    snapshot: asyncio.Task[Snapshot] | None = None
    # Run rooms: last seq sent per session; sessions not in it start at ``default_last``.
    last: dict[str, int] = field(default_factory=dict)
    default_last: int = 0
    # Conv rooms: seq of the last message sent.
    count: int = 0

    def offer_step(self, session_id: str, seq: int, frame: str) -> None:
        self.conn.offer((self, session_id, seq, frame))

    def offer_message(self, record: MessageRecord) -> None:
        self.conn.offer(MessageItem(self, record))


@dataclass(slots=True)
class SnapshotItem:
    sub: Subscription


@dataclass(slots=True)
class MessageItem:
    sub: Subscription
    record: MessageRecord


@dataclass(slots=True)
class TextItem:
    frame: str


# A live step is a plain tuple (subscription, session_id, seq, frame): it is the hot path.
Item = tuple[Subscription, str, int, str] | SnapshotItem | MessageItem | TextItem
