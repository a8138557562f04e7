"""The control socket: a unix stream socket (owner-only) for status and wake hints.

Protocol: one JSON request per line, one JSON response per line.
- ``{"op": "status"}`` -> ``{"ok": true, "status": {...}}``
- ``{"op": "wake", "shard": 7}`` -> ``{"ok": true}``: new actions wait in shard 7.
Errors: ``{"ok": false, "error": "..."}``. The socket is an optimisation and a status view;
correctness never depends on it (the action queue is the source of truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["ControlServer", "DaemonUnreachable", "request", "request_sync", "socket_in_use"]

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024


class DaemonUnreachable(Exception):
    pass


def socket_in_use(path: Path) -> bool:
    """True if a live process accepts connections on ``path`` (a stale file is not in use)."""
    if not path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind with mode 0600; refuses if another daemon is listening there."""
        if socket_in_use(self.path):
            raise RuntimeError(f"another agentd is already running on {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is created owner-only, no window
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, ConnectionError):  # over the limit, or reset
                    break
                if not line:
                    break
                try:
                    request_data = json.loads(line)
                    if not isinstance(request_data, dict):
                        raise ValueError("a request is a JSON object")
                    response = await self.handler(request_data)
                except ValueError as exc:
                    response = {"ok": False, "error": f"bad request: {exc}"}
                except Exception as exc:
                    log.exception("control request failed")
                    response = {"ok": False, "error": str(exc)}
                writer.write((json.dumps(response, default=str) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def request(path: Path, message: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon; raises DaemonUnreachable."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=16 * 1024 * 1024)
            writer.write((json.dumps(message) + "\n").encode())
            await writer.drain()
            line = await reader.readline()
            writer.close()
    except (OSError, TimeoutError) as exc:
        raise DaemonUnreachable(f"no daemon answers on {path}: {exc}") from exc
    if not line:
        raise DaemonUnreachable(f"the daemon on {path} closed the connection")
    result: dict[str, Any] = json.loads(line)
    return result


def request_sync(path: Path, message: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Blocking variant for CLI code that has no event loop running."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall((json.dumps(message) + "\n").encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    except OSError as exc:
        raise DaemonUnreachable(f"no daemon answers on {path}: {exc}") from exc
    finally:
        sock.close()
    if not chunks:
        raise DaemonUnreachable(f"the daemon on {path} closed the connection")
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result
