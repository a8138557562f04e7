"""The batching writer under storage faults (issue 11, findings 7 and 10).

The commit that lands but reports an error cannot be produced by a local LanceDB directory on
demand, so one wrapper stands in for the object store's lost reply: it forwards ``add`` to the
real table, then raises. Everything else is the real writer on a real database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import noted_session, run

from agentd.store import Store
from agentd.store.commits import FencedWrite
from agentd.store.sessions import get_session
from agentd.store.steps import StepRecord, read_steps
from agentd.store.writer import BatchingWriter, WriterClosed
from agentd.timeutil import utcnow


class LandsThenFails:
    """The real steps table, whose next ``add`` commits and then reports an error."""

    def __init__(self, table: Any, failures: int = 1) -> None:
        self._table = table
        self.failures = failures

    async def add(self, data: Any) -> Any:
        result = await self._table.add(data)
        if self.failures:
            self.failures -= 1
            raise OSError("connection reset while reading the commit reply")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def _step(session_id: str, seq: int, text: Any = "hello") -> StepRecord:
    return StepRecord(
        session_id=session_id, agent_id=session_id, shard=0, seq=seq, ts=utcnow(), text="x", state={"n": seq}
    ).model_copy(update={"text": text})


def test_a_commit_that_landed_but_reported_an_error_is_not_appended_again(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        store.steps = LandsThenFails(store.steps)
        async with BatchingWriter(store, flush_interval=0.05) as writer:
            await writer.wait_durable(await writer.submit([_step("s1", 1), _step("s1", 2)]))
            await writer.wait_durable(await writer.submit([_step("s1", 3)]))
            assert store.steps.failures == 0, "the fault fired"
        seqs = [s.seq for s in await read_steps(store.steps, "s1")]
        assert seqs == [1, 2, 3], f"duplicates after a landed-but-failed commit: {seqs}"

    run(scenario())


def test_a_value_the_storage_cannot_hold_is_repaired_and_the_rest_commits(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        async with BatchingWriter(store, flush_interval=0.05) as writer:
            generation = await writer.submit([_step("good", 1), _step("bad", 1, text="x\udc80y"), _step("good", 2)])
            await writer.wait_durable(generation, timeout=10)
        assert [s.seq for s in await read_steps(store.steps, "good")] == [1, 2]
        [bad] = await read_steps(store.steps, "bad")
        assert bad.text == "x?y"

    run(scenario())


def test_a_stale_writer_is_fenced_inside_the_sessions_write(db_uri: str) -> None:
    """Issue 11, finding 6: a replaced worker that passed the check-then-act fence still cannot
    overwrite the new owner's session row: the epoch condition is inside the conditional write."""

    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        stale = BatchingWriter(store, flush_interval=0.05, epoch=100)
        owner = BatchingWriter(store, flush_interval=0.05, epoch=200)
        async with stale, owner:
            await stale.wait_durable(await stale.submit(None, noted_session("s1", "old owner")), timeout=10)
            await owner.wait_durable(await owner.submit(None, noted_session("s1", "new owner")), timeout=10)
            generation = await stale.submit(None, noted_session("s1", "stale write"))
            with pytest.raises(WriterClosed):
                await stale.wait_durable(generation, timeout=10)
            assert isinstance(await asyncio.wait_for(stale.failed(), 5), FencedWrite)
            # The owner goes on writing; a newer epoch (the next owner) may replace its row.
            await owner.wait_durable(await owner.submit(None, noted_session("s1", "owner again")), timeout=10)
        record = await get_session(store.sessions, "s1")
        assert record is not None and record.context["note"] == "owner again" and record.epoch == 200
        async with BatchingWriter(store, flush_interval=0.05, epoch=300) as successor:
            await successor.wait_durable(await successor.submit(None, noted_session("s1", "successor")), timeout=10)
        record = await get_session(store.sessions, "s1")
        assert record is not None and record.context["note"] == "successor" and record.epoch == 300

    run(scenario())
