"""Child processes of the supervisor: how they are started, heard from and described.

Children are fresh interpreters (``python -m agentd.worker``, ``-m agentd.supervision.gateway_child``)
started with ``posix_spawn``, never ``fork()`` (``agentd.spawn`` says why).
Each worker (and the gateway) gets one end of a socketpair as its control channel (JSON
lines). The first line is always the supervisor's validated settings (``agentd.supervision.
handoff``), so no child re-reads ``config.toml``. Then a worker reports ``ready`` and
``heartbeat`` messages, and receives ``assign``, ``wake`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from pydantic import BaseModel

from agentd.orphans import PARENT_PID_ENV
from agentd.protocol import (
    MAX_LINE,
    Acked,
    CommitHint,
    Heartbeat,
    Hello,
    Ready,
    Standby,
    dump_line,
    parse_child_message,
)
from agentd.spawn import SpawnedProcess, socket_for_child, spawn_python

__all__ = ["Child", "SpawnedProcess", "child_env", "describe_exit", "spawn_child", "stop_children"]

log = logging.getLogger(__name__)


CONTROL_FD = 3  # where a worker finds its end of the control socketpair


@dataclass
class Child:
    """One running child. ``index`` is the worker slot (None for the gateway and the spare)."""

    role: str  # worker | gateway | spare
    proc: SpawnedProcess
    index: int | None = None
    epoch: int = 0
    shards: list[int] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    last_heartbeat: float = field(default_factory=time.monotonic)
    ready: bool = False
    counters: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    killed: str | None = None  # why the supervisor killed it, if it did
    config_digest: str | None = None  # settings_digest() of the settings it was handed
    exit_task: asyncio.Task[int] | None = None
    listen_task: asyncio.Task[None] | None = None
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    _ps: psutil.Process | None = None

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @property
    def name(self) -> str:
        return self.role if self.index is None else f"{self.role}-{self.index}"

    async def send(self, message: BaseModel) -> bool:
        if self.writer is None or self.writer.is_closing():
            return False
        try:
            self.writer.write(dump_line(message))
            await self.writer.drain()
            return True
        except (ConnectionError, RuntimeError):
            return False

    def buffered(self) -> int:
        """Bytes written to the child and not yet taken by it."""
        if self.writer is None or self.writer.is_closing():
            return 0
        return int(self.writer.transport.get_write_buffer_size())

    def send_nowait(self, message: BaseModel) -> bool:
        """Queue a message without waiting for the pipe (hints; the channel is local)."""
        if self.writer is None or self.writer.is_closing():
            return False
        self.writer.write(dump_line(message))
        return True

    async def listen(self, relay: Callable[[Child, Acked | CommitHint], None] | None = None) -> None:
        """Read the child's messages until EOF (the task ends with the child; nobody cancels it).

        ``ready`` carries the digest of the settings the child runs; ``standby`` means a
        spare has imported everything and waits for an ``assign``. Acknowledgements and commit
        hints go to ``relay`` (the supervisor passes them on to clients and the gateway).
        """
        assert self.reader is not None
        while True:
            try:
                line = await self.reader.readline()
            except (ConnectionError, ValueError):
                return
            if not line:
                return
            try:
                message = parse_child_message(line)
            except ValueError as exc:
                log.warning("%s sent a malformed message: %s", self.name, exc)
                continue
            if isinstance(message, Heartbeat):
                self.last_heartbeat = time.monotonic()
                self.counters = message.model_dump()
            elif isinstance(message, Ready):
                self.ready = True
                self.last_heartbeat = time.monotonic()
                self.config_digest = message.config_digest
                self.ready_event.set()
                log.info("%s ready (pid %d, %s sessions)", self.name, self.pid, message.sessions)
            elif isinstance(message, Standby):
                self.ready_event.set()
            elif relay is not None:
                try:
                    relay(self, message)
                except Exception:
                    log.exception("relaying a %s message from %s failed", message.type, self.name)

    def signal(self, signum: int) -> None:
        if self.alive:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def status(self, now: float) -> dict[str, Any]:
        info: dict[str, Any] = {
            "role": self.role,
            "index": self.index,
            "pid": self.pid,
            "epoch": self.epoch,
            "alive": self.alive,
            # A spare is ready once it stands by (imported, waiting for a slot); it never sends Ready.
            "ready": self.ready or (self.role == "spare" and self.ready_event.is_set()),
            "uptime": round(now - self.started_at, 1),
            "shards": self.shards,
            "sessions": self.counters.get("sessions"),
            "config_digest": self.config_digest,
            "last_heartbeat_ago": round(now - self.last_heartbeat, 2) if self.role == "worker" else None,
        }
        try:
            if self._ps is None:  # kept: cpu_percent() measures since the previous call on it
                self._ps = psutil.Process(self.pid)
            proc = self._ps
            with proc.oneshot():
                info["rss_bytes"] = proc.memory_info().rss
                info["cpu_percent"] = proc.cpu_percent(interval=None)
        except psutil.Error:
            info["rss_bytes"] = None
            info["cpu_percent"] = None
        for key in ("lateness_ms", "actions_applied", "actions_failed", "writer", "statuses"):
            if key in self.counters:
                info[key] = self.counters[key]
        return info


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL (perhaps out of memory?)'."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (perhaps out of memory?)" if -returncode == signal.SIGKILL else ""
    return f"killed by {name}{hint}"


async def spawn_child(role: str, module: str, args: list[str], *, channel: bool, hello: Hello | None = None) -> Child:
    """Start ``python -m module args`` with an optional control socketpair on fd 3.

    ``hello`` (with ``channel``) is written as the channel's first line before anything else
    can be, so the child reads it first: the handed-over settings.
    """
    env = child_env()
    parent_sock = child_sock = None
    fds: dict[int, int] = {}
    if channel:
        parent_sock, child_sock = socket_for_child()
        fds[CONTROL_FD] = child_sock.fileno()
        args = [*args, "--control-fd", str(CONTROL_FD)]
    try:
        proc = spawn_python(module, args, env, fds=fds)
    finally:
        if child_sock is not None:
            child_sock.close()
    child = Child(role=role, proc=proc)
    if parent_sock is not None:
        child.reader, child.writer = await asyncio.open_connection(sock=parent_sock, limit=MAX_LINE)
        if hello is not None:
            await child.send(hello)
    log.info("started %s (pid %d)", role, proc.pid)
    return child


def child_env() -> dict[str, str]:
    """Our environment without systemd's notify variables: the supervisor alone speaks to
    systemd (NotifyAccess=main); children must not try. Plus our pid, by which a child knows
    whether we died before it looked (``agentd.orphans``)."""
    env = dict(os.environ)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    env[PARENT_PID_ENV] = str(os.getpid())
    return env


async def stop_children(children: list[Child], timeout: float, *, force: bool = False) -> None:
    """SIGTERM (SIGKILL with ``force``), wait up to ``timeout``, then SIGKILL and reap."""
    for child in children:
        child.signal(signal.SIGKILL if force else signal.SIGTERM)
    waits = [c.exit_task for c in children if c.exit_task is not None and not c.exit_task.done()]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=timeout)
        if pending:
            for child in children:
                if child.alive:
                    log.warning("%s (pid %d) did not stop in %.0fs; SIGKILL", child.name, child.pid, timeout)
                    child.signal(signal.SIGKILL)
            await asyncio.wait(pending, timeout=10)
