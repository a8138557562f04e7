"""A client in another language (Node's built-in WebSocket) subscribes and receives steps."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from agentd.store import Store

from .gwtools import SHARDS, gateway_settings, procs, running_gateway, wait_exit

NODE = shutil.which("node")
SCRIPT = Path(__file__).parent / "node_client.mjs"


def _node_flags() -> list[str] | None:
    """Flags that give Node a global WebSocket (built in from 22, behind a flag on 20/21)."""
    assert NODE is not None
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            [NODE, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
            capture_output=True,
            timeout=20,
        )
        if probe.returncode == 0:
            return flags
    return None


@pytest.mark.timeout(60)
@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_node_client_subscribes_and_receives_steps(db_uri: str, tmp_path: Path) -> None:
    flags = _node_flags()
    if flags is None:
        pytest.skip("this node has no global WebSocket, even with --experimental-websocket")
    assert NODE is not None

    async def scenario() -> dict[str, object]:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri, token="node-token")) as gw:
            with procs(tmp_path) as p:
                w = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1,s2", "--upto", "60", "--batch", "3")
                assert await wait_exit(w, 30) == 0, p.stderr("w")
                url = f"ws://127.0.0.1:{gw.port}/?token=node-token"
                node = await asyncio.create_subprocess_exec(
                    NODE, *flags, str(SCRIPT), url, "run::a1::s1", "20", "60",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
                # While node waits for live steps, write 20 more.
                w2 = p.writer(db_uri, "w2", "--agent", "a1", "--sessions", "s1,s2", "--upto", "80", "--batch", "3")
                try:
                    async with asyncio.timeout(40):
                        out, err = await node.communicate()
                finally:
                    if node.returncode is None:
                        os.kill(node.pid, signal.SIGKILL)
                        await node.wait()
                assert await wait_exit(w2, 30) == 0, p.stderr("w2")
            assert node.returncode == 0, (out, err)
            return dict(json.loads(out.decode().strip().splitlines()[-1]))

    result = asyncio.run(scenario())
    assert result["seqs"] == list(range(21, 81))
    others = result["others"]
    assert isinstance(others, list)
    assert {"type": "pong", "id": "node"} in others
    assert any(o["type"] == "error" and o["code"] == "bad_json" for o in others)
    state = result["state"]
    assert isinstance(state, dict) and state["session_id"] == "s1"
