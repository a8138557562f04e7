"""The store: idempotent creation, recorded num_shards, round trips, batching writer, maintenance."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import reaped, run, spawn

from agentd.store import Store, StoreError
from agentd.store.conversations import (
    ConversationRecord,
    MessageRecord,
    get_conversation,
    insert_conversation,
    insert_messages,
    read_messages,
)
from agentd.store.maintenance import run_maintenance
from agentd.store.sessions import SessionRecord, get_session
from agentd.store.steps import StepRecord, latest_step, latest_steps_since, read_steps
from agentd.store.writer import BatchingWriter
from agentd.timeutil import utcnow


def _step(session_id: str, seq: int) -> StepRecord:
    return StepRecord(
        session_id=session_id, agent_id="agent", shard=1, seq=seq, ts=utcnow(), text=f"t{seq}", state={"seq": seq}
    )


def _session(session_id: str, last_seq: int) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        session_id=session_id,
        agent_id="agent",
        agent_type="joke",
        shard=1,
        status="running",
        context={"subject": "cats", "paused": False},
        last_seq=last_seq,
        created_at=now,
        updated_at=now,
    )


def test_open_is_idempotent_and_refuses_another_shard_count(db_uri: str) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, 16)
        again = await Store.open(db_uri, 16)
        assert again.num_shards == 16
        with pytest.raises(StoreError, match=r"created with num_shards=16, but the config says num_shards=64"):
            await Store.open(db_uri, 64)

    run(scenario())


def test_open_without_create_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no agentd database"):
        run(Store.open(str(tmp_path / "none"), 64, create=False))


def test_concurrent_first_open(db_uri: str, tmp_path: Path) -> None:
    """Several processes creating a fresh database at once all succeed and agree."""
    with reaped() as procs:
        for i in range(4):
            procs.append(spawn("appender.py", db_uri, "16", f"p{i}", "1", "5", str(tmp_path / f"a{i}.json")))
        for proc in procs:
            assert proc.wait(timeout=90) == 0

    async def check() -> int:
        store = await Store.open(db_uri, 16)
        return int(await store.steps.count_rows())

    assert run(check()) == 20


def test_json_columns_round_trip(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 64)
        async with BatchingWriter(store, flush_interval=0.05) as writer:
            generation = await writer.submit([_step("s1", 1), _step("s1", 2)], _session("s1", 2))
            await writer.wait_durable(generation, timeout=10)
        session = await get_session(store.sessions, "s1")
        assert session is not None and session.context == {"subject": "cats", "paused": False}
        steps = await read_steps(store.steps, "s1")
        assert [s.seq for s in steps] == [1, 2] and steps[1].state == {"seq": 2}
        latest = await latest_step(store.steps, "s1")
        assert latest is not None and latest.seq == 2

    run(scenario())


def test_writer_batches_into_few_commits_and_coalesces_snapshots(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 64)
        before = await store.steps.version()
        async with BatchingWriter(store, flush_interval=0.2, flush_max_rows=100_000) as writer:
            for seq in range(1, 501):
                await writer.submit([_step("s1", seq)], _session("s1", seq))
            await writer.flush()
            assert writer.stats.steps == 500
            assert writer.stats.snapshots < 10, "one snapshot per session per flush"
            assert writer.stats.flushes <= 3
            assert writer.stats.last_commit_ms > 0
        assert await store.steps.version() - before <= 3
        session = await get_session(store.sessions, "s1")
        assert session is not None and session.last_seq == 500
        assert await store.sessions.count_rows() == 1

    run(scenario())


def test_writer_flushes_early_at_max_rows(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 64)
        async with BatchingWriter(store, flush_interval=60, flush_max_rows=50) as writer:
            generation = await writer.submit([_step("s1", i) for i in range(1, 51)])
            await writer.wait_durable(generation, timeout=5)  # well before the 60 s interval
        assert await store.steps.count_rows() == 50

    run(scenario())


def test_writer_close_flushes_everything(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 64)
        writer = BatchingWriter(store, flush_interval=60)
        writer.start()
        await writer.submit([_step("s1", 1)], _session("s1", 1))
        await writer.close()
        await writer.close()  # idempotent
        assert await store.steps.count_rows() == 1
        assert await store.sessions.count_rows() == 1

    run(scenario())


def test_messages_insert_exactly_once(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 64)
        now = utcnow()
        assert await insert_conversation(store.conversations, ConversationRecord(conversation_id="c1", created_at=now))
        assert not await insert_conversation(
            store.conversations, ConversationRecord(conversation_id="c1", title="dup", created_at=now)
        )
        conversation = await get_conversation(store.conversations, "c1")
        assert conversation is not None and conversation.title is None
        message = MessageRecord(
            message_id="m1", conversation_id="c1", author_id="u", role="user", text="hi", created_at=now
        )
        assert await insert_messages(store.messages, [message]) == 1
        assert await insert_messages(store.messages, [message]) == 0
        assert [m.text for m in await read_messages(store.messages, "c1")] == ["hi"]

    run(scenario())


def test_maintenance_while_another_process_appends(db_uri: str, tmp_path: Path) -> None:
    """Compaction, cleanup and indexing beside a live writer: no error, no lost row."""

    async def prepare() -> Store:
        store = await Store.open(db_uri, 16)
        for seq in range(1, 41):  # 40 small fragments
            await store.steps.add(StepRecord.to_arrow([_step("base", seq)]))
        return store

    run(prepare())
    out = tmp_path / "appender.json"
    with reaped(spawn("appender.py", db_uri, "16", "live", "20", "60", str(out))) as procs:

        async def maintain() -> list[str]:
            store = await Store.open(db_uri, 16)
            skipped = []
            for _ in range(4):
                report = await run_maintenance(store, cleanup_older_than=600)
                skipped += [t.skipped for t in report.tables if t.skipped]
                await asyncio.sleep(0.2)
            return skipped

        run(maintain())
        assert procs[0].wait(timeout=120) == 0
    assert json.loads(out.read_text())["errors"] == 0

    async def verify() -> tuple[list[int], list[int], set[str]]:
        store = await Store.open(db_uri, 16)
        live = [s.seq for s in await read_steps(store.steps, "live")]
        base = [s.seq for s in await read_steps(store.steps, "base")]
        indexed = {ix.columns[0] for ix in await store.steps.list_indices()}
        return live, base, indexed

    live, base, indexed = run(verify())
    assert live == list(range(1, 20 * 60 + 1))
    assert base == list(range(1, 41))
    assert "session_id" in indexed


def test_list_sessions_filters_by_status_and_shard(db_uri: str) -> None:
    """Worker boot loads only live sessions of its shards: list_sessions(statuses=[...]) filters in the query."""
    from agentd.store.sessions import list_sessions, upsert_sessions

    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        records = []
        for index, status in enumerate(["running", "paused", "stopped", "error", "starting", "stopping"]):
            record = _session(f"s-{status}", 0)
            record.status = status  # type: ignore[assignment]
            record.shard = index % 2
            records.append(record)
        await upsert_sessions(store.sessions, records)
        live = ["starting", "running", "paused", "stopping"]
        found = await list_sessions(store.sessions, shards=[0, 1], statuses=live)
        assert sorted(r.session_id for r in found) == ["s-paused", "s-running", "s-starting", "s-stopping"]
        on_shard_0 = await list_sessions(store.sessions, shards=[0], statuses=live)
        assert sorted(r.session_id for r in on_shard_0) == ["s-running", "s-starting"]
        assert len(await list_sessions(store.sessions, shards=[0, 1])) == 6  # the old call still lists all
        assert await list_sessions(store.sessions, statuses=[]) == []

    run(scenario())


def test_resume_reads_whole_steps_only_of_sessions_ahead_of_their_rows(db_uri: str) -> None:
    """``latest_steps_since``: the newest step of each session whose steps go past its row (a
    crash between the two commits of a flush), an unreadable step only where it is past the row
    (resuming over it could repeat a seq), and nothing of sessions the caller did not ask for."""

    async def scenario() -> None:
        store = await Store.open(db_uri, 4)
        since = utcnow()
        await store.steps.add(StepRecord.to_arrow([_step("ahead", 1), _step("ahead", 2), _step("ahead", 3)]))
        await store.steps.add(StepRecord.to_arrow([_step("even", 1), _step("other", 9)]))
        for session_id, seq in (("even", 2), ("hurt", 4)):  # a step whose state does not parse
            bad = StepRecord.to_arrow([_step(session_id, seq)])
            await store.steps.add(bad.set_column(bad.schema.get_field_index("state"), "state", [["{not json"]]))
        last_seqs = {"ahead": 1, "even": 2, "hurt": 3}
        newest, unreadable = await latest_steps_since(store.steps, [1], since, last_seqs)
        assert {sid: step.seq for sid, step in newest.items()} == {"ahead": 3}
        assert newest["ahead"].state == {"seq": 3}
        assert set(unreadable) == {"hurt"} and "step 4 is unreadable" in unreadable["hurt"]

    run(scenario())
