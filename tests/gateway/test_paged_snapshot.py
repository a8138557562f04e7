"""Issue 11, finding 11 (gateway part): an agent room's snapshot comes in frames below 1 MiB."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentd.gateway.protocol import SnapshotEvent, SnapshotPageEvent, StepEvent
from agentd.gateway.snapshot import FRAME_BUDGET
from agentd.ids import shard_for
from agentd.store import Store
from agentd.store.sessions import SessionRecord, upsert_sessions
from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow

from .gwtools import SHARDS, Recorder, assert_exact, gateway_settings, running_gateway, until

SESSIONS = 2_000
ONE_MIB = 1024 * 1024


def _session(n: int) -> SessionRecord:
    sid = f"sess-{n:05d}-4a7e0c2b-9d1f-4e55-8c3a"
    now = utcnow()
    return SessionRecord(
        session_id=sid,
        agent_id="a1",
        agent_type="persona",
        shard=shard_for(sid, SHARDS),
        status="running",
        config={"persona": {"name": f"persona {n}", "tone": "dry and precise"}},
        context={"subject": "cats", "paused": False, "notes": "n" * 500},
        iteration=2,
        last_seq=2,
        created_at=now,
        updated_at=now,
    )


def _step(record: SessionRecord, seq: int) -> StepRecord:
    return StepRecord(
        session_id=record.session_id,
        agent_id="a1",
        shard=record.shard,
        seq=seq,
        ts=utcnow(),
        text=f"step {seq}",
        state={"iteration": seq},
    )


@pytest.mark.timeout(120)
def test_agent_room_with_2000_sessions_reaches_a_default_websockets_client(db_uri: str) -> None:
    """~1.3 MB of session rows and 4,000 steps of history: a client with websockets' default
    max_size (1 MiB) gets every session and every step, in frames within the budget, then live."""

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        sessions = [_session(n) for n in range(SESSIONS)]
        await upsert_sessions(store.sessions, sessions)
        await store.steps.add(StepRecord.to_arrow([_step(s, seq) for s in sessions for seq in (1, 2)]))
        state_bytes = sum(len(s.model_dump_json()) for s in sessions)
        assert state_bytes > 1.2 * ONE_MIB, state_bytes  # one frame would be refused
        async with running_gateway(gateway_settings(db_uri)) as gw:
            client = await Recorder.open(gw.port)  # default max_size: 1 MiB

            await client.subscribe("run::a1::*")
            await until(lambda: client.count("run::a1::*") == 2 * SESSIONS, 60, "the whole snapshot")
            await store.steps.add(StepRecord.to_arrow([_step(s, 3) for s in sessions[:5]]))
            await until(lambda: client.count("run::a1::*") == 2 * SESSIONS + 5, 20, "live steps after it")
            assert client.closed is None

            snapshot, *rest = [f for f in client.frames if f["type"] in ("snapshot", "snapshot_page")]
            event = SnapshotEvent.model_validate(snapshot)
            assert event.more is True and event.steps == [] and event.state is not None
            pages = [SnapshotPageEvent.model_validate(f) for f in rest]
            assert len(pages) >= 5 and [p.more for p in pages] == [True] * (len(pages) - 1) + [False]
            ids = [s["session_id"] for s in event.state["sessions"]] + [
                s["session_id"] for p in pages for s in p.sessions
            ]
            assert ids == sorted(s.session_id for s in sessions)
            assert pages[-1].sessions[-1]["context"]["notes"] == "n" * 500
            for frame in client.frames:
                assert len(json.dumps(frame)) < FRAME_BUDGET + 64 * 1024, frame["type"]
            # Every session's state arrives before any step, then history, then live.
            kinds = [f["type"] for f in client.frames]
            assert kinds[: 1 + len(pages)] == ["snapshot"] + ["snapshot_page"] * len(pages)
            for frame in client.frames[1 + len(pages) :]:
                StepEvent.model_validate(frame)
            expected = {s.session_id: 2 for s in sessions} | {s.session_id: 3 for s in sessions[:5]}
            assert_exact(client.steps("run::a1::*"), expected)
            await client.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_single_session_snapshot_keeps_its_shape_and_budget(db_uri: str) -> None:
    """A session room: one snapshot frame (more=false) with the steps that fit in the budget,
    the rest as step events; 3 KB steps, so 500 of them would be a 1.5 MB frame."""

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        record = _session(1)
        await upsert_sessions(store.sessions, [record])
        steps = [_step(record, seq) for seq in range(1, 601)]
        for step in steps:
            step.text = "t" * 3000
        await store.steps.add(StepRecord.to_arrow(steps))
        room = f"run::a1::{record.session_id}"
        async with running_gateway(gateway_settings(db_uri)) as gw:
            client = await Recorder.open(gw.port)
            await client.subscribe(room)
            await until(lambda: client.count(room) == 600, 30, "history")
            (snapshot,) = client.of_type("snapshot")
            event = SnapshotEvent.model_validate(snapshot)
            assert event.more is False and event.state is not None
            assert event.state["session_id"] == record.session_id
            assert 0 < len(event.steps or []) < 100
            assert not client.of_type("snapshot_page")
            assert_exact(client.steps(room), {record.session_id: 600})
            await client.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_trimmed_history_starts_at_the_first_stored_step(db_uri: str) -> None:
    """Retention deletes a session's oldest steps: the snapshot pages from the first stored seq
    instead of stopping at the empty windows below it (session and agent rooms, since 0 or a map)."""

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        young, trimmed = _session(1), _session(2)
        rows = [_step(young, seq) for seq in range(1, 101)] + [_step(trimmed, seq) for seq in range(1001, 1701)]
        await store.steps.add(StepRecord.to_arrow(rows))
        async with running_gateway(gateway_settings(db_uri)) as gw:
            client = await Recorder.open(gw.port)
            await client.subscribe(f"run::a1::{trimmed.session_id}")
            await client.subscribe("run::a1::*")
            second = await Recorder.open(gw.port)
            await second.subscribe("run::a1::*", since={trimmed.session_id: 1600, young.session_id: 50})
            await until(lambda: client.count("run::a1::*") == 800, 30, "agent room from 0")
            await until(lambda: client.count(f"run::a1::{trimmed.session_id}") == 700, 30, "session room")
            await until(lambda: second.count("run::a1::*") == 50 + 100, 30, "agent room from a map")
            await asyncio.sleep(0.2)
            assert client.steps(f"run::a1::{trimmed.session_id}") == {trimmed.session_id: list(range(1001, 1701))}
            assert client.steps("run::a1::*") == {
                young.session_id: list(range(1, 101)),
                trimmed.session_id: list(range(1001, 1701)),
            }
            assert second.steps("run::a1::*") == {
                young.session_id: list(range(51, 101)),
                trimmed.session_id: list(range(1601, 1701)),
            }
            await client.close()
            await second.close()

    asyncio.run(scenario())
