"""Issue 11, finding 14: deeply nested frames, and exact resume of agent rooms after 1012/4008."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentd.gateway import CloseCodes
from agentd.gateway.protocol import OVERFLOW_REASON, RESTART_REASON, ErrorEvent, parse_client_frame
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

DEPTH = 100_000


def test_nested_frames_decode_to_error_events() -> None:
    lists = "[" * DEPTH + "]" * DEPTH
    for frame in (lists, '{"op":"ping","id":' + lists + "}", '{"op":"subscribe","room":' + lists + "}"):
        event = parse_client_frame(frame)
        assert isinstance(event, ErrorEvent) and event.code == "bad_json", event
        assert "nested" in event.error
    within = '{"op":"ping","id":' + "[" * 500 + "]" * 500 + "}"  # decodes; the model refuses it
    event = parse_client_frame(within)
    assert isinstance(event, ErrorEvent) and event.code == "invalid", event


def test_close_reasons_tell_agent_rooms_to_resume_per_session() -> None:
    for reason in (RESTART_REASON, OVERFLOW_REASON):
        assert len(reason.encode()) <= 123, reason  # a close frame's reason limit
        assert 'run::<agent>::* rooms: {"<session_id>": <last seq>}' in reason
        assert "since=<last seq>" in reason


@pytest.mark.timeout(60)
def test_deeply_nested_frame_within_the_size_limit_gets_an_error_event(db_uri: str) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, max_frame_bytes=300_000)) as gw:
            client = await Recorder.open(gw.port)
            nested = "[" * DEPTH + "]" * DEPTH
            assert len(nested) <= 300_000
            await client.send(nested)
            await client.send('{"op":"ping","id":' + nested + "}")
            await client.send({"op": "ping", "id": 1})
            await until(lambda: client.of_type("pong"), 10, "pong after the nested frames")
            assert client.closed is None
            errors = client.of_type("error")
            assert [e["code"] for e in errors] == ["bad_json", "bad_json"], errors
            await client.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_agent_room_refuses_one_integer_since(db_uri: str) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            client = await Recorder.open(gw.port)
            await client.subscribe("run::a1::*", since=5)
            await client.subscribe("run::a1::*", since=0)
            await until(lambda: client.of_type("error") and client.of_type("snapshot"), 10, "error and snapshot")
            (error,) = client.of_type("error")
            assert error["code"] == "invalid" and error["room"] == "run::a1::*"
            assert '{"<session_id>": <last seq>' in error["error"]
            await client.close()

    asyncio.run(scenario())


def _last_per_session(client: Recorder, room: str) -> dict[str, int]:
    return {sid: seqs[-1] for sid, seqs in client.steps(room).items()}


@pytest.mark.timeout(90)
def test_agent_room_resumes_exactly_after_a_gateway_restart(db_uri: str, tmp_path: Path) -> None:
    """Sessions of one agent at different seqs: the client is closed with 1012 mid-stream,
    follows the close reason (a since map built from what it received) on a new gateway, and
    has every step of every session exactly once, in order."""
    room = "run::a1::*"

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        with procs(tmp_path) as p:
            fast = ("--agent", "a1", "--sessions", "s1,s2", "--upto", "300", "--batch", "2", "--interval", "0.01")
            slow = ("--agent", "a1", "--sessions", "s3", "--upto", "60", "--batch", "1", "--interval", "0.03")
            async with running_gateway(gateway_settings(db_uri)) as gw:
                first = await Recorder.open(gw.port)
                await first.subscribe(room)
                await until(lambda: first.of_type("snapshot"), 10, "snapshot")
                w1 = p.writer(db_uri, "w1", *fast)
                w2 = p.writer(db_uri, "w2", *slow)
                await until(lambda: first.count(room) > 80, 20, "steps before the restart")
            # running_gateway's exit closed every connection with 1012.
            await until(lambda: first.closed is not None, 10, "close frame")
            assert first.closed is not None and first.closed.rcvd is not None
            assert first.closed.rcvd.code == CloseCodes.SERVICE_RESTART
            assert first.closed.rcvd.reason == RESTART_REASON
            since = _last_per_session(first, room)
            assert len(set(since.values())) > 1, since  # sessions really were at different seqs
            async with running_gateway(gateway_settings(db_uri)) as gw2:
                second = await Recorder.open(gw2.port)
                await second.subscribe(room, since=since)
                assert await wait_exit(w1, 30) == 0, p.stderr("w1")
                assert await wait_exit(w2, 30) == 0, p.stderr("w2")
                last = await db_last_seqs(store)
                assert last == {"s1": 300, "s2": 300, "s3": 60}
                missed = sum(last.values()) - sum(since.values())
                await until(lambda: second.count(room) == missed, 20, "the rest after the resume")
                await asyncio.sleep(0.3)  # a duplicate would arrive now
                assert not second.of_type("error")
                combined = first.steps(room)
                for sid, seqs in second.steps(room).items():
                    combined.setdefault(sid, []).extend(seqs)
                assert_exact(combined, last)
                await second.close()

    asyncio.run(scenario())


def test_error_event_for_nested_frame_is_valid_json() -> None:
    event = parse_client_frame("[" * DEPTH)
    assert isinstance(event, ErrorEvent)
    assert json.loads(event.model_dump_json())["code"] == "bad_json"
