"""The control-action queue: idempotent enqueue, exactly-once claims, leases, acknowledgements."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from helpers import reaped, run, spawn, wait_for

from agentd.queue import ActionQueue, ClaimLost
from agentd.store import Store
from agentd.store.actions import ActionRecord

SHARDS = 8


async def _queue(uri: str, **kwargs: float) -> ActionQueue:
    store = await Store.open(uri, SHARDS)
    return ActionQueue(store.actions, SHARDS, **kwargs)  # type: ignore[arg-type]


def test_idempotency_key_makes_one_action(db_uri: str) -> None:
    async def scenario() -> tuple[ActionRecord, ActionRecord, ActionRecord, int]:
        queue = await _queue(db_uri)
        first = await queue.enqueue("pause", "s1", idempotency_key="k-1")
        second = await queue.enqueue("pause", "s1", idempotency_key="k-1")
        other = await queue.enqueue("pause", "s1", idempotency_key="k-2")
        return first, second, other, await queue.table.count_rows()

    first, second, other, rows = run(scenario())
    assert first.action_id == second.action_id
    assert other.action_id != first.action_id
    assert rows == 2


def test_idempotent_enqueue_from_concurrent_processes(db_uri: str, tmp_path: Path) -> None:
    run(_queue(db_uri))  # create the database once, as the daemon would
    with reaped() as procs:
        for i in range(4):
            procs.append(spawn("enqueuer.py", db_uri, str(SHARDS), "20", str(tmp_path / f"e{i}.json")))
        for proc in procs:
            assert proc.wait(timeout=90) == 0
    ids = [json.loads((tmp_path / f"e{i}.json").read_text()) for i in range(4)]
    assert all(sorted(x) == sorted(ids[0]) for x in ids), "every process saw the same action per key"

    async def count() -> int:
        queue = await _queue(db_uri)
        return int(await queue.table.count_rows())

    assert run(count()) == 20


def test_claim_complete_and_double_completion_rejected(db_uri: str) -> None:
    async def scenario() -> None:
        queue = await _queue(db_uri)
        action = await queue.enqueue("interrupt", "s1", {"guidance": "about cats"})
        [claimed] = await queue.claim(range(SHARDS))
        assert claimed.action_id == action.action_id and claimed.status == "claimed"
        assert claimed.payload == {"guidance": "about cats"}
        done = await queue.complete(claimed, {"status": "running"})
        assert done.status == "done"
        stored = await queue.get(action.action_id)
        assert stored is not None and stored.status == "done" and stored.result == {"status": "running"}
        with pytest.raises(ClaimLost):
            await queue.complete(claimed, {"status": "again"})
        with pytest.raises(ClaimLost):
            await queue.fail(claimed, "too late")
        assert await queue.claim(range(SHARDS)) == []

    run(scenario())


def test_fail_records_the_error(db_uri: str) -> None:
    async def scenario() -> None:
        queue = await _queue(db_uri)
        action = await queue.enqueue("interrupt", "s1", {"guidance": 42})
        [claimed] = await queue.claim(range(SHARDS))
        await queue.fail(claimed, "invalid guidance: expected text or an object")
        stored = await queue.get(action.action_id)
        assert stored is not None and stored.status == "failed"
        assert stored.error == "invalid guidance: expected text or an object"

    run(scenario())


def test_claim_only_touches_own_shards_and_writes_nothing_when_idle(db_uri: str) -> None:
    async def scenario() -> None:
        queue = await _queue(db_uri)
        action = await queue.enqueue("pause", "some-session")
        others = [s for s in range(SHARDS) if s != action.shard]
        version = await queue.table.version()
        assert await queue.claim(others) == []
        assert await queue.claim(others) == []
        assert await queue.table.version() == version, "an idle claim must not commit"
        [won] = await queue.claim([action.shard])
        assert won.action_id == action.action_id

    run(scenario())


def test_actions_are_claimed_in_arrival_order(db_uri: str) -> None:
    async def scenario() -> None:
        queue = await _queue(db_uri)
        sent = [await queue.enqueue("interrupt", "s1", {"n": i}) for i in range(5)]
        won = await queue.claim(range(SHARDS))
        assert [a.action_id for a in won] == [a.action_id for a in sent]

    run(scenario())


def test_six_processes_race_for_500_actions(db_uri: str, tmp_path: Path) -> None:
    async def fill() -> None:
        queue = await _queue(db_uri)
        for chunk in range(5):
            batch = [
                ActionRecord(
                    action_id=f"a-{chunk:02d}-{i:04d}",
                    session_id=f"s-{i}",
                    shard=i % SHARDS,
                    kind="pause",
                    created_at=__import__("agentd.timeutil").timeutil.utcnow(),
                )
                for i in range(100)
            ]
            await queue.table.add(ActionRecord.to_arrow(batch))

    run(fill())
    outs = [tmp_path / f"c{i}.jsonl" for i in range(6)]
    with reaped() as procs:
        for out in outs:
            procs.append(spawn("claimer.py", db_uri, str(SHARDS), str(out), "25", "60"))
        for proc in procs:
            assert proc.wait(timeout=100) == 0
    claims: list[str] = []
    errors = 0
    for out in outs:
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if "action_id" in row:
                claims.append(row["action_id"])
            errors += row.get("errors", 0)
    assert errors == 0
    assert len(claims) == 500, f"{len(claims) - len(set(claims))} actions were won twice"
    assert len(set(claims)) == 500

    async def statuses() -> dict[str, int]:
        return await (await _queue(db_uri)).counts()

    assert run(statuses()) == {"done": 500}


def test_killed_claimer_actions_are_reclaimed_after_the_lease(db_uri: str, tmp_path: Path) -> None:
    async def fill() -> list[str]:
        queue = await _queue(db_uri)
        return [(await queue.enqueue("pause", f"s-{i}")).action_id for i in range(10)]

    ids = run(fill())
    out = tmp_path / "held.jsonl"
    with reaped(spawn("claimer.py", db_uri, str(SHARDS), str(out), "100", "1.5", "hold")) as procs:
        wait_for(lambda: out.exists() and "held" in out.read_text(), 60, what="the claimer to hold its claims")
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=10)
    held = [json.loads(line)["action_id"] for line in out.read_text().splitlines() if "action_id" in line]
    assert sorted(held) == sorted(ids)

    async def take_over() -> tuple[list[ActionRecord], list[ActionRecord]]:
        queue = await _queue(db_uri, lease=30.0)
        before = await queue.claim(range(SHARDS))  # the lease has not expired yet
        await asyncio.sleep(1.6)
        after = await queue.claim(range(SHARDS))
        for action in after:
            await queue.complete(action, {})
        return before, after

    before, after = run(take_over())
    assert before == []
    assert sorted(a.action_id for a in after) == sorted(ids)
    assert all(a.attempts == 2 for a in after)


def test_retention_purges_only_old_finished_actions(db_uri: str) -> None:
    async def scenario() -> None:
        queue = await _queue(db_uri)
        await queue.enqueue("pause", "s-1")
        await queue.enqueue("pause", "s-2")
        for action in await queue.claim(range(SHARDS), limit=1):
            await queue.complete(action, {})
        assert await queue.purge_finished(3600) == 0
        assert await queue.purge_finished(0) == 1
        assert await queue.counts() == {"pending": 1}

    run(scenario())


def test_a_stale_owner_cannot_take_over_a_newer_owners_live_claims(db_uri: str) -> None:
    """Issue 11, finding 6: the epoch check is inside the claim's conditional write."""

    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        owner = ActionQueue(store.actions, 4, claimer="worker-0@200", epoch=200)
        stale = ActionQueue(store.actions, 4, claimer="worker-0@100", epoch=100)
        successor = ActionQueue(store.actions, 4, claimer="worker-0@300", epoch=300)
        action = await owner.enqueue("pause", "s-1")
        [claimed] = await owner.claim(range(4), takeover=True)
        assert claimed.action_id == action.action_id and claimed.claim_epoch == 200
        assert await stale.claim(range(4), takeover=True) == []
        [taken] = await successor.claim(range(4), takeover=True)
        assert taken.action_id == action.action_id and taken.claim_epoch == 300

    run(scenario())


def test_offered_actions_are_claimed_by_id_and_only_once(db_uri: str) -> None:
    """The daemon's wake carries the rows it appended; a claim by id still races safely."""

    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        first = ActionQueue(store.actions, 4, claimer="worker-0@1", epoch=1)
        second = ActionQueue(store.actions, 4, claimer="worker-0@2", epoch=2)
        rows = [first.new_action("pause", f"s-{i}") for i in range(5)]
        await first.append_many(rows)
        won = await first.claim_offered(rows, range(4))
        assert sorted(a.action_id for a in won) == sorted(a.action_id for a in rows)
        assert all(a.status == "claimed" and a.version == 1 and a.claim_epoch == 1 for a in won)
        # What the update wrote is what we hold: acknowledging with it works.
        done = await first.complete(won[0], {"ok": True})
        assert done.status == "done"
        # Offered again (a stale wake): the pinned versions no longer match, nothing is won twice.
        assert await second.claim_offered(rows, range(4)) == []
        stored = await first.get_many([a.action_id for a in rows])
        assert all(r.attempts == 1 for r in stored.values())

    run(scenario())
