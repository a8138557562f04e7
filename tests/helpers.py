"""Shared test helpers: run coroutines, start helper processes as fresh interpreters, clean up."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

PROCS = Path(__file__).parent / "procs"
REPO = Path(__file__).resolve().parent.parent


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def spawn(script: str, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``tests/procs/<script>`` with this interpreter (never fork after lancedb import)."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, str(PROCS / script), *args], env=full_env, **kwargs)


@contextmanager
def reaped(*initial: subprocess.Popen[bytes]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Yield a list of processes; whatever is still alive at exit is killed by pid and reaped."""
    procs = list(initial)
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def wait_for(predicate: Any, timeout: float, what: str = "condition", interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def spawn_module(module: str, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` as a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", module, *args], env=full_env, **kwargs)


def noted_session(session_id: str, note: str, last_seq: int = 0) -> Any:
    """A running joke session's row whose context carries ``note`` (writer tests tell rows apart by it)."""
    from agentd.store.sessions import SessionRecord
    from agentd.timeutil import utcnow

    now = utcnow()
    return SessionRecord(
        session_id=session_id,
        agent_id="a",
        agent_type="joke",
        shard=0,
        status="running",
        context={"note": note},
        last_seq=last_seq,
        created_at=now,
        updated_at=now,
    )


def silent_websocket(port: int) -> socket.socket:
    """A WebSocket client on 127.0.0.1:``port`` that completes the upgrade and then never reads:
    it never answers a close frame, so the server's close waits out its handshake timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101"), "the WebSocket upgrade was refused"
    return sock
