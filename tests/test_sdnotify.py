"""SdNotifier against real AF_UNIX datagram sockets, as systemd would receive them."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentd.sdnotify import SdNotifier


def _recv_fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096)
    assert data.endswith(b"\n")
    fields = {}
    for line in data.decode().splitlines():
        key, sep, value = line.partition("=")
        assert sep, line
        fields[key] = value
    return fields


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify")
    sock.bind(address)
    sock.settimeout(2)
    yield address, sock
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"agentd-test-{uuid.uuid4().hex}"
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield "@" + name, sock
    sock.close()


def test_sequence_on_path_socket(path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    address, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = SdNotifier()
    assert notifier.enabled

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.ready("2 workers ready")
    assert notifier.watchdog()
    assert notifier.reloading()
    assert notifier.ready()
    assert notifier.status("line one\nline two")
    assert notifier.extend_timeout(1.5)
    assert notifier.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.close()

    assert _recv_fields(sock) == {"READY": "1", "STATUS": "2 workers ready"}
    assert _recv_fields(sock) == {"WATCHDOG": "1"}
    reloading = _recv_fields(sock)
    assert reloading.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert _recv_fields(sock) == {"READY": "1"}
    # A newline in free text must not smuggle in a second field.
    assert _recv_fields(sock) == {"STATUS": "line one line two"}
    assert _recv_fields(sock) == {"EXTEND_TIMEOUT_USEC": "1500000"}
    assert _recv_fields(sock) == {"STOPPING": "1"}


def test_abstract_socket(abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    notifier = SdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.notify(READY=True, STATUS="up", X_AGENTD_WORKERS=3)
    assert _recv_fields(sock) == {"READY": "1", "STATUS": "up", "X_AGENTD_WORKERS": "3"}
    notifier.close()
    notifier.close()


def test_unset_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SdNotifier()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False


def test_send_errors_do_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    caplog.set_level("DEBUG", logger="agentd.sdnotify")
    assert notifier.ready() is False
    assert "sd_notify" in caplog.text
    # A relative path is not something systemd hands out: disabled, with a warning.
    assert not SdNotifier({"NOTIFY_SOCKET": "relative/sock"}).enabled


def test_full_receiver_queue_does_not_block(path_socket: tuple[str, socket.socket]) -> None:
    address, _sock = path_socket
    notifier = SdNotifier({"NOTIFY_SOCKET": address})
    started = time.monotonic()
    results = [notifier.status("x" * 1000) for _ in range(5000)]
    assert time.monotonic() - started < 5
    assert results[0] is True
    assert results[-1] is False  # nobody reads: the queue filled up and sends failed softly


def test_invalid_fields_raise() -> None:
    notifier = SdNotifier({"NOTIFY_SOCKET": "@unused"})
    with pytest.raises(ValueError):
        notifier.notify(ready="1")
    with pytest.raises(ValueError):
        notifier.notify(STATUS="a\nREADY=1")
    with pytest.raises(ValueError):
        notifier.notify()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "junk"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert SdNotifier(env).watchdog_interval() == expected


def test_unset_environment(monkeypatch: pytest.MonkeyPatch, abstract_socket: tuple[str, socket.socket]) -> None:
    address, sock = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SdNotifier(unset_environment=True)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    # The notifier kept what it read: children no longer inherit it, we still notify.
    assert notifier.watchdog_interval() == 1.0
    assert notifier.watchdog()
    assert _recv_fields(sock) == {"WATCHDOG": "1"}
    notifier.close()


def test_watchdog_trigger(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = SdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.watchdog_trigger()
    assert _recv_fields(sock) == {"WATCHDOG": "trigger"}
    assert notifier.watchdog_trigger(status="stuck:\nworker-0")
    assert _recv_fields(sock) == {"WATCHDOG": "trigger", "STATUS": "stuck: worker-0"}


def test_watchdog_task_pings_from_the_loop_then_triggers_when_stuck(path_socket: tuple[str, socket.socket]) -> None:
    """Pings every half WatchdogSec while the loop turns; WATCHDOG=trigger once stuck, then silence."""
    import asyncio

    from agentd.supervision.watchdog import Watchdog

    address, sock = path_socket
    notifier = SdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})  # pings every 0.1 s
    stuck: list[str] = []
    watchdog = Watchdog(notifier, lambda: stuck[0] if stuck else None, lambda: "2 workers")

    received: list[dict[str, str]] = []

    def drain() -> None:  # as systemd would: the queue of a datagram socket is short (10)
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(_recv_fields(sock))

    reader = threading.Thread(target=drain)
    reader.start()

    async def go() -> None:
        task = asyncio.create_task(watchdog.run())
        await asyncio.sleep(0.55)
        stuck.append("worker-0 has not been ready for 200s")
        await asyncio.wait_for(task, 1)

    asyncio.run(go())
    reader.join(5)
    pings = [m for m in received if m.get("WATCHDOG") == "1"]
    assert 4 <= len(pings) <= 8, received
    assert received[-1] == {"WATCHDOG": "trigger", "STATUS": "stuck: worker-0 has not been ready for 200s"}
    assert watchdog.triggered and watchdog.pings == len(pings)


def test_watchdog_task_is_idle_without_watchdog_usec(path_socket: tuple[str, socket.socket]) -> None:
    import asyncio

    from agentd.supervision.watchdog import Watchdog

    address, _ = path_socket
    watchdog = Watchdog(SdNotifier({"NOTIFY_SOCKET": address}), lambda: None)
    asyncio.run(asyncio.wait_for(watchdog.run(), 1))  # returns at once: nothing to ping
    assert watchdog.pings == 0


def test_progress_is_stuck_only_past_the_longest_stop_and_start() -> None:
    from agentd.config import DaemonConfig
    from agentd.supervision.watchdog import Progress, stuck_after

    cfg = DaemonConfig(workers=2, boot_timeout=0.1, stop_timeout=0.05, restart_backoff_max=0.0)
    assert stuck_after(cfg, 0.0) == pytest.approx(0.2)
    progress = Progress(margin=0.0)
    assert progress.stuck(cfg, {0, 1}) is None
    assert progress.stuck(cfg, {0}) is None  # slot 1 just went down: being handled
    time.sleep(0.25)
    assert progress.stuck(cfg, {0}) == "worker-1 has not been ready for 0s"
    assert progress.stuck(cfg, {0, 1}) is None  # back: forgotten
    with progress.handling("signal"):
        assert progress.stuck(cfg, {0, 1}) is None
        time.sleep(0.25)
        assert progress.stuck(cfg, {0, 1}) == "handling 'signal' for 0s"
    assert progress.stuck(cfg, {0, 1}) is None
