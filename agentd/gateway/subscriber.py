"""One WebSocket connection: its subscriptions, its bounded outbox, a reader and a sender.

Why a bounded outbox rather than ``websockets.broadcast``: broadcast writes into every
transport buffer with no backpressure (its docstring says so), so one client that stops
reading grows the gateway's memory without bound. Here the tail only *offers* an event to a
connection (never awaits); a connection whose outbox already holds ``max_queue`` items is
closed with 4008 (``CloseCodes.SLOW_CONSUMER``) and told to resubscribe with ``since``. Others
are unaffected: their sender tasks drain their own outboxes.

Exactly-once hand-over from snapshot to live, per subscription: while the reader handles a
subscribe it does, without awaiting, (1) read the step (or message) tail's watermark W,
(2) add the subscription to the room registry, (3) queue a snapshot marker. The tail offers
it only batches above W (``rooms.py``), queued behind the marker; the snapshot reads history
only up to W. The sender then drops live steps whose seq is not above what the snapshot
covered (``last``), a cheap guard that also absorbs a replayed batch.

An outbox above half of ``max_queue`` marks the connection crowded in the registry's
``Pacer``; the tail then waits (briefly) for it before offering more, so a burst reaches a
reading client instead of overflowing it.

Who cancels what: the handler task (owned by websockets) runs the reader and owns the sender
task; it cancels the sender when the reader ends. Closing (overflow, shutdown) cancels the
sender and closes the socket with a deadline, aborting it if the peer does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from agentd.gateway.control_ops import OpTasks
from agentd.gateway.protocol import (
    OVERFLOW_REASON,
    CloseCodes,
    ErrorEvent,
    PingOp,
    PongEvent,
    SubscribeOp,
    UnsubscribedEvent,
    UnsubscribeOp,
    message_frame,
    parse_client_frame,
)
from agentd.gateway.rooms import AgentRoom, ConvRoom, Room, RoomError, parse_room
from agentd.gateway.snapshot import Since, Snapshot, WrongAgent, build_snapshot
from agentd.gateway.subscription import (
    GatewayContext,
    Item,
    MessageItem,
    SnapshotItem,
    Subscription,
    TextItem,
)
from agentd.store.conversations import MessageRecord

__all__ = ["MAX_ROOMS_PER_CONNECTION", "OVERFLOW_REASON", "Connection"]

log = logging.getLogger(__name__)

MAX_ROOMS_PER_CONNECTION = 256
# A live step goes straight to the socket (no outbox, no sender wake-up) only while the
# connection's transport holds less than this unsent; above it steps queue in the bounded
# outbox and the sender awaits the socket's drain, so memory stays bounded either way.
DIRECT_WRITE_LIMIT = 64 * 1024


def _checked_room(op: SubscribeOp, subs: dict[str, Subscription]) -> Room | ErrorEvent:
    """The room a subscribe names, or the error event that refuses it (nothing is changed)."""
    try:
        room = parse_room(op.room)
    except RoomError as exc:
        return ErrorEvent(error=str(exc), code="bad_room", op=op.op)
    if isinstance(op.since, dict) and not isinstance(room, AgentRoom):
        error = "since as an object is only for run::<agent_id>::*"
        return ErrorEvent(error=error, code="invalid", op=op.op, room=op.room)
    if isinstance(room, AgentRoom) and isinstance(op.since, int) and op.since > 0:
        error = 'an agent room resumes per session: since={"<session_id>": <last seq>, ...} (or 0)'
        return ErrorEvent(error=error, code="invalid", op=op.op, room=op.room)
    if room.name not in subs and len(subs) >= MAX_ROOMS_PER_CONNECTION:
        error = f"at most {MAX_ROOMS_PER_CONNECTION} rooms per connection"
        return ErrorEvent(error=error, code="too_many_rooms", op=op.op, room=op.room)
    return room


class Connection:
    """State and tasks of one client connection; ``serve()`` is the websockets handler body."""

    def __init__(self, ws: ServerConnection, ctx: GatewayContext) -> None:
        self.ws = ws
        self.ctx = ctx
        self.subs: dict[str, Subscription] = {}
        self.outbox: deque[Item] = deque()
        # Set when the outbox has items (sender waits on it) / has room (reader waits on it).
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        # Set once by _overflow() or close(): nothing more is queued.
        self.closing = False
        # Pacing marks: crowded above _high queued items, released at _low (see Pacer).
        self._high = max(1, ctx.max_queue // 2)
        self._low = ctx.max_queue // 4
        self._crowded = False
        # Items taken from the outbox so far (the pacer's progress check).
        self.sent = 0
        # True while the sender waits for items (not inside a send): a step may then be
        # written at once, in order, by offer() (see _write_now).
        self._idle = False
        self._sender: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        # Control ops waiting for their answer (control_ops.py); cancelled when the connection ends.
        self._ops = OpTasks(ctx.control, self._reply)

    async def serve(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="gateway-sender")
        try:
            await self._read_loop()
        finally:
            self.closing = True
            self._uncrowd()
            self._drop_subscriptions()
            self._sender.cancel()
            await asyncio.gather(self._sender, self._ops.cancel(), return_exceptions=True)
            if self._close_task is not None:
                await asyncio.gather(self._close_task, return_exceptions=True)

    # -- queueing -------------------------------------------------------------------------

    def offer(self, item: Item) -> None:
        """Queue a live item without blocking; overflow closes the connection (4008)."""
        if self.closing:
            return
        if self._idle and not self.outbox and type(item) is tuple and self._write_now(*item):
            return
        if len(self.outbox) >= self.ctx.max_queue:
            self._overflow()
            return
        self.outbox.append(item)
        self._ready.set()
        if not self._crowded and len(self.outbox) > self._high:
            self._crowded = True
            self.ctx.registry.pacer.mark(self)

    def _write_now(self, sub: Subscription, session_id: str, seq: int, frame: str) -> bool:
        """Write a live step straight into the transport, as ``broadcast()`` does; False: queue it.

        Why: one commit fans out to up to thousands of connections, and waking a sender task
        per connection to ``await ws.send()`` cost more than the write itself. Only taken when
        nothing is queued and the sender is parked (so order is kept) and the transport holds
        less than ``DIRECT_WRITE_LIMIT`` unsent (so a client that does not read still ends up
        with a full outbox and the 4008 close, not a growing buffer).
        """
        transport = self.ws.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size() >= DIRECT_WRITE_LIMIT:
            return False
        self.sent += 1
        out = self._step_out(sub, session_id, seq, frame)
        if out is not None:
            broadcast([self.ws], out)
            self.ctx.stats.steps += 1
        return True

    def _uncrowd(self) -> None:
        if self._crowded:
            self._crowded = False
            self.ctx.registry.pacer.release(self)

    async def _reply(self, frame: str) -> None:
        """Queue a reply to the client's own frame, waiting for room: a flood slows the reader."""
        await self._wait_space()
        if not self.closing:
            self.outbox.append(TextItem(frame))
            self._ready.set()

    async def _wait_space(self) -> None:
        while len(self.outbox) >= self.ctx.max_queue and not self.closing:
            self._space.clear()
            await self._space.wait()

    async def _error(self, error: ErrorEvent) -> None:
        self.ctx.stats.errors_sent += 1
        await self._reply(error.model_dump_json())

    def _overflow(self) -> None:
        self.closing = True
        self.ctx.stats.overflow_disconnects += 1
        self.outbox.clear()
        self._uncrowd()
        self._drop_subscriptions()
        self._space.set()
        log.info("closing slow subscriber %s: %d events queued", self.ws.remote_address, self.ctx.max_queue)
        self._close_task = asyncio.create_task(self.close(CloseCodes.SLOW_CONSUMER, OVERFLOW_REASON))

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``; abort the TCP connection if the peer does not read in time.

        ``ServerConnection.close()`` waits for the write buffer to drain with no deadline, so a
        peer that stopped reading would hold it forever without the timeout here.
        """
        self.closing = True
        self._uncrowd()
        self._space.set()
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()
        try:
            async with asyncio.timeout(self.ctx.close_timeout):
                await self.ws.close(code, reason)
        except TimeoutError:
            self.ws.transport.abort()

    def _drop_subscriptions(self) -> None:
        for sub in self.subs.values():
            self._deactivate(sub)
        self.subs.clear()

    def _deactivate(self, sub: Subscription) -> None:
        sub.active = False
        self.ctx.registry.remove(sub)
        if sub.snapshot is not None and not sub.snapshot.done():
            sub.snapshot.cancel()

    # -- reading --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            try:
                data = await self.ws.recv(decode=False)
            except ConnectionClosed:
                return
            if self.closing:
                continue
            if len(data) > self.ctx.max_frame_bytes:
                await self._error(
                    ErrorEvent(
                        error=f"frame of {len(data)} bytes exceeds max_frame_bytes={self.ctx.max_frame_bytes}",
                        code="too_big",
                    )
                )
                continue
            op = parse_client_frame(data)
            if isinstance(op, ErrorEvent):
                await self._error(op)
            elif isinstance(op, SubscribeOp):
                await self._subscribe(op)
            elif isinstance(op, UnsubscribeOp):
                await self._unsubscribe(op)
            elif isinstance(op, PingOp):
                await self._reply(PongEvent(id=op.id).model_dump_json())
            else:
                await self._ops.start(op)  # action, post: answered by their own task

    async def _subscribe(self, op: SubscribeOp) -> None:
        room = _checked_room(op, self.subs)
        if isinstance(room, ErrorEvent):
            await self._error(room)
            return
        await self._wait_space()
        if self.closing:
            return
        # From here to the end: no await (see the module docstring).
        previous = self.subs.pop(room.name, None)
        if previous is not None:
            self._deactivate(previous)
        tail = self.ctx.messages if isinstance(room, ConvRoom) else self.ctx.steps
        sub = Subscription(
            conn=self,
            room=room,
            name=room.name,
            since=op.since,
            watermark=tail.watermark,
            default_last=op.since if isinstance(op.since, int) else 0,
        )
        if isinstance(op.since, dict):
            sub.last.update(op.since)
        self.ctx.registry.add(sub)
        self.subs[room.name] = sub
        sub.snapshot = asyncio.create_task(self._build_snapshot(room, op.since, sub.watermark))
        self.outbox.append(SnapshotItem(sub))
        self._ready.set()

    async def _build_snapshot(self, room: Room, since: Since, upto: int) -> Snapshot:
        """The snapshot, read once one of the shared slots is free (``SNAPSHOT_CONCURRENCY``)."""
        async with self.ctx.snapshot_slots:
            return await build_snapshot(self.ctx.store, room, since, upto)

    async def _unsubscribe(self, op: UnsubscribeOp) -> None:
        try:
            room = parse_room(op.room)
        except RoomError as exc:
            await self._error(ErrorEvent(error=str(exc), code="bad_room", op=op.op))
            return
        sub = self.subs.pop(room.name, None)
        if sub is not None:
            self._deactivate(sub)
        await self._reply(UnsubscribedEvent(room=room.name).model_dump_json())

    # -- sending --------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                if not self.outbox:
                    self._ready.clear()
                    self._idle = True
                    try:
                        await self._ready.wait()
                    finally:
                        self._idle = False
                    continue
                item = self.outbox.popleft()
                self.sent += 1
                if len(self.outbox) < self.ctx.max_queue:
                    self._space.set()
                if self._crowded and len(self.outbox) <= self._low:
                    self._uncrowd()
                if type(item) is tuple:
                    await self._send_step(*item)
                elif isinstance(item, TextItem):
                    await self.ws.send(item.frame)
                elif isinstance(item, MessageItem):
                    await self._send_message(item.sub, item.record)
                elif isinstance(item, SnapshotItem):
                    await self._send_snapshot(item.sub)
        except ConnectionClosed:
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway sender failed; closing the connection")
            self.closing = True
            self._drop_subscriptions()
            self._close_task = asyncio.create_task(self.close(CloseCodes.INTERNAL_ERROR, "internal error"))

    async def _send_step(self, sub: Subscription, session_id: str, seq: int, frame: str) -> None:
        out = self._step_out(sub, session_id, seq, frame)
        if out is not None:
            await self.ws.send(out)
            self.ctx.stats.steps += 1

    def _step_out(self, sub: Subscription, session_id: str, seq: int, frame: str) -> str | None:
        """The frame to send for a live step, or None (inactive, already sent, undecodable row).

        Moves the subscription's position: each seq at most once, in order (gaps are logged).
        """
        if not sub.active:
            return None
        last = sub.last.get(session_id, sub.default_last)
        if seq <= last:
            self.ctx.stats.duplicates_dropped += 1
            return None
        if not frame:  # an undecodable row (rows.StepRow without a body): its seq passes, nothing is sent
            sub.last[session_id] = seq
            return None
        if seq != last + 1:
            self.ctx.stats.gaps_seen += 1
            log.warning("room %s: session %s jumps from seq %d to %d", sub.name, session_id, last, seq)
        sub.last[session_id] = seq
        return frame

    async def _send_message(self, sub: Subscription, record: MessageRecord) -> None:
        if not sub.active:
            return
        sub.count += 1
        if sub.count <= sub.default_last:  # the client said it has messages up to since
            self.ctx.stats.duplicates_dropped += 1
            return
        await self.ws.send(message_frame(sub.name, record, sub.count))
        self.ctx.stats.messages += 1

    async def _send_snapshot(self, sub: Subscription) -> None:
        task = sub.snapshot
        if task is None or not sub.active:
            return
        await asyncio.wait([task])
        if not sub.active or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, WrongAgent):
                log.warning("snapshot of %s failed: %s", sub.name, exc, exc_info=exc)
            if self.subs.get(sub.name) is sub:
                del self.subs[sub.name]
            self._deactivate(sub)
            self.ctx.stats.errors_sent += 1
            code = "invalid" if isinstance(exc, ValueError) else "unavailable"
            code = "wrong_agent" if isinstance(exc, WrongAgent) else code
            await self.ws.send(
                ErrorEvent(error=f"snapshot failed: {exc}", code=code, op="subscribe", room=sub.name).model_dump_json()
            )
            return
        snap = task.result()
        sub.last.update(snap.last)
        sub.count = snap.count
        await self.ws.send(snap.frame)
        self.ctx.stats.snapshots += 1
        for frames, counter in ((snap.pages, None), (snap.backlog, "messages"), (snap.steps, "steps")):
            for frame in frames:
                if not sub.active:
                    return
                await self.ws.send(frame)
                if counter == "messages":
                    self.ctx.stats.messages += 1
                elif counter == "steps":
                    self.ctx.stats.steps += 1
        if snap.later is not None:
            async with contextlib.aclosing(snap.later) as pages:
                async for frames, last in pages:
                    for session_id, seq in last.items():
                        sub.last[session_id] = max(seq, sub.last.get(session_id, 0))
                    for frame in frames:
                        if not sub.active:
                            return
                        await self.ws.send(frame)
                        self.ctx.stats.steps += 1
