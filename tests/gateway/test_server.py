"""Server behaviour: bad frames, token, limits, /healthz, conv rooms, shutdown codes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import silent_websocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from agentd.gateway import EXIT_CONFIG, CloseCodes, Gateway, GatewayConfigError, HealthReport, run_gateway
from agentd.store import Store

from .gwtools import (
    REPO,
    SHARDS,
    Recorder,
    assert_exact,
    gateway_settings,
    http_get,
    procs,
    running_gateway,
    until,
    wait_exit,
)

BAD_FRAMES: list[str | bytes] = [
    "not json{",
    "[1, 2]",
    '"a string"',
    '{"op": "dance"}',
    '{"no_op": 1}',
    '{"op": "subscribe", "room": "nope"}',
    '{"op": "subscribe", "room": "run::a1"}',
    '{"op": "subscribe", "room": "run::a 1::s1"}',
    '{"op": "subscribe", "room": "run::a1::s1", "since": -1}',
    '{"op": "subscribe", "room": "run::a1::s1", "since": "5"}',
    '{"op": "subscribe", "room": "run::a1::s1", "since": true}',
    '{"op": "subscribe", "room": "run::a1::s1", "extra": 1}',
    '{"op": "subscribe", "room": "conv::c1", "since": {"s1": 1}}',
    '{"op": "unsubscribe"}',
    '{"op": "ping", "id": [1]}',
    b"\xff\xfe\x00",
    "x" * 70_000,  # over max_frame_bytes (65,536), under the hard limit: an error event
]


@pytest.mark.timeout(60)
def test_500_malformed_frames_500_errors_connection_usable_others_unaffected(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            watcher = await Recorder.open(gw.port)
            await watcher.subscribe("run::a1::s1")
            bad = await Recorder.open(gw.port)
            with procs(tmp_path) as p:
                writer = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1", "--upto", "200", "--batch", "2")
                for i in range(500):
                    await bad.send(BAD_FRAMES[i % len(BAD_FRAMES)])
                await until(lambda: len(bad.of_type("error")) == 500, 20, "500 error events")
                await bad.send({"op": "ping", "id": 7})
                await bad.subscribe("run::a1::s1")
                await until(lambda: bad.of_type("pong") and bad.of_type("snapshot"), 10, "still usable")
                assert await wait_exit(writer, 30) == 0, p.stderr("w")
            await until(lambda: watcher.count("run::a1::s1") == 200, 15, "watcher delivery")
            await until(lambda: bad.steps("run::a1::s1").get("s1", [0])[-1] == 200, 15, "bad client delivery")
            assert_exact(watcher.steps("run::a1::s1"), {"s1": 200})
            assert bad.closed is None and watcher.closed is None
            errors = bad.of_type("error")
            codes = {e["code"] for e in errors}
            assert codes == {"bad_json", "bad_frame", "unknown_op", "bad_room", "invalid", "too_big"}
            assert errors[3] == {
                "type": "error",
                "error": "unknown op 'dance'; expected one of subscribe, unsubscribe, ping, action, post",
                "code": "unknown_op",
                "op": "dance",
                "room": None,
            }
            assert bad.of_type("pong") == [{"type": "pong", "id": 7}]
            # Above the hard limit (4 x max_frame_bytes) websockets closes that connection with 1009.
            huge = await Recorder.open(gw.port, max_size=None)
            await huge.send("x" * 300_000)
            await until(lambda: huge.closed is not None, 10, "1009 close")
            assert huge.closed is not None and huge.closed.rcvd is not None
            assert huge.closed.rcvd.code == CloseCodes.MESSAGE_TOO_BIG
            await bad.send({"op": "unsubscribe", "room": "run::a1::s1"})
            await until(lambda: bad.of_type("unsubscribed"), 5, "unsubscribed")
            assert gw.stats.delivery.errors_sent == 500
            await bad.close()
            await watcher.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_token_required_on_non_loopback_and_checked_before_upgrade(db_uri: str) -> None:
    with pytest.raises(GatewayConfigError, match="without a token"):
        Gateway(gateway_settings(db_uri, host="0.0.0.0"))
    assert run_gateway(gateway_settings(db_uri, host="0.0.0.0")) == EXIT_CONFIG
    assert run_gateway(gateway_settings(db_uri, host="")) == EXIT_CONFIG

    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, host="0.0.0.0", token="s3cret")) as gw:
            url = f"ws://127.0.0.1:{gw.port}/"
            for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(url, **kwargs)  # type: ignore[arg-type]
                assert refused.value.response.status_code == 401
            with pytest.raises(InvalidStatus):
                await connect(url + "?token=wrong")
            by_header = await Recorder.open(gw.port, additional_headers={"Authorization": "Bearer s3cret"})
            by_query = await Recorder.open(gw.port, path="/?token=s3cret")
            for client in (by_header, by_query):
                await client.subscribe("run::a1::s1")
            await until(lambda: by_header.of_type("snapshot") and by_query.of_type("snapshot"), 10, "snapshots")
            assert gw.stats.delivery.rejected_unauthorized == 3
            status, headers, _ = await http_get(gw.port, "/healthz")  # no data in it: no token needed
            assert status == 200 and headers["content-type"] == "application/json"
            await by_header.close()
            await by_query.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_healthz_and_connection_limit(db_uri: str) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, max_connections=2)) as gw:
            a = await Recorder.open(gw.port)
            b = await Recorder.open(gw.port)
            await a.subscribe("run::a1::s1")
            await b.subscribe("run::a1::*")
            await b.subscribe("conv::c1")
            await until(lambda: len(a.of_type("snapshot")) + len(b.of_type("snapshot")) == 3, 10, "snapshots")
            with pytest.raises(InvalidStatus) as full:
                await connect(f"ws://127.0.0.1:{gw.port}/")
            assert full.value.response.status_code == 503
            status, headers, body = await http_get(gw.port, "/healthz")
            assert status == 200 and headers["content-type"] == "application/json"
            report = HealthReport.model_validate_json(body)
            assert report.status == "ok"
            assert (report.connections, report.subscriptions, report.rooms) == (2, 3, 3)
            assert set(report.tail) == {"steps", "messages"}
            assert report.tail["steps"].lag_versions == 0 and report.tail["steps"].polls > 0
            assert report.delivered.snapshots == 3 and report.delivered.rejected_full == 1
            await a.close()
            await b.close()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_conversation_room_messages_once_in_order_and_resume(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            early = await Recorder.open(gw.port)
            await early.subscribe("conv::c1")
            with procs(tmp_path) as p:
                common = ("--conversation", "c1", "--messages", "40", "--upto", "0", "--interval", "0.01")
                w1 = p.writer(db_uri, "m1", "--agent", "alice", *common)
                w2 = p.writer(db_uri, "m2", "--agent", "bob", *common)
                await until(lambda: len(early.of_type("message")) >= 25, 20, "some messages")
                late = await Recorder.open(gw.port)
                await late.subscribe("conv::c1", since=10)
                assert await wait_exit(w1, 30) == 0, p.stderr("m1")
                assert await wait_exit(w2, 30) == 0, p.stderr("m2")
            await until(lambda: len(early.of_type("message")) == 80, 15, "early: all messages")
            await until(lambda: late.of_type("snapshot"), 10, "late snapshot")

            def late_ids() -> list[str]:
                snap = late.of_type("snapshot")[0]["messages"]
                return [m["message_id"] for m in snap] + [m["message_id"] for m in late.of_type("message")]

            await until(lambda: len(late_ids()) == 70, 15, "late: messages after since=10")
            await asyncio.sleep(0.2)
            messages = early.of_type("message")
            assert [m["seq"] for m in messages] == list(range(1, 81))
            assert len({m["message_id"] for m in messages}) == 80
            for author in ("alice", "bob"):
                texts = [m["text"] for m in messages if m["author_id"] == author]
                assert texts == [f"message {n} from {author}" for n in range(1, 41)]
            assert late_ids() == [m["message_id"] for m in messages][10:]
            snapshot = late.of_type("snapshot")[0]
            assert snapshot["messages"][0]["seq"] == 11 and "steps" not in snapshot
            assert snapshot["state"] == {"conversation": None, "participants": []}
            await early.close()
            await late.close()

    asyncio.run(scenario())


def _gateway_process(db_uri: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``run_gateway`` in a process of its own (its signals are the process's), logging to a file."""
    asyncio.run(Store.open(db_uri, SHARDS))
    code = (
        "import sys; from agentd.config import Settings; from agentd.gateway import run_gateway; "
        f"sys.exit(run_gateway(Settings(storage={{'uri': {db_uri!r}, 'num_shards': {SHARDS}}}, "
        "gateway={'port': 0, 'poll_interval': 0.02})))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=log_file)
    return proc, log_path


def _listening_port(proc: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"gateway listening on ws://[^:]+:(\d+)", log_path.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(log_path.read_text())


@pytest.mark.timeout(60)
def test_run_gateway_process_sigterm_closes_with_1012_and_exits_0(db_uri: str, tmp_path: Path) -> None:
    proc, log_path = _gateway_process(db_uri, tmp_path)
    try:
        port = _listening_port(proc, log_path)

        async def scenario() -> ConnectionClosedError | None:
            client = await Recorder.open(port)
            await client.subscribe("run::a1::s1")
            await until(lambda: client.of_type("snapshot"), 10, "snapshot")
            os.kill(proc.pid, signal.SIGTERM)
            await until(lambda: client.closed is not None, 10, "close frame")
            return client.closed  # type: ignore[return-value]

        closed = asyncio.run(scenario())
        assert closed is not None and closed.rcvd is not None
        assert closed.rcvd.code == CloseCodes.SERVICE_RESTART == 1012
        assert "since" in closed.rcvd.reason
        assert proc.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.timeout(60)
def test_a_second_sigterm_after_a_second_forces_the_stop_one_within_a_second_does_not(
    db_uri: str, tmp_path: Path
) -> None:
    """A person who signals again while the close waits (a client that never answers the close
    frame: 5 s) forces the stop; a repeat within a second is the same request (the kernel's
    parent-death signal comes once per thread of a dying supervisor, milliseconds apart)."""
    proc, log_path = _gateway_process(db_uri, tmp_path)
    silent: socket.socket | None = None
    try:
        port = _listening_port(proc, log_path)
        silent = silent_websocket(port)
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)  # the same request
        time.sleep(1.5)
        assert proc.poll() is None, "the close did not wait for the silent client"
        os.kill(proc.pid, signal.SIGTERM)  # a person insisting
        assert proc.wait(timeout=15) == 1, log_path.read_text()
        log = log_path.read_text()
        assert "received SIGTERM again: already stopping" in log, log
        assert log.count("received SIGTERM again: forcing the stop") == 1, log
    finally:
        if silent is not None:
            silent.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
