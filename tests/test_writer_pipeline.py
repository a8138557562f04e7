"""The writer's sessions commit runs behind the next steps commit, never in front of it.

A control action's step is flushed at once so that its client hears back; it must not wait for
the previous flush's ``sessions`` merge (20 ms, 50 ms at p99 with 1,000 sessions). The merge is
held open here by a gate around the real table's ``merge_insert``; everything else is the real
writer on a real database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import noted_session, run

from agentd.store import Store
from agentd.store.sessions import get_session
from agentd.store.steps import StepRecord, read_steps
from agentd.store.writer import BatchingWriter
from agentd.timeutil import utcnow


class GatedMerges:
    """The real sessions table whose merges wait for ``gate`` (and the first ``failures`` raise)."""

    def __init__(self, table: Any, failures: int = 0) -> None:
        self._table = table
        self.gate = asyncio.Event()
        self.failures = failures
        self.running = 0
        self.most_at_once = 0
        self.merges = 0

    def merge_insert(self, on: str) -> Any:
        return _GatedBuilder(self, self._table.merge_insert(on))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


class _GatedBuilder:
    def __init__(self, owner: GatedMerges, builder: Any) -> None:
        self._owner = owner
        self._builder = builder

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._builder, name)
        if name == "execute":
            return self._execute

        def chained(*args: Any, **kwargs: Any) -> Any:
            self._builder = method(*args, **kwargs)
            return self

        return chained

    async def _execute(self, data: Any) -> Any:
        owner = self._owner
        owner.running += 1
        owner.most_at_once = max(owner.most_at_once, owner.running)
        try:
            await owner.gate.wait()
            owner.merges += 1
            if owner.failures:
                owner.failures -= 1
                raise OSError("sessions merge failed")
            return await self._builder.execute(data)
        finally:
            owner.running -= 1


def _step(session_id: str, seq: int) -> StepRecord:
    return StepRecord(session_id=session_id, agent_id="a", shard=0, seq=seq, ts=utcnow(), text="x", state={"n": seq})


class GatedAdds:
    """The real steps table whose ``add`` number i waits for ``gates[i]`` (when there is one)."""

    def __init__(self, table: Any, gates: int) -> None:
        self._table = table
        self.gates = [asyncio.Event() for _ in range(gates)]
        self.entered = asyncio.Event()  # the first add is waiting at its gate
        self.calls = 0

    async def add(self, data: Any) -> Any:
        index, self.calls = self.calls, self.calls + 1
        self.entered.set()
        if index < len(self.gates):
            await self.gates[index].wait()
        return await self._table.add(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


async def _note(store: Store, session_id: str) -> str | None:
    record = await get_session(store.sessions, session_id)
    return None if record is None else str(record.context["note"])


def test_a_step_commits_while_the_previous_sessions_commit_is_in_flight(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        gated = store.sessions = GatedMerges(store.sessions)  # type: ignore[assignment]
        writer = BatchingWriter(store, flush_interval=30)  # only waiters flush
        async with writer:
            first = await writer.submit([_step("s1", 1)], noted_session("s1", "first"))
            await writer.wait_steps_durable(first, timeout=10)
            await asyncio.sleep(0.05)
            assert gated.running == 1, "the sessions commit of the first flush is in flight"
            second = await writer.submit([_step("s1", 2)], noted_session("s1", "second"))
            # The old writer committed steps and sessions in series: this timed out.
            await writer.wait_steps_durable(second, timeout=5)
            assert [s.seq for s in await read_steps(store.steps, "s1")] == [1, 2]
            with pytest.raises(TimeoutError):  # not durable before its snapshot is
                await writer.wait_durable(first, timeout=0.3)
            gated.gate.set()
            await writer.wait_durable(second, timeout=10)
            assert await _note(store, "s1") == "second"
            third = await writer.submit(None, noted_session("s1", "third"))
        assert writer.current_generation > third  # close() committed the last snapshot
        assert await _note(store, "s1") == "third"
        assert gated.most_at_once == 1, "one sessions merge at a time (concurrent merges duplicate rows)"

    run(scenario())


def test_a_failed_sessions_commit_keeps_its_rows_and_newer_ones_win(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        gated = store.sessions = GatedMerges(store.sessions, failures=1)  # type: ignore[assignment]
        async with BatchingWriter(store, flush_interval=30) as writer:
            first = await writer.submit([_step("s1", 1)], noted_session("s1", "s1 old"))
            await writer.submit(None, noted_session("s2", "s2 only"))
            await writer.wait_steps_durable(first, timeout=10)
            newer = await writer.submit([_step("s1", 2)], noted_session("s1", "s1 new"))
            await writer.wait_steps_durable(newer, timeout=10)
            gated.gate.set()  # the first merge fails now; its rows go back behind the newer one
            await writer.wait_durable(newer, timeout=10)
            await writer.wait_durable(first, timeout=1)
            assert writer.stats.failures == 1 and gated.merges >= 2
        assert await _note(store, "s1") == "s1 new", "a retried old snapshot overwrote a newer one"
        assert await _note(store, "s2") == "s2 only", "a snapshot of the failed merge was lost"
        assert [s.seq for s in await read_steps(store.steps, "s1")] == [1, 2]

    run(scenario())


def test_a_snapshot_never_reaches_the_table_before_its_step(db_uri: str) -> None:
    """A snapshot submitted while a steps commit runs belongs to the next batch of steps: the
    sessions commit that follows the running one must not carry it (found by the crash test:
    a session row at seq 5 over steps ending at 4)."""

    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        adds = store.steps = GatedAdds(store.steps, 2)  # type: ignore[assignment]
        async with BatchingWriter(store, flush_interval=30) as writer:
            first = await writer.submit([_step("s1", 1)], noted_session("s1", "one", last_seq=1))
            flushed = asyncio.ensure_future(writer.wait_durable(first, timeout=10))
            await asyncio.wait_for(adds.entered.wait(), 10)  # the first steps commit is running
            second = await writer.submit([_step("s1", 2)], noted_session("s1", "two", last_seq=2))
            adds.gates[0].set()
            await flushed  # seq 1 and its snapshot; the commit of seq 2 is held at its gate
            record = await get_session(store.sessions, "s1")
            assert [s.seq for s in await read_steps(store.steps, "s1")] == [1]
            assert record is not None and record.last_seq == 1, "the snapshot of seq 2 went before its step"
            adds.gates[1].set()
            await writer.wait_durable(second, timeout=10)
        record = await get_session(store.sessions, "s1")
        assert record is not None and record.last_seq == 2
        assert [s.seq for s in await read_steps(store.steps, "s1")] == [1, 2]

    run(scenario())


def test_flushes_forced_by_step_waiters_leave_the_snapshots_to_the_interval(db_uri: str) -> None:
    """Every control action forces a flush for its step; a sessions merge after each one cost the
    workers more CPU than the actions themselves. The snapshots wait for the interval, or for
    someone who asks for full durability."""

    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        gated = store.sessions = GatedMerges(store.sessions)  # type: ignore[assignment]
        gated.gate.set()
        async with BatchingWriter(store, flush_interval=30) as writer:  # only waiters flush
            first = await writer.submit([_step("s1", 1)], noted_session("s1", "1"))
            await writer.wait_durable(first, timeout=10)  # the first snapshots are due at once
            assert gated.merges == 1
            last = first
            for seq in range(2, 7):
                last = await writer.submit([_step("s1", seq)], noted_session("s1", str(seq)))
                await writer.wait_steps_durable(last, timeout=10)
            assert [s.seq for s in await read_steps(store.steps, "s1")] == [1, 2, 3, 4, 5, 6]
            assert gated.merges == 1, "a step waiter's flush merged the snapshots too"
            with pytest.raises(TimeoutError):  # a patient waiter forces nothing
                await writer.wait_durable(last, timeout=0.3, urgent=False)
            assert gated.merges == 1 and await _note(store, "s1") == "1"
            await writer.wait_durable(last, timeout=10)  # an urgent one does, and gets the newest
            assert gated.merges == 2 and await _note(store, "s1") == "6"

    run(scenario())


def test_a_patient_durability_waiter_is_answered_by_the_next_regular_flush(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        async with BatchingWriter(store, flush_interval=0.2) as writer:
            await writer.wait_durable(await writer.submit(None, noted_session("s1", "old")), timeout=10)
            generation = await writer.submit([_step("s1", 1)], noted_session("s1", "new"))
            await writer.wait_steps_durable(generation, timeout=10)
            await writer.wait_durable(generation, timeout=10, urgent=False)
            assert await _note(store, "s1") == "new"

    run(scenario())
