"""The daemon judges its own health: a gateway that cannot bind its port makes it unhealthy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .daemon import running, write_config

pytestmark = pytest.mark.timeout(120)


def test_a_gateway_that_cannot_bind_its_port_makes_the_daemon_unhealthy(tmp_path: Path) -> None:
    # Another process holds the gateway's port (a second database's daemon, say).
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = write_config(tmp_path)
    text = config.read_text().replace("[gateway]\nenabled = false", f"[gateway]\nenabled = true\nport = {port}")
    config.write_text(text)
    try:
        with running(config, tmp_path / "daemon.log") as daemon:
            deadline = time.monotonic() + 30
            problems: list[str] = []
            while time.monotonic() < deadline:
                status = daemon.status()
                assert status is not None
                problems = status["problems"]
                if any("gateway" in p for p in problems):
                    break
                time.sleep(0.3)
            assert any(str(port) in p and "gateway" in p for p in problems), problems
            assert status["healthy"] is False
            out = subprocess.run(
                [sys.executable, "-m", "agentctl", "--config", str(config), "--json", "daemon", "status"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 1, out.stderr
            health = json.loads(out.stdout)["health"]
            assert health["healthy"] is False and any("gateway" in p for p in health["problems"])
    finally:
        holder.close()


def test_interrupt_help_lists_each_types_guidance_operations() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentctl", "interrupt", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for operation in ("set_subject", "set_style", "set_tone", "set_cooldown", "speak_now"):
        assert operation in out.stdout
    assert '{"type": "set_tone", "tone": "noir"}' in out.stdout
