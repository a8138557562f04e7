"""Exactly-once, in-order delivery with real writer processes, compaction, kill -9 and resubscribe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from agentd.store import Store

from .gwtools import (
    SHARDS,
    Recorder,
    assert_exact,
    db_last_seqs,
    gateway_settings,
    procs,
    running_gateway,
    until,
    wait_exit,
)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_concurrent_writers_and_compaction_every_step_once_in_order(db_uri: str, tmp_path: Path) -> None:
    """Two writer processes append while the table is compacted; early and late subscribers of
    session and agent rooms each get every committed step once, in seq order."""

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            early = await Recorder.open(gw.port)
            for room in ("run::a1::s1", "run::a1::*", "run::a2::s3"):
                await early.subscribe(room)
            await until(lambda: len(early.of_type("snapshot")) == 3, 10, "early snapshots")
            with procs(tmp_path) as p:
                w1 = p.writer(db_uri, "w1", "--agent", "a1", "--sessions", "s1,s2", "--upto", "300", "--batch", "4")
                w2 = p.writer(db_uri, "w2", "--agent", "a2", "--sessions", "s3,s4", "--upto", "300", "--batch", "7")
                compactions = 0

                async def compact() -> None:
                    nonlocal compactions
                    while True:
                        await asyncio.sleep(0.15)
                        with contextlib.suppress(Exception):  # a preempted rewrite is retried next turn
                            await store.steps.optimize()
                            compactions += 1

                compactor = asyncio.create_task(compact())
                # Join mid-stream: the snapshot/live hand-over happens under load.
                await until(lambda: len(p.lines("w1")) > 15 and len(p.lines("w2")) > 10, 20, "writers started")
                late = await Recorder.open(gw.port)
                await late.subscribe("run::a1::s2")
                await late.subscribe("run::a2::*")
                assert await wait_exit(w1, 30) == 0, p.stderr("w1")
                assert await wait_exit(w2, 30) == 0, p.stderr("w2")
                compactor.cancel()
                await asyncio.gather(compactor, return_exceptions=True)
            last = await db_last_seqs(store)
            assert last == {"s1": 300, "s2": 300, "s3": 300, "s4": 300}
            await until(lambda: early.count("run::a1::*") == 600 and late.count("run::a2::*") == 600, 15, "delivery")
            await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive now
            assert_exact(early.steps("run::a1::s1"), {"s1": 300})
            assert_exact(early.steps("run::a1::*"), {"s1": 300, "s2": 300})
            assert_exact(early.steps("run::a2::s3"), {"s3": 300})
            assert_exact(late.steps("run::a1::s2"), {"s2": 300})
            assert_exact(late.steps("run::a2::*"), {"s3": 300, "s4": 300})
            assert compactions >= 3
            assert len(late.of_type("snapshot")[0]["steps"]) > 0, "the late snapshot carried history"
            assert gw.stats.steps.gaps_unfilled == 0 and gw.stats.delivery.gaps_seen == 0
            assert not early.of_type("error") and not late.of_type("error")
            for frame in early.of_type("step")[:5]:
                assert frame["state"]["context"] == {"subject": "cats"}  # JSON columns as objects
            await early.close()
            await late.close()

    run(scenario())


@pytest.mark.timeout(60)
def test_writer_killed_and_restarted_no_gap_no_duplicate(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            client = await Recorder.open(gw.port)
            await client.subscribe("run::a1::s1")
            await client.subscribe("run::a1::*")
            with procs(tmp_path) as p:
                args = ("--agent", "a1", "--sessions", "s1,s2", "--upto", "400", "--batch", "3", "--interval", "0.005")
                first = p.writer(db_uri, "k1", *args)
                await until(lambda: len(p.lines("k1")) >= 20, 20, "first writer commits")
                os.kill(first.pid, signal.SIGKILL)
                assert await wait_exit(first, 10) == -signal.SIGKILL
                killed_at = await db_last_seqs(store)
                assert 0 < killed_at["s1"] < 400
                second = p.writer(db_uri, "k2", *args)
                assert await wait_exit(second, 30) == 0, p.stderr("k2")
            assert await db_last_seqs(store) == {"s1": 400, "s2": 400}
            await until(lambda: client.count("run::a1::*") == 800, 15, "delivery after restart")
            await asyncio.sleep(0.3)
            assert_exact(client.steps("run::a1::s1"), {"s1": 400})
            assert_exact(client.steps("run::a1::*"), {"s1": 400, "s2": 400})
            await client.close()

    run(scenario())


@pytest.mark.timeout(60)
def test_resubscribe_with_since_gets_exactly_the_missed_steps(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            first = await Recorder.open(gw.port)
            await first.subscribe("run::a1::s1")
            other = await Recorder.open(gw.port)  # stays subscribed throughout
            await other.subscribe("run::a1::s1", since=0)
            with procs(tmp_path) as p:
                w = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1", "--upto", "300", "--batch", "2")
                await until(lambda: first.count("run::a1::s1") >= 40, 20, "first steps")
                await first.close()
                seen = first.steps("run::a1::s1")["s1"]
                since = seen[-1]
                assert seen == list(range(1, since + 1))
                await until(lambda: len(p.lines("w")) > since // 2 + 20, 20, "steps missed while away")
                again = await Recorder.open(gw.port)
                await again.subscribe("run::a1::s1", since=since)
                # The same connection can re-subscribe: the room restarts from the new since.
                await until(lambda: again.of_type("snapshot"), 10, "snapshot")
                assert await wait_exit(w, 30) == 0, p.stderr("w")
            await until(lambda: other.count("run::a1::s1") == 300, 15, "other client")
            await until(lambda: again.count("run::a1::s1") == 300 - since, 15, "resumed client")
            await asyncio.sleep(0.2)
            snapshot = again.of_type("snapshot")[0]
            assert snapshot["state"]["session_id"] == "s1" and snapshot["state"]["last_seq"] > since
            assert [s["seq"] for s in snapshot["steps"]][:1] == [since + 1]
            assert_exact(again.steps("run::a1::s1"), {"s1": 300}, since=since)
            assert_exact(other.steps("run::a1::s1"), {"s1": 300})
            # Resubscribing on the same connection with since=250 replaces the subscription.
            await again.subscribe("run::a1::s1", since=250)
            await until(lambda: len(again.of_type("snapshot")) == 2, 10, "second snapshot")
            assert [s["seq"] for s in again.of_type("snapshot")[1]["steps"]] == list(range(251, 301))
            assert await db_last_seqs(store) == {"s1": 300}
            await again.close()
            await other.close()

    run(scenario())


@pytest.mark.timeout(60)
def test_long_history_is_paged_then_live(db_uri: str, tmp_path: Path) -> None:
    """1,300 steps of history: the snapshot holds the first 500, the rest follow as step events
    (read page by page), then live steps; agent rooms page per session, with a since map."""

    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            with procs(tmp_path) as p:
                args = ("--agent", "a1", "--sessions", "s1,s2", "--batch", "100", "--no-sessions")
                w = p.writer(db_uri, "w", *args, "--upto", "1300")
                assert await wait_exit(w, 30) == 0, p.stderr("w")
                client = await Recorder.open(gw.port)
                await client.subscribe("run::a1::s1", since=100)
                await client.subscribe("run::a1::*", since={"s1": 1250})
                await until(lambda: len(client.of_type("snapshot")) == 2, 10, "snapshots")
                w2 = p.writer(db_uri, "w2", *args, "--upto", "1400")
                assert await wait_exit(w2, 30) == 0, p.stderr("w2")
            await until(lambda: client.count("run::a1::*") == 150 + 1400, 15, "history and live")
            await asyncio.sleep(0.2)
            first = client.of_type("snapshot")[0]
            assert [s["seq"] for s in first["steps"]] == list(range(101, 601))
            assert_exact(client.steps("run::a1::s1"), {"s1": 1400}, since=100)
            agent = client.steps("run::a1::*")
            assert agent["s1"] == list(range(1251, 1401))
            assert agent["s2"] == list(range(1, 1401))
            await client.close()

    run(scenario())
