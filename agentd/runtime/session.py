"""One session: its tick loop, its command inbox, pause/resume, guidance and stop.

A session is one asyncio task (``SessionRunner.run``) that owns all changes to its state, so
commands (pause, resume, interrupt, destroy) and ticks never interleave: commands queue in the
inbox and are applied, in arrival order, between ticks. A destroy therefore stops the session
after the tick in flight.

Every change appends a step with the full state snapshot and submits the session row to the
batching writer: ticks (``kind="tick"``), applied guidance (``kind="guidance"``, with the raw and
normalized guidance) and lifecycle changes (``kind="lifecycle"``). ``seq`` grows by one per
step, so a resumed session continues at ``last_seq + 1`` with no gap and no duplicate.

Commands resolve to ``(result, generation)``; the host acknowledges the action once that writer
generation is durable. Scheduling is hybrid: the next tick is due one heartbeat after the last
one was due, or at once when woken (immediate guidance, ``speak_now``, a new message).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentd.agents.base import Agent, CreateError, GuidanceError, StepOutcome, Tick
from agentd.logsetup import session_id_var
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord, StepStatus
from agentd.store.writer import BatchingWriter
from agentd.timeutil import utcnow

__all__ = ["ActionRejected", "Command", "SessionRunner"]

log = logging.getLogger(__name__)

CommandResult = tuple[dict[str, Any], int]


class ActionRejected(Exception):
    """The command cannot be applied; the message is recorded on the action for the user."""


@dataclass(slots=True)
class Command:
    kind: str  # create | pause | resume | interrupt | destroy | shutdown
    payload: dict[str, Any] = field(default_factory=dict)
    future: asyncio.Future[CommandResult] | None = None


class SessionRunner:
    """Runs one session. Created by the host, which also starts ``run()`` as a task at once."""

    def __init__(
        self,
        record: SessionRecord,
        agent: Agent,
        writer: BatchingWriter,
        *,
        heartbeat: float,
        tick_timeout: float,
        creating: bool = False,
        epoch: int = 0,
        on_lateness: Callable[[float], None] | None = None,
    ) -> None:
        self.record = record
        self.agent = agent
        self.writer = writer
        self.heartbeat = float(record.config.get("interval") or heartbeat)
        self.tick_timeout = tick_timeout
        self.epoch = epoch
        self.on_lateness = on_lateness
        self.status: str = record.status
        self.context: dict[str, Any] = dict(record.context)
        self.iteration = record.iteration
        self.last_seq = record.last_seq
        self.last_result = record.last_result
        self.consecutive_errors = 0
        self._creating = creating
        self._inbox: deque[Command] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._tick_now = False
        self._due = 0.0
        self._finished = False
        self._final: list[Command] = []

    @property
    def session_id(self) -> str:
        return self.record.session_id

    # -- called by the host ------------------------------------------------------------------

    def submit(self, command: Command) -> asyncio.Future[CommandResult]:
        loop = asyncio.get_running_loop()
        command.future = loop.create_future()
        if self._finished:
            command.future.set_exception(ActionRejected(f"session {self.session_id} is stopped"))
        else:
            self._inbox.append(command)
            self.wake()
        return command.future

    def wake(self, tick: bool = False) -> None:
        """Interrupt the wait; with ``tick``, also run a tick at once if the session runs."""
        if tick:
            self._tick_now = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        session_id_var.set(self.session_id)  # every log line of this task names the session
        loop = asyncio.get_running_loop()
        started = False
        try:
            if self._creating and not await self._create():
                return
            if self.status == "stopping":  # destroyed while the previous host was going down
                await self._stop("stopped", text="stopped")
                return
            await self.agent.on_start(self.context)
            started = True
            # A new session ticks at once; a resumed one soon (spread, so that thousands of
            # sessions resuming together do not all tick in the same loop iteration).
            self._due = loop.time() + (0.0 if self._creating else random.random() * min(self.heartbeat, 0.25))
            while True:
                while self._inbox:
                    command = self._inbox.popleft()
                    if await self._apply(command):
                        return
                if self.status == "running" and (self._tick_now or loop.time() >= self._due):
                    if await self._tick(loop):
                        return
                    continue
                await self._sleep_until(loop, self._due if self.status == "running" else None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s crashed; marking it error", self.session_id)
            self.status = "error"
            await self._persist("lifecycle", text="session crashed", status="error")
        finally:
            self._finished = True
            if started:
                try:
                    await self.agent.on_stop(self.context)
                except Exception:
                    log.exception("on_stop of session %s failed", self.session_id)
            self._reject_pending()

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, due: float | None) -> None:
        if self._inbox or self._tick_now:
            return
        self._waiter = waiter = loop.create_future()
        handle = None if due is None else loop.call_at(due, _set_if_pending, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _reject_pending(self) -> None:
        while self._inbox:
            command = self._inbox.popleft()
            if command.future is not None and not command.future.done():
                command.future.set_exception(ActionRejected(f"session {self.session_id} is {self.status}"))

    # -- persistence -------------------------------------------------------------------------

    def _snapshot(self) -> SessionRecord:
        self.context["paused"] = self.status == "paused"
        return self.record.model_copy(
            update={
                "status": self.status,
                "context": dict(self.context),
                "iteration": self.iteration,
                "last_seq": self.last_seq,
                "last_result": self.last_result,
                "updated_at": utcnow(),
            }
        )

    async def _persist(
        self,
        kind: str,
        *,
        text: str | None = None,
        status: StepStatus = "info",
        data: dict[str, Any] | None = None,
        guidance: dict[str, Any] | None = None,
        notes: str | None = None,
        error: str | None = None,
        latency_ms: float | None = None,
    ) -> int:
        """Append a step with the current state and submit the snapshot; returns the generation."""
        self.last_seq += 1
        snapshot = self._snapshot()
        step = StepRecord.model_construct(
            session_id=self.session_id,
            agent_id=self.record.agent_id,
            shard=self.record.shard,
            seq=self.last_seq,
            ts=snapshot.updated_at,
            status=status,
            kind=kind,
            text=text,
            data=data,
            state={
                "status": self.status,
                "iteration": self.iteration,
                "context": snapshot.context,
                "last_result": self.last_result,
            },
            guidance=guidance,
            notes=notes,
            latency_ms=latency_ms,
            error=error,
            epoch=self.epoch,
        )
        return await self.writer.submit([step], snapshot)

    def _result(self, **extra: Any) -> dict[str, Any]:
        return {"session_id": self.session_id, "status": self.status, **extra}

    # -- commands ----------------------------------------------------------------------------

    async def _create(self) -> bool:
        command = self._inbox.popleft() if self._inbox and self._inbox[0].kind == "create" else None
        try:
            await self.agent.validate_create()
        except CreateError as exc:
            self._finished = True
            if command and command.future and not command.future.done():
                command.future.set_exception(ActionRejected(str(exc)))
            self.status = "error"
            self._reject_unknown()
            return False
        self.status = "running"
        generation = await self._persist("lifecycle", text="created")
        if command and command.future and not command.future.done():
            command.future.set_result((self._result(agent_id=self.record.agent_id), generation))
        return True

    def _reject_unknown(self) -> None:
        while self._inbox:
            command = self._inbox.popleft()
            if command.future is not None and not command.future.done():
                command.future.set_exception(ActionRejected(f"unknown session {self.session_id}"))

    async def _apply(self, command: Command) -> bool:
        """Apply one command; True when the session has stopped."""
        future = command.future
        try:
            outcome = await self._apply_kind(command)
        except ActionRejected as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
            return False
        if outcome is None:  # stopped: the stop path resolves the future
            return True
        if future is not None and not future.done():
            future.set_result(outcome)
        return False

    async def _apply_kind(self, command: Command) -> CommandResult | None:
        kind = command.kind
        if kind == "pause":
            if self.status == "running":
                self.status = "paused"
                return self._result(), await self._persist("lifecycle", text="paused")
            return self._result(), self.writer.current_generation
        if kind == "resume":
            if self.status == "paused":
                self.status = "running"
                self._due = asyncio.get_running_loop().time()
                return self._result(), await self._persist("lifecycle", text="resumed")
            return self._result(), self.writer.current_generation
        if kind == "interrupt":
            return await self._interrupt(command.payload)
        if kind in ("destroy", "shutdown"):
            self._final.append(command)
            if kind == "destroy":
                reason = command.payload.get("reason")
                self.status = "stopping"
                await self._stop("stopped", text=f"destroyed: {reason}" if reason else "destroyed")
            else:
                await self._shutdown()
            return None
        raise ActionRejected(f"unsupported action {kind!r} for session {self.session_id}")

    async def _interrupt(self, payload: dict[str, Any]) -> CommandResult:
        raw = payload.get("guidance")
        if not isinstance(raw, dict | str) or (isinstance(raw, str) and not raw.strip()):
            raise ActionRejected("guidance must be a non-empty JSON object or text")
        try:
            normalized = self.agent.normalize_guidance(raw)
            effect = self.agent.apply_guidance(normalized, dict(self.context))
        except GuidanceError as exc:
            raise ActionRejected(str(exc)) from exc
        except Exception as exc:  # a bug in the agent type must not take the session down
            log.exception("guidance for session %s failed", self.session_id)
            raise ActionRejected(f"guidance failed: {exc}") from exc
        self.context.update(effect.delta)
        guidance = {"raw": raw, "normalized": normalized.model_dump(mode="json", exclude_defaults=True)}
        generation = await self._persist("guidance", text="guidance applied", guidance=guidance)
        if (effect.wake or payload.get("now")) and self.status == "running":
            self._tick_now = True
        return self._result(applied=guidance["normalized"], context=dict(self.context)), generation

    async def _stop(self, final_status: str, *, text: str, status: StepStatus = "info") -> None:
        self.status = final_status
        generation = await self._persist("lifecycle", text=text, status=status)
        self._resolve_final(generation)

    async def _shutdown(self) -> None:
        """Host going down: keep the status so the next start resumes; persist the snapshot."""
        generation = await self.writer.submit(None, self._snapshot())
        self._resolve_final(generation)

    def _resolve_final(self, generation: int) -> None:
        self._finished = True
        for command in self._final:
            if command.future is not None and not command.future.done():
                command.future.set_result((self._result(), generation))
        self._final.clear()

    # -- ticks -------------------------------------------------------------------------------

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Run one tick; True when the tick stopped the session."""
        woken = self._tick_now
        self._tick_now = False
        started = loop.time()
        if not woken and self.on_lateness is not None:
            self.on_lateness(started - self._due)
        tick = Tick(
            seq=self.last_seq + 1, iteration=self.iteration, now=utcnow(), context=dict(self.context), woken=woken
        )
        try:
            async with asyncio.timeout(self.tick_timeout):
                outcome = await self.agent.do_tick(tick)
            self.consecutive_errors = 0
        except TimeoutError:
            outcome = StepOutcome(status="error", error=f"timeout: tick took longer than {self.tick_timeout:g}s")
        except Exception as exc:
            outcome = StepOutcome(status="error", error=f"{type(exc).__name__}: {exc}")
        if outcome.status == "error":
            self.consecutive_errors += 1
        latency_ms = (loop.time() - started) * 1000
        self.iteration += 1
        self.context.update(outcome.context_delta)
        if outcome.text is not None:
            self.last_result = outcome.text
        await self._persist(
            "tick",
            text=outcome.text,
            status=outcome.status,
            data=outcome.data,
            notes=outcome.notes,
            error=outcome.error,
            latency_ms=round(latency_ms, 3),
        )
        # Next due one heartbeat after this one was due; after a long stall, do not burst.
        following = self._due + self.heartbeat
        self._due = following if not woken and following > started else started + self.heartbeat
        limit = self.agent.max_consecutive_errors
        if limit is not None and self.consecutive_errors >= limit:
            self.status = "stopping"
            await self._stop("error", text=f"stopped after {limit} consecutive errors", status="error")
            return True
        if outcome.stop:
            self.status = "stopping"
            await self._stop("stopped", text="stopped by the agent")
            return True
        return False


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
