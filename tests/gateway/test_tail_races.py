"""A subscription that arrives while a tail is inside a poll still gets every row exactly once.

The tail reads a batch, filters it down to the subscribed sessions, then (for a seq gap) reads
again to backfill. A subscribe handled during that second read used to register below the
batch's version (so its snapshot stopped before the batch) while the batch had already been
filtered without its session: the batch went to nobody, and the subscriber never saw those
steps (found by the long chaos run: a resubscribed client got seq 55 right after 53).

The fault is a slow storage read, injected into the backfill; everything else is real: a
LanceDB directory, the in-process gateway, websockets clients.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import agentd.gateway.step_tail as step_tail
from agentd.store import Store
from agentd.store.conversations import MessageRecord, insert_messages
from agentd.store.steps import StepRecord
from agentd.store.writer import BatchingWriter, Committed
from agentd.timeutil import utcnow

from .gwtools import SHARDS, Recorder, gateway_settings, hint_line, hinted_gateway, running_gateway, step, until

pytestmark = pytest.mark.timeout(90)


def test_a_subscribe_during_a_backfill_read_misses_nothing(db_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backfilling = asyncio.Event()
    release = asyncio.Event()
    real_read = step_tail.read_steps_between_versions

    async def slow_backfill(table: Any, after: int, upto: int, where: str | None = None) -> Any:
        if where is not None and "seq >" in where:  # the backfill's read, not the tail's
            backfilling.set()
            await release.wait()
        return await real_read(table, after, upto, where=where)

    monkeypatch.setattr(step_tail, "read_steps_between_versions", slow_backfill)

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        committed: list[Committed] = []
        writer = BatchingWriter(store, flush_interval=60, on_commit=committed.append)
        writer.start()

        async def commit(*steps: StepRecord) -> bytes:
            await writer.submit(list(steps))
            await writer.flush()
            return hint_line(committed[-1])

        try:
            async with hinted_gateway(db_uri) as (gw, supervisor):
                early = await Recorder.open(gw.port)
                await early.subscribe("run::a1::s1")
                await until(lambda: early.of_type("snapshot"), 10, "snapshot of s1")
                supervisor.sendall(await commit(step("s1", 1)))
                await until(lambda: early.count("run::a1::s1") == 1, 10, "s1 seq 1")

                # s1 jumps to seq 3 (a gap: the tail backfills), s2 has its first step.
                supervisor.sendall(await commit(step("s1", 3), step("s2", 1)))
                await asyncio.wait_for(backfilling.wait(), 10)
                late = await Recorder.open(gw.port)
                await late.subscribe("run::a1::s2")
                await until(lambda: late.of_type("snapshot"), 10, "snapshot of s2")
                release.set()

                await until(lambda: late.count("run::a1::s2") == 1, 10, "s2 seq 1, in the snapshot or live")
                await asyncio.sleep(0.3)
                assert late.steps("run::a1::s2") == {"s2": [1]}
                await early.close()
                await late.close()
        finally:
            await writer.close()

    asyncio.run(scenario())


class _FailingReads:
    """The message tail's table with one read that blocks until released, then fails."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.armed = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def version(self) -> int:
        return int(await self.table.version())

    def query(self) -> Any:
        if not self.armed:
            return self.table.query()
        self.armed = False
        return _FailingQuery(self)


class _FailingQuery:
    def __init__(self, owner: _FailingReads) -> None:
        self.owner = owner

    def where(self, _clause: str) -> _FailingQuery:
        return self

    def select(self, _columns: list[str]) -> _FailingQuery:
        return self

    async def to_arrow(self) -> Any:
        self.owner.reading.set()
        await self.owner.release.wait()
        raise OSError("injected: the storage read failed")


def _message(n: int) -> MessageRecord:
    return MessageRecord(
        message_id=f"m{n}", conversation_id="c1", author_id="u", role="user", text=f"message {n}", created_at=utcnow()
    )


def test_a_failed_poll_is_retried_over_the_range_a_new_subscription_registered_at(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, poll_interval=0.02)) as gw:
            reads = _FailingReads(gw.messages.table)
            gw.messages.table = reads
            early = await Recorder.open(gw.port)
            await early.subscribe("conv::c1")
            await until(lambda: early.of_type("snapshot"), 10, "early snapshot")
            await insert_messages(store.messages, [_message(1)])
            await until(lambda: len(early.of_type("message")) == 1, 10, "m1 live")

            reads.armed = True
            await insert_messages(store.messages, [_message(2)])
            await asyncio.wait_for(reads.reading.wait(), 10)
            late = await Recorder.open(gw.port)
            await late.subscribe("conv::c1")
            await until(lambda: late.of_type("snapshot"), 10, "late snapshot")
            await insert_messages(store.messages, [_message(3)])
            reads.release.set()

            def late_ids() -> list[str]:
                snap = late.of_type("snapshot")[0]["messages"]
                return [m["message_id"] for m in snap] + [m["message_id"] for m in late.of_type("message")]

            await until(lambda: len(early.of_type("message")) == 3, 10, "early: m2 and m3 after the retry")
            await until(lambda: "m3" in late_ids(), 10, "late: m3")
            await asyncio.sleep(0.3)
            assert [m["message_id"] for m in early.of_type("message")] == ["m1", "m2", "m3"]
            assert late_ids() == ["m1", "m2", "m3"]
            assert gw.stats.messages.errors == 1
            await early.close()
            await late.close()

    asyncio.run(scenario())
