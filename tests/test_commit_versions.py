"""A steps commit names the version holding its rows, or none: the gateway files hinted rows by it.

LanceDB's ``add()`` reports the table's latest version once its commit is done. When another
writer commits in between (seen with three processes appending: 2 adds in 900), that is the
other commit's version, and two commits report the same one: the gateway then delivered one
batch twice and the other never (the long chaos run, seed 20261202: a subscriber got seq 2 of a
session right after 0). The race is rare, so the other writer's commit is injected right after
ours here, on the real table, with ``add()`` reporting the latest version as LanceDB does.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from helpers import run

from agentd.store import Store
from agentd.store.steps import StepRecord
from agentd.store.writer import BatchingWriter, Committed
from agentd.timeutil import utcnow


def _step(session_id: str, seq: int) -> StepRecord:
    return StepRecord(session_id=session_id, agent_id="a", shard=0, seq=seq, ts=utcnow(), text="x")


class OtherCommitsRightAfter:
    """The real steps table; after each of our appends another writer (its own connection) commits
    at once, and ``add()`` answers with the latest version, as LanceDB's does in that race."""

    def __init__(self, table: Any, other: Any) -> None:
        self._table = table
        self._other = other
        self.seq = 0

    async def add(self, data: Any) -> Any:
        await self._table.add(data)
        self.seq += 1
        await self._other.add(StepRecord.to_arrow([_step("other", self.seq)]))
        return SimpleNamespace(version=await self._table.version())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


async def _commits(store: Store, count: int) -> list[Committed]:
    committed: list[Committed] = []
    async with BatchingWriter(store, flush_interval=30, on_commit=committed.append) as writer:
        for seq in range(1, count + 1):
            await writer.wait_steps_durable(await writer.submit([_step("s1", seq)]), timeout=10)
    return committed


async def _actual_versions(store: Store) -> dict[int, int]:
    rows = await store.steps.query().where("session_id = 's1'").select(["seq", "_row_created_at_version"]).to_arrow()
    return {r["seq"]: r["_row_created_at_version"] for r in rows.to_pylist()}


def test_a_commit_followed_at_once_by_another_names_no_version(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        other = await Store.open(db_uri, 4)
        store.steps = OtherCommitsRightAfter(store.steps, other.steps)  # type: ignore[assignment]
        committed = await _commits(store, 5)
        actual = await _actual_versions(store)
        assert len(committed) == 5 and len(actual) == 5
        for commit in committed:
            [seq] = commit.rows.column("seq").to_pylist()
            assert commit.version in (None, actual[seq]), f"seq {seq} at version {actual[seq]}, hinted {commit.version}"
        assert all(c.version is None for c in committed), "the other commit came in between every time"

    run(scenario())


def test_a_commit_alone_names_its_version(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        committed = await _commits(store, 5)
        actual = await _actual_versions(store)
        assert [c.version for c in committed] == [actual[seq] for seq in range(1, 6)]

    run(scenario())
