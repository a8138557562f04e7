"""The batching writer: one commit of steps and one of session snapshots per flush.

Why batch: a LanceDB commit costs about the same (~2 ms) for 1 row or 1,000, and every
small commit adds a fragment that slows later reads (LANCEDB.md). So a worker buffers the
steps of all its sessions and commits them together every ``flush_interval`` seconds, or at
once when ``flush_max_rows`` are waiting (``write_buffer.py``: how rows are held).

Order inside a flush: steps first (they carry the full state and are the source of truth),
then the ``sessions`` rows, coalesced to the newest snapshot per session. A crash between the
two commits leaves session rows older than the steps, which the resuming host repairs.

The ``sessions`` commit (a conditional merge, 20 ms at 1,000 sessions, 50 ms at p99) runs in
the background while the next flush's steps commit: a control action's step, flushed at once so
that its client is answered, never waits behind the previous flush's snapshots. One ``sessions``
commit at a time (concurrent merges of one table duplicate rows, LANCEDB.md); snapshots
submitted meanwhile wait for the next one, coalesced.

A flush forced by a step waiter (every control action) commits the steps only: snapshots go
once per ``flush_interval``, or at once for an urgent ``wait_durable``. A merge per action cost
the workers more CPU than the actions themselves (32 merges/s instead of 8, back to back).

Durability is observable: ``submit()`` returns a flush generation and ``wait_durable(gen)``
returns once that generation is committed (steps and snapshots), ``wait_steps_durable(gen)``
once its steps are, so an action is acknowledged only after the state change it caused is on
disk. A failed commit is retried with backoff and nothing in the buffer is dropped; producers
wait (``submit`` is async) while the buffer is over its high watermark, so memory stays
bounded when storage is slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentd.store.commits import append_versioned, landed, to_arrow, upsert_sessions
from agentd.store.db import Store
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord
from agentd.store.write_buffer import Columns, FlushStats, Row

__all__ = ["BatchingWriter", "Committed", "FlushStats", "Row", "WriterClosed"]

_SESSION_ID = SessionRecord.SCHEMA.names.index("session_id")
_STEP_SESSION_ID = StepRecord.SCHEMA.names.index("session_id")


log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Committed:
    """One committed batch of steps: its sessions, the ``steps`` version it created (None when
    that is unsure: ``append_versioned``, or an error although it landed), and the rows exactly as committed."""

    sessions: list[str]
    version: int | None
    rows: Any  # pa.Table


class WriterClosed(Exception):
    """The writer was closed; nothing more can be submitted."""


# Called before each commit; raises to refuse it (ownership fencing plugs in here).
Fence = Callable[[], Awaitable[None]]


class BatchingWriter:
    """Buffers steps and snapshots and commits them in batches from one background task.

    Start with ``start()`` (or ``async with``); ``close()`` flushes what is buffered and stops.
    Not thread-safe: use from the event loop that started it.
    """

    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 0.25,
        flush_max_rows: int = 5000,
        max_buffered_rows: int = 200_000,
        fence: Fence | None = None,
        on_commit: Callable[[Committed], None] | None = None,
        on_flush: Callable[[float, int], None] | None = None,
        epoch: int = 0,
    ) -> None:
        self.store = store
        # Told of each committed batch of steps: the worker forwards it to the gateway as a
        # read hint (agentd.protocol.CommitHint), so live events skip its poll and its read.
        self.on_commit = on_commit
        self.on_flush = on_flush  # (seconds, rows) of each commit: the worker's metrics
        self.epoch = epoch  # stamped on session rows submitted without one (see _EPOCH_FENCE)
        self.flush_interval = flush_interval
        self.flush_max_rows = flush_max_rows
        self.max_buffered_rows = max_buffered_rows
        self.fence = fence
        self.stats = FlushStats()
        self._steps = Columns(len(StepRecord.SCHEMA))
        self._snapshots = Columns(len(SessionRecord.SCHEMA), keyed=True)
        self._generation = 1  # the generation new submissions join
        self._durable = 0  # the newest generation fully committed
        self._steps_durable = 0  # the newest generation whose steps are committed (sessions may follow)
        self._wake = asyncio.Event()
        self._durable_changed = asyncio.Condition()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._sessions_task: asyncio.Task[None] | None = None  # the sessions commit in flight
        self._sessions_target = 0  # the generation durable once the sessions commit in flight lands
        self._sessions_backoff = 0.0  # after a failed sessions commit: seconds before the next
        self._sessions_retry_at = 0.0  # loop time before which no sessions commit starts
        self._durable_wanted = 0  # the newest generation someone waits to be fully durable
        self._sessions_started = float("-inf")  # loop time the last sessions commit started
        self._closing = False
        self._error: BaseException | None = None

    async def __aenter__(self) -> BatchingWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="batching-writer")

    @property
    def current_generation(self) -> int:
        """The generation that new submissions join; waiting on it covers all earlier ones."""
        return self._generation

    @property
    def _snapshots_wanted(self) -> bool:
        """Someone waits for the buffered snapshots: an urgent ``wait_durable``, or the close."""
        return self._closing or self._durable_wanted > self._durable

    @property
    def buffered(self) -> int:
        return len(self._steps) + len(self._snapshots)

    async def submit(self, steps: list[StepRecord] | None = None, snapshot: SessionRecord | None = None) -> int:
        """Buffer steps and/or a session snapshot; return the generation they commit with.

        Waits while the buffer is above its high watermark (backpressure).
        """
        if snapshot is not None and snapshot.epoch is None and self.epoch:
            snapshot = snapshot.model_copy(update={"epoch": self.epoch})  # fenced like the runners' rows
        return await self.submit_values(
            [step.to_values() for step in steps] if steps else None,
            snapshot.to_values() if snapshot is not None else None,
        )

    async def submit_values(self, steps: list[Row] | None = None, snapshot: Row | None = None) -> int:
        """``submit`` for rows already encoded: tuples in schema order (``Record.to_values``).

        The session runtime's path: it builds the tuples itself, once per step.
        """
        if self._closing:
            raise WriterClosed("the writer is closed")
        if self._error is not None:
            raise WriterClosed(f"the writer failed: {self._error}")
        if not self._room.is_set():
            await self._room.wait()
        return self._buffer(steps, snapshot)

    def _buffer(self, steps: list[Row] | None, snapshot: Row | None) -> int:
        if steps:
            for step in steps:
                self._steps.append(step)
        if snapshot is not None:
            self._snapshots.upsert(snapshot[_SESSION_ID], snapshot)
        buffered = len(self._steps) + len(self._snapshots)
        if buffered >= self.flush_max_rows:
            self._wake.set()
        if buffered >= self.max_buffered_rows:
            self._room.clear()
        return self._generation

    async def wait_durable(self, generation: int, timeout: float | None = None, *, urgent: bool = True) -> None:
        """Return once everything submitted in ``generation`` is committed.

        ``urgent=False`` waits for the flushes that come anyway (within ``flush_interval``)
        instead of forcing one: for work that follows a client's answer, not in front of it.
        """
        if urgent:
            self._durable_wanted = max(self._durable_wanted, generation)
        await self._wait(lambda: self._durable, generation, timeout, urgent)

    async def wait_steps_durable(self, generation: int, timeout: float | None = None) -> None:
        """Return once the steps submitted in ``generation`` are committed.

        The step carries the full state (DESIGN.md: the source of truth), so an effect recorded
        by a step is durable here, one commit before the ``sessions`` rows follow.
        """
        await self._wait(lambda: self._steps_durable, generation, timeout)

    async def _wait(self, durable: Callable[[], int], gen: int, timeout: float | None, wake: bool = True) -> None:
        if wake:
            self._wake.set()  # someone is waiting: do not sit out the interval

        async def until() -> None:
            async with self._durable_changed:
                await self._durable_changed.wait_for(lambda: durable() >= gen or self._error is not None)
            if durable() < gen and self._error is not None:
                raise WriterClosed(f"the writer failed: {self._error}")

        await asyncio.wait_for(until(), timeout)

    async def failed(self) -> BaseException:
        """Wait until the writer stops for good (a fatal error such as being fenced out); return why."""
        async with self._durable_changed:
            await self._durable_changed.wait_for(lambda: self._error is not None)
        assert self._error is not None
        return self._error

    async def flush(self) -> None:
        """Commit everything submitted so far and wait for it."""
        await self.wait_durable(self._generation)

    async def close(self) -> None:
        """Flush what is buffered, then stop. Idempotent."""
        if self._task is None:
            return
        if not self._closing:
            self._closing = True
            self._wake.set()
        task = self._task
        await asyncio.shield(task)

    async def _run(self) -> None:
        backoff = 0.05
        loop = asyncio.get_running_loop()
        try:
            while self._error is None:
                if self._closing:
                    if not self.buffered and self._sessions_task is None:
                        return
                    if self._sessions_task is not None:  # let it land before the last snapshots go
                        await asyncio.shield(self._sessions_task)
                        continue
                    if not len(self._steps) and self._sessions_retry_at > loop.time():
                        await asyncio.sleep(self._sessions_retry_at - loop.time())
                else:
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                    except TimeoutError:
                        pass
                self._wake.clear()
                generation = self._generation
                self._generation += 1
                try:
                    await self._flush(generation)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stats.failures += 1
                    if getattr(exc, "fatal", False):
                        await self._fail(exc)
                        return
                    log.warning("commit failed (%s); retrying in %.2fs with %d rows kept", exc, backoff, self.buffered)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    self._wake.set()
                    continue
                backoff = 0.05
                if self.buffered < self.max_buffered_rows // 2:
                    self._room.set()
        except asyncio.CancelledError:
            if self._sessions_task is not None:
                self._sessions_task.cancel()
            raise

    async def _flush(self, generation: int) -> None:
        """Commit the steps of ``generation`` and earlier, then start their sessions commit.

        Both buffers are taken at the same moment, before anything is awaited: a snapshot
        submitted during the steps commit has its step in the next batch, and must not reach
        the table before it. The snapshots wait in the buffer while a sessions commit is in
        flight (or backing off) or until they are due (module docstring): they go with a later
        generation, whose durability then covers this one.
        """
        now = asyncio.get_running_loop().time()
        take_snapshots = (self._sessions_task is None and now >= self._sessions_retry_at) and (
            self._snapshots_wanted
            or now >= self._sessions_started + self.flush_interval
            or len(self._snapshots) >= self.flush_max_rows
        )
        steps = snapshots = None
        if len(self._steps):
            steps, self._steps = self._steps, Columns(len(StepRecord.SCHEMA))
        if len(self._snapshots) and take_snapshots:
            snapshots, self._snapshots = self._snapshots, Columns(len(SessionRecord.SCHEMA), keyed=True)
        try:
            if (steps is not None or snapshots is not None) and self.fence is not None:
                await self.fence()
            if steps is not None:
                await self._commit_steps(steps)
        except BaseException:
            if steps is not None and len(steps):  # put the batch back in front of what came meanwhile
                for row in self._steps.rows():
                    steps.append(row)
                self._steps = steps
            if snapshots is not None:
                self._put_back(snapshots)
            raise
        await self._mark_steps_durable(generation)
        if snapshots is not None:
            self._sessions_started = now
            self._sessions_target = generation
            self._sessions_task = asyncio.create_task(self._commit_sessions(snapshots), name="sessions-commit")
        elif not len(self._snapshots):  # nothing of this generation is left outside a commit
            if self._sessions_task is not None:
                self._sessions_target = generation
            else:
                await self._mark_durable(generation)

    def _put_back(self, snapshots: Columns) -> None:
        """Snapshots that did not commit go back into the buffer, behind newer ones for the same session."""
        for row in snapshots.rows():
            self._snapshots.insert_older(row[_SESSION_ID], row)

    async def _commit_steps(self, steps: Columns) -> None:
        started = time.perf_counter()
        step_count = len(steps)
        data = to_arrow(StepRecord, steps.columns)
        version: int | None = None
        try:
            version = await append_versioned(self.store.steps, data)
        except Exception as exc:
            # The commit may have landed although we saw an error (object storage, a lost
            # reply): appending again would duplicate every seq of the batch.
            if not await landed(self.store.steps, data):
                raise
            log.warning("steps commit reported %r but landed; not appending again", exc)
        # Once the steps are in, a retry must not append them again.
        committed = Committed(list(set(steps.columns[_STEP_SESSION_ID])), version, data)
        steps.clear()
        self._recorded(started, step_count, 0, flush=True)
        if self.on_commit is not None:
            try:
                self.on_commit(committed)
            except Exception:  # a hint only: never fail a commit that landed
                log.exception("commit hint failed")

    async def _commit_sessions(self, snapshots: Columns) -> None:
        """The background sessions commit; a failure puts its rows back (newer ones win)."""
        started = time.perf_counter()
        count = len(snapshots)
        try:
            await upsert_sessions(self.store.sessions, to_arrow(SessionRecord, snapshots.columns))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._sessions_task = None
            self.stats.failures += 1
            self._put_back(snapshots)
            if getattr(exc, "fatal", False):
                await self._fail(exc)
                return
            self._sessions_backoff = min(max(self._sessions_backoff * 2, 0.05), 5.0)
            log.warning(
                "sessions commit failed (%s); retrying in %.2fs with %d rows kept", exc, self._sessions_backoff, count
            )
            loop = asyncio.get_running_loop()
            self._sessions_retry_at = loop.time() + self._sessions_backoff
            loop.call_later(self._sessions_backoff, self._wake.set)
            return
        self._sessions_task = None
        self._sessions_backoff = 0.0
        self._recorded(started, 0, count, flush=False)
        await self._mark_durable(self._sessions_target)
        if len(self._snapshots) and self._snapshots_wanted:
            self._wake.set()  # someone waits for the snapshots that came meanwhile

    def _recorded(self, started: float, steps: int, snapshots: int, *, flush: bool) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self.stats.record(elapsed, steps, snapshots, flush=flush)
        if self.on_flush is not None:
            self.on_flush(elapsed / 1000, steps + snapshots)
        log.debug("commit: %d steps, %d snapshots in %.1f ms", steps, snapshots, elapsed)

    async def _fail(self, exc: BaseException) -> None:
        """Stop for good (fenced out): every waiter hears why."""
        self._error = exc
        self._wake.set()
        async with self._durable_changed:
            self._durable_changed.notify_all()
        log.error("writer stopped: %s", exc)

    async def _mark_durable(self, generation: int) -> None:
        if generation <= self._durable:
            return
        async with self._durable_changed:
            self._durable = generation
            self._steps_durable = max(self._steps_durable, generation)
            self._durable_changed.notify_all()

    async def _mark_steps_durable(self, generation: int) -> None:
        if generation <= self._steps_durable:
            return
        async with self._durable_changed:
            self._steps_durable = generation
            self._durable_changed.notify_all()

    def counters(self) -> dict[str, Any]:
        s = self.stats
        return {
            "flushes": s.flushes,
            "steps": s.steps,
            "snapshots": s.snapshots,
            "failures": s.failures,
            "buffered": self.buffered,
            "last_commit_ms": round(s.last_commit_ms, 2),
            "max_commit_ms": round(s.max_commit_ms, 2),
        }
