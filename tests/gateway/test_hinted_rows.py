"""Rows that ride along a commit hint are delivered exactly once without reading the table.

The gateway runs with a 30 s poll, so only hints move its tail. Steps are committed by the
real ``BatchingWriter`` into a real LanceDB directory; its ``on_commit`` gives the version and
rows each ``add()`` created, which the test sends down the gateway's supervisor channel as the
worker does (``agentd.worker``), in and out of commit order, and also broken or without rows:
versions without usable rows must be read from the table, and nothing may arrive twice or be
lost. ``stats.steps.reads`` tells whether a read happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agentd.gateway import Gateway
from agentd.store import Store
from agentd.store.steps import StepRecord
from agentd.store.writer import BatchingWriter, Committed

from .gwtools import SHARDS, Recorder, assert_exact, hint_line, hinted_gateway, step, until

pytestmark = pytest.mark.timeout(90)

SESSIONS = ["s1", "s2", "s3"]


@dataclass
class Hinted:
    """The real writer, a gateway moved only by hints, and a client of ``run::a1::*``."""

    writer: BatchingWriter
    committed: list[Committed]
    gw: Gateway
    supervisor: socket.socket  # our end of the gateway's hint channel
    client: Recorder

    async def commit(self, steps: list[StepRecord]) -> Committed:
        """Commit ``steps`` in one ``add()``; what its hint would carry."""
        await self.writer.submit(steps)
        await self.writer.flush()
        return self.committed[-1]


@contextlib.asynccontextmanager
async def subscribed(db_uri: str) -> AsyncIterator[Hinted]:
    store = await Store.open(db_uri, SHARDS)
    committed: list[Committed] = []
    writer = BatchingWriter(store, flush_interval=60, on_commit=committed.append)
    writer.start()
    try:
        async with hinted_gateway(db_uri) as (gw, supervisor):
            client = await Recorder.open(gw.port)
            await client.subscribe("run::a1::*")
            await until(lambda: client.of_type("snapshot"), 10, "snapshot")
            yield Hinted(writer, committed, gw, supervisor, client)
            await client.close()
    finally:
        await writer.close()


def test_hinted_versions_are_not_read_and_the_rest_are(db_uri: str) -> None:
    async def scenario() -> None:
        seqs = dict.fromkeys(SESSIONS, 0)
        async with subscribed(db_uri) as h:
            gw, supervisor, client = h.gw, h.supervisor, h.client

            async def commit_round() -> Committed:
                for sid in SESSIONS:
                    seqs[sid] += 1
                return await h.commit([step(sid, seqs[sid]) for sid in SESSIONS])

            stats = gw.stats.steps

            # 1. In order, with rows: delivered, nothing read.
            for _ in range(3):
                supervisor.sendall(hint_line(await commit_round()))
            await until(lambda: client.count("run::a1::*") == 9, 10, "9 steps from hints")
            assert (stats.reads, stats.hinted) == (0, 3)

            # 2. Two versions whose hints arrive in reverse order: the tail waits for the
            # missing one instead of reading it.
            first, second = await commit_round(), await commit_round()
            supervisor.sendall(hint_line(second))
            await asyncio.sleep(0.005)
            supervisor.sendall(hint_line(first))
            await until(lambda: client.count("run::a1::*") == 15, 10, "15 steps")
            assert (stats.reads, stats.hinted) == (0, 5)

            # 3. A hint without rows and one with rows that do not decode: both versions
            # are read from the table, together with a good hint's version beside them.
            plain, broken, good = await commit_round(), await commit_round(), await commit_round()
            supervisor.sendall(hint_line(plain, rows=False))
            supervisor.sendall(hint_line(broken, broken=True))
            supervisor.sendall(hint_line(good))
            await until(lambda: client.count("run::a1::*") == 24, 10, "24 steps")
            assert stats.reads >= 1 and gw.step_rows.bad == 1
            assert len(gw.step_rows) == 0, "rows the tail passed are forgotten"

            # 4. A hint for a version already delivered is ignored (no second delivery).
            supervisor.sendall(hint_line(good))
            supervisor.sendall(hint_line(await commit_round()))
            await until(lambda: client.count("run::a1::*") == 27, 10, "27 steps")
            await asyncio.sleep(0.3)
            assert_exact(client.steps("run::a1::*"), dict.fromkeys(SESSIONS, 9))

    asyncio.run(scenario())


def test_a_big_commit_goes_out_in_parts_every_step_once_and_in_order(db_uri: str) -> None:
    """A tick burst's commit is decoded and offered ``PART_ROWS`` rows at a time (step_tail.StepTail.parts).

    One commit of 300 sessions' steps with a session whose three steps sit in three different
    parts, and a session with a hole (seq 2 comes in the next commit): each session's steps
    arrive once, in order, and the held one is released by the later commit.
    """
    from agentd.gateway.step_tail import PART_ROWS

    async def scenario() -> None:
        crowd = [f"c{i:03d}" for i in range(300)]
        assert len(crowd) > 2 * PART_ROWS
        async with subscribed(db_uri) as h:
            burst = []
            for i, sid in enumerate(crowd):
                burst.append(step(sid, 1))
                if i in (0, PART_ROWS + 10, 2 * PART_ROWS + 10):  # "spread" in three parts
                    burst.append(step("spread", 1 + (i > 0) + (i > PART_ROWS + 10)))
                if i == 5:
                    burst.append(step("holed", 1))
                if i == 290:
                    burst.append(step("holed", 3))
            h.supervisor.sendall(hint_line(await h.commit(burst)))
            await until(lambda: h.client.count("run::a1::*") == 304, 10, "the burst but the held step")
            assert h.client.steps("run::a1::*")["holed"] == [1]
            h.supervisor.sendall(hint_line(await h.commit([step("holed", 2)])))
            await until(lambda: h.client.count("run::a1::*") == 306, 10, "the hole filled")
            await asyncio.sleep(0.3)
            assert_exact(h.client.steps("run::a1::*"), {**dict.fromkeys(crowd, 1), "spread": 3, "holed": 3})
            stats = h.gw.stats.steps
            assert (stats.reads, stats.hinted, stats.gaps_detected) == (0, 2, 1), "rows came from the hints"

    asyncio.run(scenario())


def test_a_session_whose_rows_come_out_of_seq_order_in_a_big_range_misses_none(db_uri: str) -> None:
    """The range's rows are not in seq order: a version read back (its hint came without rows)
    follows the hinted ones. Here "new" has seq 1 in the read-back version and seq 2 first in a
    hinted one of more than a part: split over two parts, seq 2 went out first and seq 1 was then
    dropped as already passed (the long chaos run, seed 20261201: a subscriber got 2 after 0)."""
    from agentd.gateway.step_tail import PART_ROWS

    async def scenario() -> None:
        crowd = [f"c{i:03d}" for i in range(PART_ROWS + 20)]
        async with subscribed(db_uri) as h:
            read_back = await h.commit([step("new", 1), *(step(sid, 1) for sid in crowd[:10])])
            hinted = await h.commit([step("new", 2), *(step(sid, 2 if i < 10 else 1) for i, sid in enumerate(crowd))])
            h.supervisor.sendall(hint_line(hinted))
            await asyncio.sleep(0.005)
            h.supervisor.sendall(hint_line(read_back, rows=False))  # within the 20 ms grace
            expected = {"new": 2, **{sid: 2 if i < 10 else 1 for i, sid in enumerate(crowd)}}
            total = sum(expected.values())
            await until(lambda: h.client.count("run::a1::*") >= total, 10, f"{total} steps")
            await asyncio.sleep(0.3)
            assert_exact(h.client.steps("run::a1::*"), expected)
            assert h.gw.stats.steps.reads == 1 and h.gw.stats.steps.hinted == 1, "one range: hinted and read back"

    asyncio.run(scenario())
