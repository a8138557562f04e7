"""Starting child interpreters without ``fork()``: ``posix_spawn`` and a pidfd to see them exit.

Why: the supervisor has LanceDB loaded (native threads, a tokio runtime, fork handlers), and a
``fork()`` after that may deadlock in the child (LanceDB warns "fork support is experimental").
``asyncio.create_subprocess_exec`` forks under uvloop (the supervisor's loop) and runs the fork
handlers; glibc's ``posix_spawn`` runs none. Exits are observed through a pidfd on the event
loop, so no SIGCHLD handler or waiter thread is needed. Every child of the supervisor (workers,
the gateway, the maintenance child) starts here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

__all__ = ["SpawnedProcess", "socket_for_child", "spawn_python"]

log = logging.getLogger(__name__)


class SpawnedProcess:
    """A child started with posix_spawn; ``wait()`` resolves when it exits (via pidfd)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return
        self.returncode = os.waitstatus_to_exitcode(status)
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._exited.set()

    def kill(self) -> None:
        """SIGKILL, unless it has exited already."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


def spawn_python(
    module: str, args: list[str], env: dict[str, str], *, fds: dict[int, int] | None = None, nice: int = 0
) -> SpawnedProcess:
    """Start ``python -m module args``; ``fds`` maps the child's fd numbers to ours (dup2).

    stdin is /dev/null unless ``fds`` gives fd 0. Our copies of the mapped fds stay open:
    the caller closes them once the child has its own. ``nice`` lowers the child's CPU priority
    (best effort), set before its interpreter has started a thread, so every thread it starts
    (LanceDB's runtime) inherits it.
    """
    actions: list[tuple[Any, ...]] = []
    fds = fds or {}
    if 0 not in fds:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    for target, source in fds.items():
        actions.append((os.POSIX_SPAWN_DUP2, source, target))
    argv = [sys.executable, "-m", module, *args]
    pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions)
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        except OSError as exc:  # gone already, or a platform without it: it runs at our priority
            log.debug("cannot lower the priority of %s (pid %d): %s", module, pid, exc)
    return SpawnedProcess(pid)


def socket_for_child() -> tuple[socket.socket, socket.socket]:
    """A connected pair: (ours, non-blocking; the child's, to map with ``fds`` then close)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    return ours, theirs
