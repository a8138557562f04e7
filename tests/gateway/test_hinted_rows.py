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

import pytest

from agentd.ids import shard_for
from agentd.protocol import HINT_ROWS_MAX_BYTES, CommitHint, dump_line
from agentd.store import Store
from agentd.store.ipc import table_to_text
from agentd.store.steps import StepRecord
from agentd.store.writer import BatchingWriter, Committed
from agentd.timeutil import utcnow

from .gwtools import SHARDS, Recorder, assert_exact, hinted_gateway, until

pytestmark = pytest.mark.timeout(90)

SESSIONS = ["s1", "s2", "s3"]


def _hint(committed: Committed, *, rows: bool = True, broken: bool = False) -> bytes:
    text = table_to_text(committed.rows, HINT_ROWS_MAX_BYTES) if rows else None
    if broken:
        text = "this is not base64 arrow!"
    return dump_line(CommitHint(sessions=committed.sessions, steps_version=committed.version, steps_ipc=text))


def test_hinted_versions_are_not_read_and_the_rest_are(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        committed: list[Committed] = []
        writer = BatchingWriter(store, flush_interval=60, on_commit=committed.append)
        writer.start()
        seqs = dict.fromkeys(SESSIONS, 0)

        async def commit_round() -> Committed:
            for sid in SESSIONS:
                seqs[sid] += 1
                step = StepRecord(
                    session_id=sid,
                    agent_id="a1",
                    shard=shard_for(sid, SHARDS),
                    seq=seqs[sid],
                    ts=utcnow(),
                    text=f"step {seqs[sid]}",
                    state={"iteration": seqs[sid]},
                )
                await writer.submit([step])
            await writer.flush()
            return committed[-1]

        try:
            async with hinted_gateway(db_uri) as (gw, supervisor):
                client = await Recorder.open(gw.port)
                await client.subscribe("run::a1::*")
                await until(lambda: client.of_type("snapshot"), 10, "snapshot")
                stats = gw.stats.steps

                # 1. In order, with rows: delivered, nothing read.
                for _ in range(3):
                    supervisor.sendall(_hint(await commit_round()))
                await until(lambda: client.count("run::a1::*") == 9, 10, "9 steps from hints")
                assert (stats.reads, stats.hinted) == (0, 3)

                # 2. Two versions whose hints arrive in reverse order: the tail waits for the
                # missing one instead of reading it.
                first, second = await commit_round(), await commit_round()
                supervisor.sendall(_hint(second))
                await asyncio.sleep(0.005)
                supervisor.sendall(_hint(first))
                await until(lambda: client.count("run::a1::*") == 15, 10, "15 steps")
                assert (stats.reads, stats.hinted) == (0, 5)

                # 3. A hint without rows and one with rows that do not decode: both versions
                # are read from the table, together with a good hint's version beside them.
                plain, broken, good = await commit_round(), await commit_round(), await commit_round()
                supervisor.sendall(_hint(plain, rows=False))
                supervisor.sendall(_hint(broken, broken=True))
                supervisor.sendall(_hint(good))
                await until(lambda: client.count("run::a1::*") == 24, 10, "24 steps")
                assert stats.reads >= 1 and gw.step_rows.bad == 1
                assert len(gw.step_rows) == 0, "rows the tail passed are forgotten"

                # 4. A hint for a version already delivered is ignored (no second delivery).
                supervisor.sendall(_hint(good))
                supervisor.sendall(_hint(await commit_round()))
                await until(lambda: client.count("run::a1::*") == 27, 10, "27 steps")
                await asyncio.sleep(0.3)
                assert_exact(client.steps("run::a1::*"), dict.fromkeys(SESSIONS, 9))
                await client.close()
        finally:
            await writer.close()

    asyncio.run(scenario())
