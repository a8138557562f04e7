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

How a change becomes rows is ``agentd.runtime.session_state`` (the base class); the command
types are ``agentd.runtime.commands``; the checks on what a plug-in's tick returned are
``agentd.runtime.agent_calls``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from types import CoroutineType
from typing import Any

from agentd.agents.base import Agent, CreateError, StepOutcome, Tick
from agentd.logsetup import session_id_var
from agentd.runtime.agent_calls import Resume, malformed, understand
from agentd.runtime.commands import ActionRejected, Command, CommandResult, SessionGone
from agentd.runtime.session_state import SessionState
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepStatus
from agentd.store.writer import BatchingWriter
from agentd.timeutil import utcnow

__all__ = ["SessionRunner"]

log = logging.getLogger(__name__)

# A resumed session's first tick is spread over this much of its heartbeat at most (see ``run``).
RESUME_SPREAD = 5.0


class SessionRunner(SessionState):
    """Runs one session. Created by the host, which also starts ``run()`` as a task at once.

    Slots, a list inbox and no per-step model keep an idle session at a few KB and a tick at a
    few tens of microseconds (bench/runtime_bench.py).
    """

    __slots__ = (
        "_creating",
        "_due",
        "_final",
        "_finished",
        "_inbox",
        "_tick_now",
        "_waiter",
        "agent",
        "consecutive_errors",
        "heartbeat",
        "on_lateness",
        "on_tick",
        "tick_timeout",
    )

    def __init__(
        self,
        record: SessionRecord,
        agent: Agent,
        writer: BatchingWriter,
        *,
        heartbeat: float,
        tick_timeout: float,
        creating: bool = False,
        resume_within: float = RESUME_SPREAD,
        epoch: int = 0,
        on_lateness: Callable[[float], None] | None = None,
        on_tick: Callable[[float, bool], None] | None = None,
    ) -> None:
        # A session being created keeps its record until its first step (see ``SessionState._fix``).
        super().__init__(record, writer, epoch=epoch, fix=not creating)
        self.agent = agent
        self.heartbeat = float(record.config.get("interval") or heartbeat)
        self.tick_timeout = tick_timeout
        self.on_lateness = on_lateness
        self.on_tick = on_tick  # (seconds the tick took, whether it failed): the worker's metrics
        self.consecutive_errors = 0
        self._creating = creating
        # Commands waiting to be applied, in arrival order (almost always empty: a list is smallest).
        self._inbox: list[Command] = []
        self._waiter: asyncio.Future[bool | None] | None = None
        self._tick_now = False
        # Until ``run`` starts: the window of a resumed session's first tick (no slot of its own).
        self._due = min(self.heartbeat, RESUME_SPREAD, resume_within)
        self._finished = False
        self._final: list[Command] = []

    # -- called by the host ------------------------------------------------------------------

    def submit(self, command: Command) -> asyncio.Future[CommandResult]:
        loop = asyncio.get_running_loop()
        command.future = loop.create_future()
        if self._finished:
            self._gone(command.future)
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
            # A new session ticks at once; a resumed one within the window its host gave (at most
            # its heartbeat and RESUME_SPREAD), at a random phase: ticks are due one heartbeat
            # apart from then on, so this phase is kept, and thousands of sessions resuming
            # together tick evenly spread instead of in a burst that would make each one late.
            self._due = loop.time() + (0.0 if self._creating else random.random() * self._due)
            due = False  # the timer for self._due fired (see _sleep_until)
            while True:
                while self._inbox:
                    command = self._inbox.pop(0)
                    if await self._apply(command):
                        return
                if self.status == "running" and (self._tick_now or due or loop.time() >= self._due):
                    due = False
                    if await self._tick(loop):
                        return
                    continue
                due = await self._sleep_until(loop, self._due if self.status == "running" else None)
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

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, due: float | None) -> bool:
        """Wait for a command, a wake or ``due``; True when it returns because ``due`` was reached.

        The timer's firing, not ``loop.time() >= due``, says the tick is due: uvloop's timers
        have millisecond granularity and fire up to 1 ms before ``loop.time()`` reaches ``due``,
        and re-checking the clock made every session spin through ~20 zero-delay re-sleeps before
        each tick (most of a core at 10k sessions).
        """
        # A wake while paused (a new message for a persona) must not make this return at once:
        # the caller would loop without awaiting and starve the whole event loop.
        if self._inbox or (self._tick_now and self.status == "running"):
            return False
        self._waiter = waiter = loop.create_future()
        handle = None if due is None else loop.call_at(due, _timer_fired, waiter)
        try:
            return await waiter is True
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _gone(self, future: asyncio.Future[CommandResult]) -> None:
        """Fail ``future`` with SessionGone, marked as seen: a host's shutdown command to a session
        already stopping is never awaited, and asyncio logged an ERROR for it at every such stop.
        Awaiting it still raises."""
        future.set_exception(SessionGone(f"session {self.session_id} is {self.status}"))
        future.exception()

    def _reject_pending(self) -> None:
        while self._inbox:
            command = self._inbox.pop(0)
            if command.future is not None and not command.future.done():
                self._gone(command.future)

    # -- persistence -------------------------------------------------------------------------

    # -- commands ----------------------------------------------------------------------------

    async def _create(self) -> bool:
        command = self._inbox.pop(0) if self._inbox and self._inbox[0].kind == "create" else None
        try:
            await self.agent.validate_create()
        except Exception as exc:
            # Nothing was stored: the id stays free, and the same create can be sent again
            # (a storage error is worth retrying; an invalid create is not).
            if isinstance(exc, CreateError):
                message = str(exc)
            else:
                log.warning("create of session %s failed: %r", self.session_id, exc)
                message = f"could not create session {self.session_id}: {type(exc).__name__}: {exc}; nothing was stored"
            self._finished = True
            if command and command.future and not command.future.done():
                command.future.set_exception(ActionRejected(message))
            self.status = "error"
            self._reject_unknown()
            return False
        self.status = "running"
        generation = await self._persist(
            "lifecycle", text="created", action_id=command.action_id if command is not None else None
        )
        if command and command.future and not command.future.done():
            command.future.set_result((self._result(agent_id=self._fixed[0]), generation))
        return True

    def _reject_unknown(self) -> None:
        while self._inbox:
            command = self._inbox.pop(0)
            if command.future is not None and not command.future.done():
                command.future.set_exception(ActionRejected(f"unknown session {self.session_id}", code="not_found"))

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
        action_id = command.action_id
        if kind in ("pause", "destroy"):
            await self._reconcile()  # no tick may come for a long time: record what is pending now
        if kind in ("pause", "resume"):
            before, after = ("running", "paused") if kind == "pause" else ("paused", "running")
            if self.status == before:
                self.status = after
                if after == "running":
                    self._due = asyncio.get_running_loop().time()
                text = "paused" if after == "paused" else "resumed"
            else:
                # Nothing changes, but the step still records the action: a replay after a crash
                # must find it applied, or an old pause replayed after a newer resume would
                # pause the session again (found by the chaos suite).
                text = f"{kind}: already {self.status}"
            generation = await self._persist("lifecycle", text=text, action_id=action_id)
            return self._result(), generation  # after the step: the receipt names its seq
        if kind == "interrupt":
            return await self._interrupt(command.payload, action_id)
        if kind in ("destroy", "shutdown"):
            self._final.append(command)
            if kind == "destroy":
                reason = command.payload.get("reason")
                self.status = "stopping"
                await self._stop("stopped", text=f"destroyed: {reason}" if reason else "destroyed", action_id=action_id)
            else:
                await self._shutdown()
            return None
        raise ActionRejected(f"unsupported action {kind!r} for session {self.session_id}")

    async def _interrupt(self, payload: dict[str, Any], action_id: str | None = None) -> CommandResult:
        """Understand, apply and record guidance; any rejection leaves the session as it was.

        Understanding it (``agent_calls.understand``) may ask the LLM, bounded by the tick
        timeout; other sessions never wait on it (each is its own task).
        """
        raw = payload.get("guidance")
        normalized, interpreted_by, effect = await understand(
            self.agent, self.session_id, raw, dict(self.context), timeout=self.tick_timeout
        )
        self.context.update(effect.delta)
        operations = normalized.model_dump(mode="json", exclude_defaults=True)
        guidance = {"raw": raw, "normalized": operations}
        generation = await self._persist(
            "guidance",
            text="guidance applied",
            data={"interpreted_by": interpreted_by},
            guidance=guidance,
            action_id=action_id,
        )
        if (effect.wake or payload.get("now")) and self.status == "running":
            self._tick_now = True
        result = self._result(applied=effect.delta, operations=operations, context=dict(self.context))
        return result, generation

    async def _stop(
        self, final_status: str, *, text: str, status: StepStatus = "info", action_id: str | None = None
    ) -> None:
        self.status = final_status
        generation = await self._persist("lifecycle", text=text, status=status, action_id=action_id)
        self._resolve_final(generation)

    async def _shutdown(self) -> None:
        """Host going down: keep the status so the next start resumes; persist the snapshot."""
        generation = await self.writer.submit_values(
            None, self._snapshot_row(self._encode_context(), time.time_ns() // 1000)
        )
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
            self.on_lateness(max(0.0, started - self._due))  # the timer may fire < 1 ms early
        tick = Tick(
            seq=self.last_seq + 1, iteration=self.iteration, now=utcnow(), context=dict(self.context), woken=woken
        )
        try:
            work = self.agent.do_tick(tick)
            if type(work) is CoroutineType:
                # Run the first step here: a tick that finishes without suspending (the offline
                # LLM, any CPU-only agent) then needs no timeout, which no timer could enforce
                # anyway, and we skip arming and disarming one 10k times a second.
                try:
                    pending = work.send(None)
                except StopIteration as finished:
                    outcome = finished.value
                else:
                    async with asyncio.timeout_at(started + self.tick_timeout):
                        outcome = await Resume(work, pending)
            else:
                async with asyncio.timeout_at(started + self.tick_timeout):
                    outcome = await work
            self.consecutive_errors = 0
        except TimeoutError:
            outcome = StepOutcome(status="error", error=f"timeout: tick took longer than {self.tick_timeout:g}s")
        except Exception as exc:
            outcome = StepOutcome(status="error", error=f"{type(exc).__name__}: {exc}")
        if (problem := malformed(outcome)) is not None:  # a misbehaving plug-in: never store what it returned
            outcome = StepOutcome(status="error", error=problem)
        if self.on_tick is not None:
            self.on_tick(loop.time() - started, outcome.status == "error")
        if outcome.quiet and self._nothing_to_record(outcome):
            # Said nothing and changed nothing (an idle persona): no step, so storage pays only
            # for what happened. The schedule moves on as after any tick.
            self._due = self._next_due(woken, started)
            return False
        if outcome.status == "error":
            self.consecutive_errors += 1
        await self._record_outcome(outcome, latency_ms=round((loop.time() - started) * 1000, 3))
        self._due = self._next_due(woken, started)
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

    async def _record_outcome(self, outcome: StepOutcome, *, latency_ms: float | None) -> int:
        """Persist a tick's outcome as a step: the context delta, the text, the data."""
        self.iteration += 1
        self.context.update(outcome.context_delta)
        if outcome.text is not None:
            self.last_result = outcome.text
        return await self._persist(
            "tick",
            text=outcome.text,
            status=outcome.status,
            data=outcome.data,
            notes=outcome.notes,
            error=outcome.error,
            latency_ms=latency_ms,
        )

    async def _reconcile(self) -> None:
        """Record what an earlier tick did but never recorded, before the session stops ticking."""
        try:
            outcome = await self.agent.reconcile(dict(self.context))
        except Exception:
            log.exception("reconcile of session %s failed", self.session_id)
            return
        if outcome is not None and malformed(outcome) is None:
            await self._record_outcome(outcome, latency_ms=None)

    def _next_due(self, woken: bool, started: float) -> float:
        """Next due one heartbeat after this one was due; after a long stall, do not burst."""
        following = self._due + self.heartbeat
        return following if not woken and following > started else started + self.heartbeat

    def _nothing_to_record(self, outcome: StepOutcome) -> bool:
        if self.agent.record_quiet_ticks or outcome.status == "error" or outcome.stop or outcome.text is not None:
            return False
        context = self.context
        return all(key in context and context[key] == value for key, value in outcome.context_delta.items())


def _timer_fired(waiter: asyncio.Future[bool | None]) -> None:
    if not waiter.done():
        waiter.set_result(True)
