"""``--follow`` through the gateway: streamed, resumed after the gateway dies, each row once.

The daemon here runs its gateway (the shared fixture's does not, so tests/agentctl/
test_ctl_follow.py covers following by tailing the tables directly).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctlkit import Ctl, Daemon, Lines, free_port, spawn_agentctl, start_daemon, stop_process, write_config

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def gateway_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    port = free_port()
    running = start_daemon(write_config(tmp_path_factory.mktemp("agentctl-gateway"), gateway_port=port))
    try:
        yield running, port
    finally:
        running.kill()


def healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def wait_subscribed(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if healthz(port)["subscriptions"] >= 1:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the follower never subscribed on the gateway")


def gateway_pid(daemon: Daemon) -> int:
    status = daemon.status()
    assert status is not None
    [pid] = [c["pid"] for c in status["children"] if c["role"] == "gateway" and c.get("alive")]
    return int(pid)


def test_steps_follow_streams_from_the_gateway_and_resumes(gateway_daemon: tuple[Daemon, int]) -> None:
    daemon, port = gateway_daemon
    ctl = Ctl(daemon.config)
    sid = ctl.create_joke("--interval", "0.3")
    proc = spawn_agentctl(daemon.config, "--json", "steps", sid, "--follow")
    try:
        lines = Lines(proc)
        lines.until(lambda line: json.loads(line)["seq"] >= 3, 60, "the first steps")
        wait_subscribed(port)
        os.kill(gateway_pid(daemon), signal.SIGKILL)  # the supervisor restarts it; the follower resumes
        first = json.loads(lines.seen[-1])["seq"]
        lines.until(lambda line: json.loads(line)["seq"] >= first + 15, 90, "steps after the gateway died")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
        lines.rest()
    finally:
        stop_process(proc)
    ctl("destroy", sid)
    seqs = [json.loads(line)["seq"] for line in lines.seen]
    assert seqs == list(range(1, len(seqs) + 1)), f"in order, each once, no gap: {seqs}"
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr


def test_conversation_follow_streams_each_message_once(gateway_daemon: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, port = gateway_daemon
    ctl = Ctl(daemon.config)
    cid = ctl("conversation", "create", "stream").stdout.strip()
    ctl("conversation", "post", cid, "before")
    proc = spawn_agentctl(daemon.config, "--json", "conversation", "show", cid, "--follow")
    try:
        lines = Lines(proc)
        lines.until(lambda line: json.loads(line)["text"] == "before", 60, "the existing message")
        wait_subscribed(port)
        for text in ("one", "two", "three"):
            ctl("conversation", "post", cid, text)
        lines.until(lambda line: json.loads(line)["text"] == "three", 60, "the new messages")
        time.sleep(1.0)  # a duplicate would arrive now
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
        lines.rest()
    finally:
        stop_process(proc)
    messages = [json.loads(line) for line in lines.seen]
    assert [m["text"] for m in messages] == ["before", "one", "two", "three"]
    assert set(messages[0]) == {
        "message_id",
        "conversation_id",
        "author_id",
        "role",
        "text",
        "reply_to",
        "meta",
        "created_at",
    }
