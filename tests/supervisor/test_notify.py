"""The daemon speaks sd_notify: READY, WATCHDOG, RELOADING, STOPPING, on a socket the test owns."""

from __future__ import annotations

import contextlib
import itertools
import os
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
    # Pings come from their own task from the start (they prove the loop turns), READY=1 once
    # every worker is ready: the watchdog may well come first.
    assert first["READY"] < first["RELOADING"] < first["STOPPING"]
    assert "WATCHDOG" in order[first["READY"] : first["RELOADING"]], "pings continue after READY"
    assert order[order.index("RELOADING") + 1 :].count("READY") >= 1, "READY=1 again after the reload"
    assert any("MONOTONIC_USEC" in m for m in messages if "RELOADING" in m)
    assert any(m.get("STATUS", "").startswith("2 workers") for m in messages)


def test_watchdog_pings_continue_through_a_slow_reload(tmp_path: Path) -> None:
    """Finding 9: a reload that waits on a worker slow to stop must not silence the watchdog.

    Worker 0 is SIGSTOPped, then SIGHUP restarts the workers: the reload waits stop_timeout
    (10 s) for it before SIGKILL. WatchdogSec is 2 s here; no gap between WATCHDOG=1 may reach it.
    """
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    watchdog_sec = 2.0
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(int(watchdog_sec * 1_000_000))}
    stamped: list[tuple[float, dict[str, str]]] = []

    def collect(until: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            stamped.append((time.monotonic(), fields))
            if until in fields:
                return
        raise AssertionError(f"no {until} within {timeout}s; got {[f for _, f in stamped]}")

    config = write_config(tmp_path, warm_spare="false")
    try:
        with running(config, tmp_path / "daemon.log", wait=False, env=env) as daemon:
            collect("READY", 60)
            frozen = daemon.workers()[0]["pid"]
            os.kill(frozen, signal.SIGSTOP)
            try:
                config.write_text(config.read_text().replace("heartbeat_interval = 0.3", "heartbeat_interval = 0.25"))
                daemon.signal(signal.SIGHUP)
                collect("RELOADING", 10)
                reload_started = stamped[-1][0]
                collect("READY", 60)
                reload_took = stamped[-1][0] - reload_started
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(frozen, signal.SIGCONT)
            collect("WATCHDOG", 5)
            assert "did not stop in 10s; SIGKILL" in daemon.tail(50_000)
    finally:
        sock.close()
    assert reload_took >= 9, f"the reload was not slow ({reload_took:.1f}s): the test proves nothing"
    pings = [t for t, fields in stamped if fields.get("WATCHDOG") == "1"]
    assert not any(fields.get("WATCHDOG") == "trigger" for _, fields in stamped)
    during = [t for t in pings if reload_started - watchdog_sec <= t]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert gaps and max(gaps) < watchdog_sec, f"watchdog gaps during a {reload_took:.1f}s reload: {gaps}"
