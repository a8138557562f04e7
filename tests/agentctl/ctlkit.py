"""Helpers for the agentctl tests: a real daemon, the CLI in-process and as real processes.

Every daemon is started in its own session and killed with ``os.killpg(pid, SIGKILL)``, by
pid, so no worker outlives a test.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from supervisor.daemon import Daemon as SupervisedDaemon

from agentctl.cli import cli

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[daemon]
workers = 2
warm_spare = false
heartbeat_interval = 0.3
[storage]
uri = "{db}"
num_shards = 8
[writer]
flush_interval = 0.05
[queue]
poll_interval = 0.1
lease = 5
[runtime]
heartbeat_interval = 2.0
[gateway]
{gateway}
[maintenance]
enabled = true
interval = 10
[metrics]
port = 0
"""


def write_config(directory: Path, db: Path | None = None, *, gateway_port: int | None = None) -> Path:
    """A daemon config in ``directory``; the gateway is off unless ``gateway_port`` is given."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    gateway = (
        "enabled = false" if gateway_port is None else f"enabled = true\nport = {gateway_port}\npoll_interval = 0.05"
    )
    path.write_text(CONFIG.format(db=db or directory / "db", gateway=gateway))
    return path


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Daemon(SupervisedDaemon):
    """``python -m agentd --config C run`` in its own session; ``kill()`` ends its whole group."""

    def __init__(self, config: Path) -> None:
        super().__init__(config, config.parent / "daemon.log")

    def kill(self) -> None:
        self.kill_all()


def start_daemon(config: Path) -> Daemon:
    daemon = Daemon(config)
    try:
        daemon.wait_ready()
    except BaseException:
        daemon.kill()
        raise
    return daemon


class Ctl:
    """Runs agentctl in-process with click's CliRunner against one config."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int | None = 0) -> Result:
        result = self.runner.invoke(cli, ["--config", str(self.config), *args], catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (
                f"agentctl {' '.join(args)}: exit {result.exit_code}, want {code}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        """``--json`` output: one object, or a list when it printed several lines."""
        lines = [json.loads(line) for line in self("--json", *args).stdout.splitlines() if line.strip()]
        return lines[0] if len(lines) == 1 else lines

    def create_joke(self, *args: str) -> str:
        session_id: str = self.json("create", "joke", *args)["session_id"]
        return session_id


def agentctl_argv() -> list[str]:
    """The installed console script when there is one (it is what users run), else ``-m``."""
    script = Path(sys.executable).parent / "agentctl"
    if script.exists():
        return [str(script)]
    found = shutil.which("agentctl")
    return [found] if found else [sys.executable, "-m", "agentctl"]


def spawn_agentctl(config: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*agentctl_argv(), "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


class Lines:
    """Reads a process's stdout on a thread so that a test can wait for lines with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.seen[-5:]}")
            try:
                line = self.queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stream ended before {what}; got {self.seen[-5:]}")
            self.seen.append(line)
            if predicate(line):
                return line

    def rest(self, timeout: float = 10) -> None:
        """Collect what is left after the process ended."""
        self.thread.join(timeout)
        while not self.queue.empty():
            line = self.queue.get_nowait()
            if line is not None:
                self.seen.append(line)


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Teardown for a CLI process a test started: SIGKILL it by pid if it still runs."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)
