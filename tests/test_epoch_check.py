"""The worker's ownership check before each commit and claim, read again only when ``owners`` changes."""

from __future__ import annotations

import asyncio

from agentd.store import Store
from agentd.store.owners import EpochCheck, OwnerRecord, set_owner
from agentd.timeutil import utcnow


def _owner(index: int, epoch: int) -> OwnerRecord:
    return OwnerRecord(worker_index=index, workers=2, epoch=epoch, pid=1, started_at=utcnow())


def test_the_epoch_is_read_again_only_after_owners_changed(db_uri: str) -> None:
    async def go() -> None:
        store = await Store.open(db_uri, 8)
        await set_owner(store, _owner(0, 5))
        check = EpochCheck(store, 0, 5)
        assert await check.still_ours()
        assert await check.still_ours()
        assert await check.still_ours()
        assert check.reads == 1  # one read, then version checks only

        # Another worker's row changes: a new version, read again, still ours.
        await set_owner(store, _owner(1, 9))
        assert await check.still_ours()
        assert check.reads == 2

        # The supervisor replaces us from another process (another connection): seen at once.
        supervisor = await Store.open(db_uri, 8)
        await set_owner(supervisor, _owner(0, 6))
        assert not await check.still_ours()
        assert not await check.still_ours()  # a refusal is never cached
        assert check.reads == 4

    asyncio.run(go())


def test_a_missing_owner_row_is_not_ours(db_uri: str) -> None:
    async def go() -> None:
        store = await Store.open(db_uri, 8)
        assert not await EpochCheck(store, 3, 1).still_ours()

    asyncio.run(go())
