"""How a session host acknowledges the actions it claimed (a mixin of ``SessionHost``).

Kept apart because this is where exactly-once meets the waiting client: an action is
acknowledged only once the state change it caused is durable (its step committed, then its
row), a refusal or an internal error becomes a failed acknowledgement with its typed code, and
an action interrupted by the host's stop is never acknowledged at all: it stays held and is
handed back to the queue for its next owner. ``pause``, ``resume`` and ``interrupt`` are told
to the client as soon as their step commits (``_push_early``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentd import faults
from agentd.queue import Ack
from agentd.runtime.commands import ActionRejected, CommandResult
from agentd.store.actions import ActionRecord
from agentd.store.writer import WriterClosed
from agentd.timeutil import utcnow

if TYPE_CHECKING:
    from agentd.runtime.acks import AckBatcher, ClaimKeeper
    from agentd.store.writer import BatchingWriter
    from agentd.telemetry import WorkerTelemetry

__all__ = ["EARLY_ACK_KINDS", "AckPath", "done", "rejected"]

log = logging.getLogger("agentd.runtime.host")  # the host's log, as before the split (log filters)

# Actions whose acknowledgement goes out once their step commits, before the ``sessions`` row
# and the acknowledgement's own row: each records its effect in a step with its action_id.
# (A create's first step alone is not yet listed by ``list``; a destroy stops the runner.)
EARLY_ACK_KINDS = frozenset({"pause", "resume", "interrupt"})


class AckPath:
    """The acknowledgement half of ``SessionHost``; the attributes below are the host's."""

    writer: BatchingWriter
    acks: AckBatcher
    claims: ClaimKeeper
    telemetry: WorkerTelemetry
    on_acked: Callable[[list[ActionRecord], bool], None] | None
    actions_applied: int
    actions_failed: int
    _stopping: bool
    _ack_tasks: set[asyncio.Task[None]]

    def _ack(self, action: ActionRecord, outcome: Awaitable[CommandResult]) -> None:
        task = asyncio.ensure_future(self._acknowledge(action, outcome))
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    async def _acknowledge(self, action: ActionRecord, outcome: Awaitable[CommandResult]) -> None:
        started = time.perf_counter()
        try:
            result, generation = await outcome
            early = bool(generation) and action.kind in EARLY_ACK_KINDS
            if generation:
                await (self.writer.wait_steps_durable if early else self.writer.wait_durable)(generation)
            faults.hit("after-effect", action.kind)
            if early:
                self._push_early(action, result)
                try:  # the client has its answer: the snapshot may go with the next regular flush
                    await self.writer.wait_durable(generation, urgent=False)
                except WriterClosed:  # fenced out: the step is in; the next owner finds it and acknowledges it
                    return
        except asyncio.CancelledError:
            return  # host stopping: the action stays held and is handed back to the queue
        except ActionRejected as exc:
            if self._stopping:
                # The session was shut down (or not found) while the host stops: hand the action
                # back; its next owner applies it, or rejects it for a reason of its own.
                return
            self.actions_failed += 1
            await self._finish(Ack(action, "failed", error=str(exc), code=exc.code))
            return
        except Exception as exc:
            if self._stopping:
                log.warning("action %s interrupted by the stop (%s); handing it back", action.action_id, exc)
                return
            log.exception("action %s (%s) failed", action.action_id, action.kind)
            self.actions_failed += 1
            await self._finish(Ack(action, "failed", error=f"internal error: {exc}", code="internal"))
            return
        if await self._finish(Ack(action, "done", result)):
            self.actions_applied += 1
            if action.kind in ("create", "destroy") and not result.get("replayed"):
                # The lifecycle of a fleet shows in the daemon's log; other actions only at debug.
                log.info(
                    "session %s %s (agent %s, type %s)",
                    action.session_id,
                    "created" if action.kind == "create" else "destroyed",
                    result.get("agent_id") or action.payload.get("agent_id") or "-",
                    action.payload.get("agent_type") or "-",
                )
        log.debug(
            "action %s %s applied in %.1f ms", action.kind, action.action_id, (time.perf_counter() - started) * 1000
        )

    def _push_early(self, action: ActionRecord, result: dict[str, Any]) -> None:
        """Tell the waiting client now: the step recording the action is committed.

        The step is the source of truth (DESIGN.md §4) and records the ``action_id``, so from
        here the action counts as applied whatever happens next: if this worker dies before the
        acknowledgement's row commits, the next owner finds the step and only acknowledges it.
        Saves the client the ``sessions`` commit and the acknowledgement's merge.
        """
        if self.on_acked is None:
            return
        try:
            self.on_acked([action.model_copy(update={"status": "done", "result": result})], True)
        except Exception:  # a push only, like AckBatcher's
            log.exception("pushing the acknowledgement of %s failed", action.action_id)

    def _push_committed(self, records: list[ActionRecord]) -> None:
        assert self.on_acked is not None
        self.on_acked(records, False)

    async def _finish(self, ack: Ack) -> bool:
        settled = await self.claims.settle(self.acks, ack, lambda: self._stopping)
        if settled:
            latency = (utcnow() - ack.action.created_at).total_seconds()
            self.telemetry.action(ack.action.kind, ack.status if ack.code is None else ack.code, latency)
        return settled


async def rejected(message: str) -> CommandResult:
    raise ActionRejected(message)


async def done(result: dict[str, Any]) -> CommandResult:
    return result, 0
