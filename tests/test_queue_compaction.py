"""The supervisor's compaction of the ``actions`` table between maintenance passes.

Real LanceDB tables throughout: the point is that compacting while workers claim and acknowledge
never costs an action (the update wins, the compaction is tried again) and keeps claims cheap.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

from helpers import run

from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.version_window import VersionWindow
from agentd.supervision.queue_compaction import QueueCompactor


async def _act(queue: ActionQueue, session_id: str, result: dict[str, int]) -> str:
    """One action through its life, as the daemon and a worker run it: append, claim, acknowledge."""
    row = queue.new_action("pause", session_id)
    await queue.append_many([row])
    [won] = await queue.claim_offered([row], range(4))
    await queue.complete(won, result)
    return row.action_id


async def _fragments(store: Store) -> int:
    return int((await store.actions.stats())["fragment_stats"]["num_fragments"])


def test_the_actions_table_is_compacted_once_it_has_many_fragments(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        compactor = QueueCompactor(store.actions, max_fragments=16)
        for i in range(10):
            await queue.append_many([queue.new_action("pause", f"s-{i}")])
        assert not await compactor.once(), "10 fragments: below the threshold"
        rows = [queue.new_action("resume", f"s-{i}") for i in range(20)]
        for row in rows:
            await queue.append_many([row])
        assert await _fragments(store) >= 16
        assert await compactor.once()
        assert await _fragments(store) < 4
        assert compactor.compactions == 1
        stored = await queue.get_many([r.action_id for r in rows])
        assert {a: r.kind for a, r in stored.items()} == {r.action_id: "resume" for r in rows}
        assert await store.actions.count_rows() == 30

    run(scenario())


def test_compacting_while_actions_are_claimed_and_acknowledged_loses_none(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4, claimer="worker-0@1", epoch=1)
        compactor = QueueCompactor(store.actions, max_fragments=2)
        done = asyncio.Event()
        ids: list[str] = []

        async def control() -> None:
            try:
                for i in range(40):
                    ids.append(await _act(queue, f"s-{i % 7}", {"n": i}))
            finally:
                done.set()

        async def compact() -> None:
            while not done.is_set():
                await compactor.once()
                await asyncio.sleep(0.01)

        await asyncio.gather(control(), compact())
        assert compactor.compactions >= 1, "the race was never run"
        stored = await queue.get_many(ids)
        assert len(stored) == 40
        assert all(r.status == "done" and r.attempts == 1 for r in stored.values())
        assert sorted(r.result["n"] for r in stored.values() if r.result) == list(range(40))

    run(scenario())


def test_no_compaction_while_a_maintenance_pass_runs(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        for i in range(5):
            await queue.append_many([queue.new_action("pause", f"s-{i}")])
        busy = True
        compactor = QueueCompactor(store.actions, max_fragments=2, interval=0.02, busy=lambda: busy)
        task = asyncio.create_task(compactor.run())
        await asyncio.sleep(0.3)
        assert compactor.compactions == 0
        busy = False
        for _ in range(100):
            if compactor.compactions:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert compactor.compactions >= 1

    run(scenario())


def test_the_compaction_prunes_old_versions_to_the_window(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4)
        versions = VersionWindow(keep_versions=10, min_age=0.3, max_age=600)
        compactor = QueueCompactor(store.actions, max_fragments=4, versions=versions)
        for i in range(30):
            await queue.append_many([queue.new_action("pause", f"s-{i}")])
        assert await compactor.once(), "first compaction: no rate yet, nothing pruned"
        before = len(os.listdir(Path(db_uri) / "actions.lance" / "_versions"))
        for i in range(30):
            await queue.append_many([queue.new_action("resume", f"s-{i}")])
        await asyncio.sleep(0.4)
        assert await compactor.once()
        after = len(os.listdir(Path(db_uri) / "actions.lance" / "_versions"))
        assert after < before, f"{before} versions before, {after} after"
        assert await store.actions.count_rows() == 60

    run(scenario())


def test_a_preempted_compaction_is_tried_again_within_a_tenth_of_the_interval(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        queue = ActionQueue(store.actions, 4, claimer="worker-0@1", epoch=1)
        compactor = QueueCompactor(store.actions, max_fragments=2, interval=2.0)
        attempts: list[tuple[float, str]] = []
        once = compactor.once

        async def timed_once() -> bool:
            before = (compactor.compactions, compactor.preempted)
            done = await once()
            after = (compactor.compactions, compactor.preempted)
            outcome = "compacted" if after[0] > before[0] else "preempted" if after[1] > before[1] else "none"
            attempts.append((time.monotonic(), outcome))
            return done

        compactor.once = timed_once  # type: ignore[method-assign]
        task = asyncio.create_task(compactor.run())
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                o == "preempted" for _, o in attempts[:-1]
            ):  # a stream of claims and acknowledgements until one compaction lost and another came after
                await _act(queue, "s-1", {})
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        lost = next(i for i, (_, o) in enumerate(attempts[:-1]) if o == "preempted")
        assert attempts[lost + 1][0] - attempts[lost][0] < 1.0, attempts

    run(scenario())


def test_a_compaction_that_keeps_losing_backs_off_to_the_interval() -> None:
    """The schedule alone (the outcome of each compaction is given): every loss doubles the wait
    from a tenth of the interval up to the interval, and a win goes back to the interval."""

    class Scripted(QueueCompactor):
        def __init__(self, outcomes: list[str]) -> None:
            super().__init__(None, max_fragments=2, interval=0.4)
            self.outcomes = outcomes
            self.calls: list[float] = []
            self.enough = asyncio.Event()

        async def once(self) -> bool:
            self.calls.append(time.monotonic())
            if len(self.calls) == 10:
                self.enough.set()
            outcome = self.outcomes.pop(0) if self.outcomes else "won"
            if outcome == "lost":
                self.preempted += 1
            return outcome == "won"

    async def scenario() -> list[float]:
        compactor = Scripted(["lost"] * 6 + ["won", "lost"])
        task = asyncio.create_task(compactor.run())
        await asyncio.wait_for(compactor.enough.wait(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return [b - a for a, b in itertools.pairwise(compactor.calls)]

    gaps = run(scenario())
    expected = [0.04, 0.08, 0.16, 0.32, 0.4, 0.4, 0.4, 0.04, 0.4]
    assert all(e - 0.005 <= g < e + 0.15 for g, e in zip(gaps, expected, strict=True)), gaps
