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
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any

from agentd.agents.base import Agent, CreateError, GuidanceError, StepOutcome, Tick
from agentd.logsetup import session_id_var
from agentd.store.records import encode_json
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord, StepStatus
from agentd.store.writer import BatchingWriter, Row
from agentd.timeutil import utcnow

__all__ = ["ActionRejected", "Command", "SessionGone", "SessionRunner"]

log = logging.getLogger(__name__)

CommandResult = tuple[dict[str, Any], int]

# ``_persist`` builds the writer's rows as tuples in schema order (no pydantic model per step: this
# runs ~10k times a second per worker). Fail at import, not at the first flush, if a schema moves.
_STEP_COLUMNS = (
    *("session_id", "agent_id", "shard", "seq", "ts", "status", "kind", "text", "data", "state", "guidance"),
    *("notes", "latency_ms", "error", "epoch", "action_id"),
)
_SESSION_COLUMNS = (
    *("session_id", "agent_id", "agent_type", "shard", "status", "desired_status", "config", "context"),
    *("iteration", "last_seq", "last_result", "conversation_id", "created_at", "updated_at", "version", "epoch"),
)
if tuple(StepRecord.SCHEMA.names) != _STEP_COLUMNS or tuple(SessionRecord.SCHEMA.names) != _SESSION_COLUMNS:
    raise RuntimeError("steps/sessions schema changed: update SessionRunner._persist to match")

# A resumed session's first tick is spread over this much of its heartbeat (see ``run``).
RESUME_SPREAD = 5.0


class ActionRejected(Exception):
    """The command cannot be applied; the message is recorded on the action for the user.

    ``code`` (an ``agentd.protocol.ErrorCode``) is recorded beside it: clients tell "no such
    session" from "refused" by the code, never by parsing the message.
    """

    def __init__(self, message: str, *, code: str = "rejected") -> None:
        super().__init__(message)
        self.code = code


class SessionGone(ActionRejected):
    """The session finished (stopped, or shut down with its host) before applying the command.

    The host tells the two apart: at a shutdown it hands the action back to the queue, so that
    the next owner applies it, instead of failing it for good.
    """


@dataclass(slots=True)
class Command:
    kind: str  # create | pause | resume | interrupt | destroy | shutdown
    payload: dict[str, Any] = field(default_factory=dict)
    future: asyncio.Future[CommandResult] | None = None
    # The queued action this command applies; recorded on the step it causes.
    action_id: str | None = None


class SessionRunner:
    """Runs one session. Created by the host, which also starts ``run()`` as a task at once.

    Slots, a list inbox and no per-step model keep an idle session at a few KB and a tick at a
    few tens of microseconds (bench/runtime_bench.py).
    """

    __slots__ = (
        "_creating",
        "_due",
        "_final",
        "_finished",
        "_fixed",
        "_inbox",
        "_record",
        "_tick_now",
        "_waiter",
        "agent",
        "consecutive_errors",
        "context",
        "epoch",
        "heartbeat",
        "iteration",
        "last_result",
        "last_seq",
        "on_lateness",
        "on_tick",
        "session_id",
        "status",
        "tick_timeout",
        "writer",
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
        epoch: int = 0,
        on_lateness: Callable[[float], None] | None = None,
        on_tick: Callable[[float, bool], None] | None = None,
    ) -> None:
        self.session_id = record.session_id
        # The row the host passed in, until ``_fix()`` keeps just its constant columns (see there).
        self._record: SessionRecord | None = record
        self._fixed: tuple[Any, ...] = ()
        self.agent = agent
        self.writer = writer
        self.heartbeat = float(record.config.get("interval") or heartbeat)
        self.tick_timeout = tick_timeout
        self.epoch = epoch
        self.on_lateness = on_lateness
        self.on_tick = on_tick  # (seconds the tick took, whether it failed): the worker's metrics
        self.status: str = record.status
        self.context: dict[str, Any] = dict(record.context)
        self.iteration = record.iteration
        self.last_seq = record.last_seq
        self.last_result = record.last_result
        self.consecutive_errors = 0
        self._creating = creating
        # Commands waiting to be applied, in arrival order (almost always empty: a list is smallest).
        self._inbox: list[Command] = []
        self._waiter: asyncio.Future[bool | None] | None = None
        self._tick_now = False
        self._due = 0.0
        self._finished = False
        self._final: list[Command] = []
        if not creating:
            self._fix()

    def _fix(self) -> None:
        """Keep only the columns of the session row that never change, config JSON-encoded.

        Holding them in one tuple of plain values instead of the ``SessionRecord`` (a model with
        its dict, field set, config and context dicts) saves ~2 KB per session. A session being
        created keeps the record until its first step: the host sets ``conversation_id`` on it
        right after constructing the runner.
        """
        record = self._record
        if record is None:
            return
        self._fixed = (
            record.agent_id,
            record.agent_type,
            record.shard,
            record.desired_status,
            encode_json(record.config),
            record.conversation_id,
            record.created_at,
            record.version,
        )
        self._record = None

    @property
    def record(self) -> SessionRecord:
        """The session row: as the host passed it in before the first step, else its current state."""
        if self._record is not None:
            return self._record
        row = dict(zip(_SESSION_COLUMNS, self._snapshot_row(encode_json(self.context), 0), strict=True))
        row["updated_at"] = utcnow()
        return SessionRecord.from_row(row)

    # -- called by the host ------------------------------------------------------------------

    def submit(self, command: Command) -> asyncio.Future[CommandResult]:
        loop = asyncio.get_running_loop()
        command.future = loop.create_future()
        if self._finished:
            command.future.set_exception(SessionGone(f"session {self.session_id} is {self.status}"))
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
            # A new session ticks at once; a resumed one within its heartbeat (at most RESUME_SPREAD),
            # at a random phase: ticks are due one heartbeat apart from then on, so this phase is
            # kept, and thousands of sessions resuming together tick evenly spread over the
            # heartbeat instead of in a burst that would make every one of them late.
            self._due = loop.time() + (0.0 if self._creating else random.random() * min(self.heartbeat, RESUME_SPREAD))
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

    def _reject_pending(self) -> None:
        while self._inbox:
            command = self._inbox.pop(0)
            if command.future is not None and not command.future.done():
                command.future.set_exception(SessionGone(f"session {self.session_id} is {self.status}"))

    # -- persistence -------------------------------------------------------------------------

    def _snapshot_row(self, context_json: str, updated_at: int) -> Row:
        """The ``sessions`` row (schema order, JSON encoded); ``updated_at`` in epoch microseconds."""
        if self._record is not None:
            self._fix()
        agent_id, agent_type, shard, desired_status, config_json, conversation_id, created_at, version = self._fixed
        return (
            self.session_id,
            agent_id,
            agent_type,
            shard,
            self.status,
            desired_status,
            config_json,
            context_json,
            self.iteration,
            self.last_seq,
            self.last_result,
            conversation_id,
            created_at,
            updated_at,
            version,
            self.epoch,
        )

    def _encode_context(self) -> str:
        context = self.context
        context["paused"] = self.status == "paused"
        return encode_json(context)

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
        action_id: str | None = None,
    ) -> int:
        """Append a step with the current state and submit the snapshot; returns the generation.

        The rows are what ``StepRecord``/``SessionRecord.to_values()`` would give, built directly:
        the context is encoded once and shared by the step's ``state`` and the session row.
        """
        self.last_seq += 1
        context_json = self._encode_context()
        now = time.time_ns() // 1000
        snapshot = self._snapshot_row(context_json, now)
        # == encode_json({"status", "iteration", "context", "last_result"}), without re-encoding the context.
        state = (
            f'{{"status":{encode_json(self.status)},"iteration":{self.iteration},'
            f'"context":{context_json},"last_result":{encode_json(self.last_result)}}}'
        )
        step = (
            self.session_id,
            snapshot[1],  # agent_id
            snapshot[3],  # shard
            self.last_seq,
            now,
            status,
            kind,
            text,
            None if data is None else encode_json(data),
            state,
            None if guidance is None else encode_json(guidance),
            notes,
            latency_ms,
            error,
            self.epoch,
            action_id,
        )
        return await self.writer.submit_values([step], snapshot)

    def _result(self, **extra: Any) -> dict[str, Any]:
        # ``seq``: the step at which the state now reflects the action (a receipt).
        return {"session_id": self.session_id, "status": self.status, "seq": self.last_seq, **extra}

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

        Text the agent's parser cannot read may go to the LLM (``Agent.understand_guidance``):
        bounded by the tick timeout, so a slow model rejects this guidance instead of holding
        the session's inbox; other sessions never wait on it (each is its own task).
        """
        raw = payload.get("guidance")
        empty = isinstance(raw, list | str) and not (raw.strip() if isinstance(raw, str) else raw)
        if not isinstance(raw, dict | list | str) or empty:
            spec = self.agent.guidance_spec
            teach = spec.teach(self.agent.type_name) if spec is not None else ""
            raise ActionRejected(
                f"session {self.session_id}: guidance must be a JSON object, a non-empty JSON array of operations, "
                f"or text{teach}"
            )
        try:
            async with asyncio.timeout(self.tick_timeout):
                normalized, interpreted_by = await self.agent.understand_guidance(raw)
            effect = self.agent.apply_guidance(normalized, dict(self.context))
        except GuidanceError as exc:
            raise ActionRejected(f"session {self.session_id}: {exc}") from exc
        except TimeoutError:
            raise ActionRejected(
                f"session {self.session_id}: the guidance was not understood within {self.tick_timeout:g}s "
                "([runtime] tick_timeout: the LLM did not answer in time); nothing changed"
            ) from None
        except Exception as exc:  # a bug in the agent type must not take the session down
            log.exception("guidance for session %s failed", self.session_id)
            raise ActionRejected(f"guidance failed: {exc}") from exc
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
                        outcome = await _Resume(work, pending)
            else:
                async with asyncio.timeout_at(started + self.tick_timeout):
                    outcome = await work
            self.consecutive_errors = 0
        except TimeoutError:
            outcome = StepOutcome(status="error", error=f"timeout: tick took longer than {self.tick_timeout:g}s")
        except Exception as exc:
            outcome = StepOutcome(status="error", error=f"{type(exc).__name__}: {exc}")
        if (problem := _malformed(outcome)) is not None:  # a misbehaving plug-in: never store what it returned
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
        if outcome is not None and _malformed(outcome) is None:
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


_STEP_STATUSES = frozenset(("ok", "error", "info"))
_OPTIONAL_TEXT = (str, type(None))


def _malformed(outcome: object) -> str | None:
    """Why ``outcome`` cannot be stored, or None. A few type checks: ``model_construct`` skips validation."""
    if not isinstance(outcome, StepOutcome):
        return f"do_tick returned {type(outcome).__name__}, not a StepOutcome"
    if outcome.status not in _STEP_STATUSES:
        return f"do_tick returned status {outcome.status!r} (ok, error or info)"
    if not (
        isinstance(outcome.text, _OPTIONAL_TEXT)
        and isinstance(outcome.notes, _OPTIONAL_TEXT)
        and isinstance(outcome.error, _OPTIONAL_TEXT)
        and isinstance(outcome.data, dict | None)
        and isinstance(outcome.context_delta, dict)
    ):
        return "do_tick returned a StepOutcome with fields of the wrong type"
    return None


class _Resume:
    """Awaits the rest of a coroutine whose first step already ran and yielded ``pending``.

    What ``await coro`` would have done from there on: the enclosing task waits on what the
    coroutine yields, and sends, throws (cancellation, timeout) and closes go through to it.
    """

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        self.pending = None
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration as finished:
                    return finished.value
                continue
            try:
                pending = coro.send(value)
            except StopIteration as finished:
                return finished.value


def _timer_fired(waiter: asyncio.Future[bool | None]) -> None:
    if not waiter.done():
        waiter.set_result(True)
