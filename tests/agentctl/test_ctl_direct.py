"""The no-daemon mechanics on a real LanceDB directory: queueing a batch, cancelling, racing a claim.

No daemon runs here: these are the parts agentctl uses when none answers (agentctl.direct)
and the cancel the daemon itself runs for ``cancel`` requests (agentd.cancel).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ctlkit import write_config

from agentctl.direct import DirectQueue
from agentd.cancel import cancel_actions
from agentd.config import load_settings
from agentd.queue import ActionQueue
from agentd.store import Store

pytestmark = pytest.mark.timeout(120)


async def _open(tmp_path: Path) -> Store:
    settings = load_settings(write_config(tmp_path))
    return await Store.open(settings.storage.uri, settings.storage.num_shards)


def test_a_batch_with_an_invalid_item_queues_the_valid_ones(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        direct = DirectQueue(store)
        items = [
            {"kind": "pause", "session_id": "s-1"},
            {"kind": "pause", "session_id": "bad::id"},
            {"kind": "explode", "session_id": "s-2"},
            {"kind": "resume", "session_id": "s-3", "payload": {}},
        ]
        records, invalid, finished = await direct.enqueue(items)
        assert sorted(invalid) == [1, 2] and "::" in invalid[1] and "kind" in invalid[2]
        assert [r is not None for r in records] == [True, False, False, True]
        assert finished == []
        rows = await direct.queue.get_many([r.action_id for r in records if r is not None])
        assert {r.session_id: r.status for r in rows.values()} == {"s-1": "pending", "s-3": "pending"}
        assert await store.actions.count_rows() == 2, "nothing half-applied, nothing invalid appended"

    asyncio.run(go())


def test_cancel_withdraws_only_unclaimed_actions(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _open(tmp_path)
        queue = ActionQueue(store.actions, store.num_shards, claimer="worker-test")
        free = await queue.enqueue("pause", "s-free")
        taken = await queue.enqueue("pause", "s-taken")
        await queue.claim([taken.shard], limit=10)
        report = await cancel_actions(store, [free.action_id, taken.action_id, "a-unknown"])
        outcomes = {r["action_id"]: r["outcome"] for r in report["results"]}
        assert outcomes == {free.action_id: "cancelled", taken.action_id: "claimed", "a-unknown": "not_found"}
        assert report["cancelled"] == 1
        row = await queue.get(free.action_id)
        assert row is not None and row.status == "failed" and row.error_code == "cancelled" and row.done_at
        assert row.ack_info().code == "cancelled"
        # Idempotent, and a cancelled action is never claimed.
        again = await cancel_actions(store, [free.action_id])
        assert again["results"][0]["outcome"] == "cancelled"
        claimed = await ActionQueue(store.actions, store.num_shards, claimer="w2").claim(range(store.num_shards))
        assert free.action_id not in {a.action_id for a in claimed}
        # Nor can a finished one.
        mine = await queue.get(taken.action_id)
        assert mine is not None
        await queue.complete(mine, {"status": "paused"})
        finished = await cancel_actions(store, [taken.action_id])
        assert finished["results"][0]["outcome"] == "finished"

    asyncio.run(go())


def test_cancel_racing_a_claim_has_one_winner(tmp_path: Path) -> None:
    """The same compare-and-set as a claim: for each action exactly one of the two wins."""

    async def go() -> None:
        store = await _open(tmp_path)
        for trial in range(6):
            queue = ActionQueue(store.actions, store.num_shards, claimer=f"worker-{trial}")
            action = await queue.enqueue("pause", f"s-race-{trial}")
            claim, cancel = await asyncio.gather(
                queue.claim([action.shard], limit=10), cancel_actions(store, [action.action_id])
            )
            won_claim = action.action_id in {a.action_id for a in claim}
            won_cancel = cancel["results"][0]["outcome"] == "cancelled"
            assert won_claim != won_cancel, (trial, claim, cancel)
            row = await queue.get(action.action_id)
            assert row is not None
            assert row.status == ("claimed" if won_claim else "failed")

    asyncio.run(go())
