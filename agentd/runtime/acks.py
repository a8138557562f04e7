"""What a session host does with the actions it has claimed: acknowledge, keep, hand back.

``AckBatcher`` coalesces acknowledgements into one conditional commit per batch, and degrades
to one commit per action when a batch fails for a reason other than a commit race: one
acknowledgement the storage cannot hold (a poisoned result payload) must not fail the others.

``ClaimKeeper`` holds the host's claimed-but-unacknowledged actions. It renews their leases
while they wait or run (a slow LLM call or a slow commit must not let a live claim expire
and be applied a second time), tells the claim loop which actions are already in flight, and
hands them all back to the queue at a graceful stop so that the next owner applies them at
once instead of failing them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from agentd.queue import Ack, ActionQueue, ClaimLost, retryable
from agentd.store.actions import ActionRecord

__all__ = ["AckBatcher", "ClaimKeeper"]

log = logging.getLogger(__name__)


class AckBatcher:
    """Coalesces acknowledgements into one commit each: while one commit runs, the next batch gathers.

    Every ``update`` is a commit, and concurrent commits from one process conflict and retry;
    200 acknowledgements sent one by one took seconds, in one batch they take one commit.
    """

    def __init__(
        self,
        queue: ActionQueue,
        *,
        max_batch: int = 500,
        on_acked: Callable[[list[ActionRecord]], None] | None = None,
    ) -> None:
        self.queue = queue
        self.max_batch = max_batch
        # Told every batch of acknowledgements once committed: the worker pushes them to the
        # supervisor, which answers the clients waiting for them (no client polls the table).
        self.on_acked = on_acked
        self._pending: list[tuple[Ack, asyncio.Future[ActionRecord | ClaimLost]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ack-batcher")

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        while self._pending or not self._idle.is_set():
            self._wake.set()
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def finish(self, ack: Ack) -> ActionRecord:
        """Acknowledge one action; raises ClaimLost if it is no longer ours."""
        future: asyncio.Future[ActionRecord | ClaimLost] = asyncio.get_running_loop().create_future()
        self._pending.append((ack, future))
        self._wake.set()
        outcome = await asyncio.shield(future)
        if isinstance(outcome, ClaimLost):
            raise outcome
        return outcome

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._idle.clear()
            try:
                while self._pending:
                    batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                    await self._commit(batch)
            finally:
                self._idle.set()

    async def _commit(self, batch: list[tuple[Ack, asyncio.Future[ActionRecord | ClaimLost]]]) -> None:
        try:
            outcomes: list[ActionRecord | ClaimLost | BaseException] = list(
                await self.queue.finish_many([ack for ack, _ in batch])
            )
        except Exception as exc:
            if retryable(exc):
                outcomes = [exc] * len(batch)
            else:  # one bad acknowledgement must not fail the others: one commit each
                if len(batch) > 1:
                    log.warning("acknowledging %d actions failed (%s); acknowledging one by one", len(batch), exc)
                outcomes = [await self._one(ack) for ack, _ in batch]
        if self.on_acked is not None:
            committed = [outcome for outcome in outcomes if isinstance(outcome, ActionRecord)]
            if committed:
                try:
                    self.on_acked(committed)
                except Exception:  # a push only: the row is the truth and a client can read it
                    log.exception("pushing %d acknowledgements failed", len(committed))
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException) and not isinstance(outcome, ClaimLost):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _one(self, ack: Ack) -> ActionRecord | ClaimLost | BaseException:
        try:
            [outcome] = await self.queue.finish_many([ack])
            return outcome
        except Exception as exc:
            if retryable(exc):
                return exc
            # The result cannot be stored: acknowledge without it, saying why.
            log.error(
                "action %s: its result cannot be stored (%s); acknowledging without it", ack.action.action_id, exc
            )
            note = f"result could not be stored: {type(exc).__name__}"
            stripped = Ack(ack.action, ack.status, None, f"{ack.error}; {note}" if ack.error else note, ack.code)
            try:
                [outcome] = await self.queue.finish_many([stripped])
                return outcome
            except Exception as again:
                return again


class ClaimKeeper:
    """The claimed actions a host is working on, their lease renewal, and their hand-back."""

    def __init__(self, queue: ActionQueue, *, interval: float | None = None) -> None:
        self.queue = queue
        # Renew three times per lease: two renewals can fail before a claim is at risk.
        self.interval = interval if interval is not None else max(0.05, queue.lease / 3)
        self.held: dict[str, ActionRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self.renew_failures = 0

    def __contains__(self, action_id: object) -> bool:
        return action_id in self.held

    def __len__(self) -> int:
        return len(self.held)

    def hold(self, action: ActionRecord) -> None:
        self.held[action.action_id] = action

    def drop(self, action: ActionRecord) -> None:
        self.held.pop(action.action_id, None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lease-renewal")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.held:
                continue
            try:
                await self.queue.renew(list(self.held.values()))
            except Exception as exc:
                self.renew_failures += 1
                log.warning("renewing %d leases failed: %s", len(self.held), exc)

    async def hand_back(self) -> int:
        """Stop renewing and return every held action to the queue (pending again)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        actions, self.held = list(self.held.values()), {}
        if not actions:
            return 0
        try:
            released = await self.queue.release(actions)
        except Exception as exc:  # the next owner takes them over anyway (see ActionQueue.claim)
            log.warning("handing back %d actions failed: %s", len(actions), exc)
            return 0
        log.info("handed %d in-flight actions back to the queue", released)
        return released

    async def settle(self, acks: AckBatcher, ack: Ack, stopping: Callable[[], bool]) -> bool:
        """Record the acknowledgement, retrying storage errors; True once it is recorded.

        Until then the action stays held (its lease renewed): giving up would let it be applied
        again. At a stop it is handed back instead, and its next claimer finds the step it
        caused and only acknowledges it.
        """
        delay = 0.1
        while True:
            try:
                await acks.finish(ack)
            except ClaimLost as exc:
                log.warning("%s", exc)
                self.drop(ack.action)
                return False
            except Exception as exc:
                if stopping():
                    log.warning("acknowledging %s failed at stop (%s); handing it back", ack.action.action_id, exc)
                    return False
                log.warning("acknowledging %s failed (%s); retrying in %.1fs", ack.action.action_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.drop(ack.action)
            return True

    def counters(self) -> dict[str, Any]:
        return {"held": len(self.held), "renew_failures": self.renew_failures}
