"""A subscriber that stops reading is closed with 4008 while a normal one keeps its latency."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from agentd.gateway import CloseCodes
from agentd.store import Store

from .gwtools import (
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


def _small_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a client that does not read fills up fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@pytest.mark.timeout(60)
def test_never_reading_client_is_closed_with_4008_others_unaffected(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, max_queue=20)) as gw:
            normal = await Recorder.open(gw.port)
            await normal.subscribe("run::a1::s1")
            # max_queue=1: the client library stops reading the socket once one frame is pending.
            slow = await connect(f"ws://127.0.0.1:{gw.port}/", sock=_small_socket(gw.port), max_queue=1)
            await slow.send(json.dumps({"op": "subscribe", "room": "run::a1::s1", "since": 0}))
            await until(lambda: normal.of_type("snapshot") and gw.registry.subscription_count == 2, 10, "subscribed")
            # Shrink the server side's kernel send buffer of the slow connection too (a slow link):
            # otherwise Linux autotuning lets megabytes pile up in kernel buffers first.
            slow_port = slow.local_address[1]
            (server_side,) = [c for c in gw.connections if c.ws.remote_address[1] == slow_port]
            server_side.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            with procs(tmp_path) as p:
                args = ("--agent", "a1", "--sessions", "s1", "--upto", "600", "--batch", "3", "--pad", "2000")
                writer = p.writer(db_uri, "w", *args, "--interval", "0.005", "--no-sessions")
                await until(lambda: gw.stats.delivery.overflow_disconnects == 1, 30, "slow client overflow")
                # The slow client now reads what is buffered and finds the close frame behind it.
                received = 0
                with pytest.raises(ConnectionClosedError) as closed:
                    async with asyncio.timeout(10):
                        while True:
                            await slow.recv()
                            received += 1
                assert await wait_exit(writer, 30) == 0, p.stderr("w")
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CloseCodes.SLOW_CONSUMER == 4008
            assert "resubscribe with since" in closed.value.rcvd.reason
            assert 0 < received < 600
            await until(lambda: normal.count("run::a1::s1") == 600, 15, "normal client")
            assert_exact(normal.steps("run::a1::s1"), {"s1": 600})
            assert normal.closed is None
            # Latency of the normal client: commit (writer's clock) to receipt, after the overflow too.
            steps = normal.of_type("step")
            at = dict(zip((id(f) for f in normal.frames), normal.received_at, strict=True))
            lat = sorted(at[id(f)] - f["data"]["t_write"] for f in steps)
            p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
            print(f"normal client latency p50={p50 * 1000:.1f} ms p99={p99 * 1000:.1f} ms")
            assert p50 < 0.5 and p99 < 2.0
            assert gw.registry.subscription_count == 1
            status, _, body = await http_get(gw.port, "/healthz")
            health = json.loads(body)
            assert status == 200 and health["delivered"]["overflow_disconnects"] == 1
            assert health["subscriptions"] == 1 and health["connections"] == 1
            await normal.close()

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 50


@pytest.mark.timeout(60)
def test_burst_larger_than_the_queue_reaches_a_reading_client(db_uri: str, tmp_path: Path) -> None:
    """One commit of 400 steps with max_queue=20: the tail paces the offer, nobody is dropped."""

    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, max_queue=20)) as gw:
            clients = [await Recorder.open(gw.port) for _ in range(3)]
            for client in clients:
                await client.subscribe("run::a1::s1")
                await client.subscribe("run::a1::*")
            await until(lambda: all(len(c.of_type("snapshot")) == 2 for c in clients), 10, "snapshots")
            with procs(tmp_path) as p:
                w = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1", "--upto", "400", "--batch", "400")
                assert await wait_exit(w, 30) == 0, p.stderr("w")
            await until(lambda: all(c.count("run::a1::*") == 400 for c in clients), 15, "burst delivered")
            for client in clients:
                assert_exact(client.steps("run::a1::s1"), {"s1": 400})
                assert_exact(client.steps("run::a1::*"), {"s1": 400})
                assert client.closed is None
                await client.close()
            assert gw.stats.delivery.overflow_disconnects == 0

    asyncio.run(scenario())
