"""Start the real daemon (`python -m agentd run`) on a temp database and drive it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import REPO

from agentd.config import load_settings
from agentd.control import DaemonUnreachable, request_sync
from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.steps import StepRecord

BASE_CONFIG = """
[daemon]
workers = {workers}
heartbeat_interval = 0.3
heartbeat_timeout = {heartbeat_timeout}
stop_timeout = 10
crash_loop_restarts = {crash_loop_restarts}
crash_loop_window = 60
warm_spare = {warm_spare}
[storage]
uri = "{db}"
num_shards = 16
[writer]
flush_interval = 0.05
[queue]
poll_interval = 0.1
lease = 5
[runtime]
heartbeat_interval = 0.2
[gateway]
enabled = false
[maintenance]
enabled = false
[metrics]
port = 0
"""


def write_config(tmp_path: Path, **values: Any) -> Path:
    params: dict[str, Any] = {
        "workers": 2,
        "heartbeat_timeout": 10,
        "crash_loop_restarts": 5,
        "warm_spare": "true",
        "db": str(tmp_path / "db"),
    }
    params.update(values)
    path = tmp_path / "config.toml"
    path.write_text(BASE_CONFIG.format(**params))
    return path


class Daemon:
    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.settings = load_settings(config)
        self.log = log
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "--config", str(config), "run"],
            env=full_env,
            stderr=log.open("ab"),
            start_new_session=True,
        )

    def status(self) -> dict[str, Any] | None:
        try:
            reply = request_sync(self.settings.control_socket_path, {"op": "status"}, timeout=2)
        except DaemonUnreachable:
            return None
        status: dict[str, Any] = reply["status"]
        return status

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.tail()}"
            status = self.status()
            if status and status["ready"]:
                return status
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout}s: {self.tail()}")

    def workers(self, status: dict[str, Any] | None = None) -> dict[int, dict[str, Any]]:
        """The worker slots of ``status`` (by default, asked for now: the daemon must answer)."""
        if status is None:
            status = self.status()
            assert status is not None
        return {c["index"]: c for c in status["children"] if c["role"] == "worker"}

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill_all(self) -> None:
        """Kill the daemon's process group (the daemon and every child it started), by pid."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def running(config: Path, log: Path, *, wait: bool = True, env: dict[str, str] | None = None) -> Iterator[Daemon]:
    daemon = Daemon(config, log, env)
    try:
        if wait:
            daemon.wait_ready()
        yield daemon
    finally:
        daemon.kill_all()


def enqueue_and_wait(settings: Any, actions: list[tuple[str, str, dict[str, Any]]], timeout: float = 60) -> list[Any]:
    async def go() -> list[Any]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        queue = ActionQueue(store.actions, store.num_shards)
        sent = [await queue.enqueue(kind, sid, payload) for kind, sid, payload in actions]
        try:
            request_sync(settings.control_socket_path, {"op": "wake"}, timeout=1)
        except DaemonUnreachable:
            pass
        done = []
        for action in sent:
            record = await queue.wait(action.action_id, timeout=timeout)
            assert record is not None, f"{action.kind} {action.session_id} not acknowledged"
            done.append(record)
        return done

    return asyncio.run(go())


def all_steps(settings: Any) -> list[StepRecord]:
    async def go() -> list[StepRecord]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        return StepRecord.from_arrow(await store.steps.query().to_arrow())

    return asyncio.run(go())


def check_seqs(steps: list[StepRecord]) -> dict[str, list[StepRecord]]:
    """Every session's seqs are 1..n with no gap or duplicate; returns steps by session, in order."""
    by_session: dict[str, list[StepRecord]] = {}
    for step in steps:
        by_session.setdefault(step.session_id, []).append(step)
    for sid, items in by_session.items():
        items.sort(key=lambda s: s.seq)
        seqs = [s.seq for s in items]
        assert seqs == list(range(1, len(seqs) + 1)), f"{sid}: gaps or duplicates in {seqs}"
    return by_session


def assert_single_writer(by_session: dict[str, list[StepRecord]]) -> None:
    """No session ticked in two processes at once: along seq order, a writer epoch never returns."""
    for sid, items in by_session.items():
        seen: list[int] = []
        for step in items:
            if not seen or seen[-1] != step.epoch:
                assert step.epoch not in seen, f"{sid}: epoch {step.epoch} wrote again after another writer"
                seen.append(step.epoch)


def create_jokes(settings: Any, count: int, prefix: str = "s") -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    done = enqueue_and_wait(settings, [("create", sid, {"agent_type": "joke", "config": {}}) for sid in ids])
    assert all(d.status == "done" for d in done), [d.error for d in done if d.status != "done"]
    return ids
