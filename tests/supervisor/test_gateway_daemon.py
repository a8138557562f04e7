"""The daemon's own gateway streams real workers' steps: once, in order, across a worker kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

from websockets.asyncio.client import connect

from .daemon import all_steps, create_jokes, running, write_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_subscribers_see_every_step_once_across_a_worker_kill(tmp_path: Path) -> None:
    port = _free_port()
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            "[gateway]\nenabled = false", f"[gateway]\nenabled = true\nport = {port}\npoll_interval = 0.02"
        )
    )
    with running(config, tmp_path / "daemon.log") as daemon:
        settings = daemon.settings
        ids = create_jokes(settings, 6, prefix="g")
        received: dict[str, list[int]] = {sid: [] for sid in ids}

        async def subscribe_and_kill() -> None:
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                for sid in ids:
                    await ws.send(json.dumps({"op": "subscribe", "room": f"run::{sid}::{sid}", "since": 0}))
                killed = False
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if frame["type"] == "snapshot":
                        sid = frame["state"]["session_id"]
                        received[sid] += [s["seq"] for s in frame["steps"]]
                    elif frame["type"] == "step":
                        received[frame["session_id"]].append(frame["seq"])
                    if not killed and time.monotonic() > deadline - 6:
                        os.kill(daemon.workers()[0]["pid"], signal.SIGKILL)
                        killed = True

        asyncio.run(subscribe_and_kill())
        health = daemon.status()
        assert health is not None and health["gateway"] and "error" not in health["gateway"], health
    stored: dict[str, list[int]] = {}
    for step in all_steps(settings):
        stored.setdefault(step.session_id, []).append(step.seq)
    for sid in ids:
        got = received[sid]
        assert got == list(range(1, len(got) + 1)), f"{sid}: delivered out of order, twice or with a gap: {got}"
        assert len(got) >= 10, f"{sid}: only {len(got)} steps delivered"
        assert set(got) <= set(stored[sid])
