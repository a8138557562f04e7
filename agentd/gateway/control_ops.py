"""The console's write ops on a connection: ``action`` (through the control API) and ``post``.

Why apart from ``subscriber.py``: those ops wait (an acknowledgement takes a flush, a post a
commit), and a connection's reader must keep reading its subscriptions' frames meanwhile. Each
op runs as its own task, at most ``MAX_IN_FLIGHT`` per connection (the reader waits for a slot,
so a client flooding ops only slows itself), and its answer is queued on the connection's
outbox like any reply. The connection cancels its op tasks when it closes.

``[gateway] control = false`` answers every op with code ``forbidden``: a read-only console.
A message posted here is written like ``agentctl conversation post`` writes it (one row in
``messages``, role ``user``); the gateway writes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentd.gateway.control_bridge import ControlBridge, unanswered
from agentd.gateway.protocol import ActionOp, ErrorCode, ErrorEvent, PostedEvent, PostOp
from agentd.ids import new_id, validate_id
from agentd.store.conversations import MessageRecord, get_conversation, insert_messages
from agentd.timeutil import utcnow

__all__ = ["MAX_IN_FLIGHT", "READ_ONLY", "ControlOps", "OpTasks"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64
READ_ONLY = "this gateway is read-only ([gateway] control = false): actions and posts are disabled"


@dataclass(slots=True)
class ControlOps:
    """Shared by every connection of one gateway."""

    bridge: ControlBridge
    store: Any
    enabled: bool
    # Counters for /metrics: ops by kind and outcome.
    outcomes: dict[tuple[str, str], int]

    def _count(self, kind: str, outcome: str) -> None:
        self.outcomes[(kind, outcome)] = self.outcomes.get((kind, outcome), 0) + 1

    async def action(self, op: ActionOp) -> str:
        if not self.enabled:
            self._count(op.kind, "forbidden")
            return unanswered(op, READ_ONLY, "forbidden").model_dump_json()
        try:
            validate_id(op.session_id, "session id")
        except ValueError as exc:
            self._count(op.kind, "invalid")
            return unanswered(op, str(exc), "invalid").model_dump_json()
        try:
            ack = await self.bridge.submit(op)
        except Exception as exc:
            log.exception("console action %s of %s failed", op.kind, op.session_id)
            ack = unanswered(op, f"the action could not be submitted: {type(exc).__name__}: {exc}"[:500], "unavailable")
        self._count(op.kind, ack.code or ack.status)
        log.info("console %s of session %s: %s (%s)", op.kind, op.session_id, ack.status, ack.code or "ok")
        return ack.model_dump_json()

    async def post(self, op: PostOp) -> str:
        if not self.enabled:
            self._count("post", "forbidden")
            return _post_failed(op, READ_ONLY, "forbidden")
        try:
            validate_id(op.conversation_id, "conversation id")
            validate_id(op.author, "author id")
            conversation = await get_conversation(self.store.conversations, op.conversation_id)
            if conversation is None:
                self._count("post", "not_found")
                return _post_failed(op, f"unknown conversation {op.conversation_id}", "not_found")
            record = MessageRecord(
                message_id=new_id("m"),
                conversation_id=op.conversation_id,
                author_id=op.author,
                role="user",
                text=op.text,
                created_at=utcnow(),
            )
            await insert_messages(self.store.messages, [record])
        except (ValueError, TypeError) as exc:
            self._count("post", "invalid")
            return _post_failed(op, f"invalid post: {exc}"[:500], "invalid")
        except Exception as exc:
            log.warning("console post to %s failed: %s", op.conversation_id, exc)
            self._count("post", "unavailable")
            return _post_failed(op, f"post failed: {exc}"[:500], "unavailable")
        self._count("post", "done")
        return PostedEvent(id=op.id, conversation_id=op.conversation_id, message_id=record.message_id).model_dump_json()


def _post_failed(op: PostOp, error: str, code: ErrorCode) -> str:
    return PostedEvent(
        id=op.id, conversation_id=op.conversation_id, status="failed", error=error, code=code
    ).model_dump_json()


class OpTasks:
    """One connection's ops in flight: each runs as a task and queues its answer with ``reply``.

    ``start`` waits for a free slot (at most ``MAX_IN_FLIGHT``), so a client flooding ops slows
    only its own reader. ``cancel`` (the connection ended) cancels what is still waiting; an
    action already handed to the daemon stays queued there.
    """

    def __init__(self, control: ControlOps | None, reply: Callable[[str], Awaitable[None]]) -> None:
        self.control = control
        self.reply = reply
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def start(self, op: ActionOp | PostOp) -> None:
        control = self.control
        if control is None:
            await self.reply(
                ErrorEvent(error="control is not available here", code="unavailable", op=op.op).model_dump_json()
            )
            return
        await self.slots.acquire()

        async def run() -> None:
            try:
                await self.reply(await (control.action(op) if isinstance(op, ActionOp) else control.post(op)))
            finally:
                self.slots.release()

        task = asyncio.create_task(run(), name=f"gateway-{op.op}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
