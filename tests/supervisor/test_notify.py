"""The daemon speaks sd_notify: READY, WATCHDOG, RELOADING, STOPPING, on a socket the test owns."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from .daemon import running, write_config


def _collect(sock: socket.socket, until: str, timeout: float, into: list[dict[str, str]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        into.append(fields)
        if until in fields:
            return
    raise AssertionError(f"no {until} within {timeout}s; got {into}")


def test_notify_sequence(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    messages: list[dict[str, str]] = []
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}
    try:
        with running(write_config(tmp_path), tmp_path / "daemon.log", wait=False, env=env) as daemon:
            _collect(sock, "READY", 60, messages)
            _collect(sock, "WATCHDOG", 5, messages)
            daemon.signal(signal.SIGHUP)
            _collect(sock, "RELOADING", 10, messages)
            _collect(sock, "READY", 30, messages)
            daemon.signal(signal.SIGTERM)
            _collect(sock, "STOPPING", 10, messages)
            assert daemon.wait(30) == 0
    finally:
        sock.close()
    order = [key for m in messages for key in ("READY", "WATCHDOG", "RELOADING", "STOPPING") if key in m]
    first = {key: order.index(key) for key in ("READY", "WATCHDOG", "RELOADING", "STOPPING")}
    assert first["READY"] < first["WATCHDOG"] < first["RELOADING"] < first["STOPPING"]
    assert order[order.index("RELOADING") + 1 :].count("READY") >= 1, "READY=1 again after the reload"
    assert any("MONOTONIC_USEC" in m for m in messages if "RELOADING" in m)
    assert any(m.get("STATUS", "").startswith("2 workers") for m in messages)
