"""The control socket: an owner-only unix stream socket carrying ``agentd.protocol`` messages.

The server owns framing and defence; what a request means is the handler's (the supervisor's
``agentd.supervision.control_api``). Each connection is served alone, so whatever one client
sends (random bytes, an over-long line, a half-close, never reading its replies) costs that
connection only:

- a peer of another uid is refused (``SO_PEERCRED``), even if the socket's mode was loosened;
- a line that is not a valid request gets an ``error`` reply and the connection stays usable;
- a line over ``MAX_LINE`` gets an ``error`` and the connection is closed (nothing unbounded is
  buffered);
- a client that does not read its replies is dropped once ``WRITE_TIMEOUT`` passes with the
  socket buffer full;
- beyond ``MAX_CONNECTIONS`` open connections, new ones are closed at once.

Also here: the small blocking and async clients for the unversioned ``status``/``wake``
requests (the gateway's daemon view, benchmarks, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentd.protocol import MAX_LINE, ErrorReply, VersionMismatch, dump_line, parse_request

__all__ = ["ControlServer", "DaemonUnreachable", "Reply", "request", "request_sync", "socket_in_use"]

log = logging.getLogger(__name__)

# What the handler sends back: a protocol message, or the plain dict of a legacy reply.
Reply = Callable[[BaseModel | dict[str, Any]], Awaitable[None]]
Handler = Callable[[Any, Reply], Awaitable[None]]
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 4096


class DaemonUnreachable(Exception):
    pass


class ClientGone(Exception):
    """The client stopped reading or hung up; its request is abandoned (not its actions)."""


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


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a unix socket (None if unknown)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one: a thousand clients at once need the fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.uid = os.getuid()

    async def start(self) -> None:
        """Bind with mode 0600; refuses if another daemon is listening there."""
        if socket_in_use(self.path):
            raise RuntimeError(f"another agentd is already running on {self.path}")
        raise_fd_limit()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is created owner-only, no window
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE, backlog=1024
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._converse(reader, writer)
        except (ClientGone, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(message: BaseModel | dict[str, Any]) -> None:
            if isinstance(message, BaseModel):
                writer.write(dump_line(message))
            else:
                writer.write((json.dumps(message, default=str) + "\n").encode())
            try:
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            except (TimeoutError, ConnectionError) as exc:
                raise ClientGone("the client does not read its replies") from exc

        if len(self._connections) > MAX_CONNECTIONS:
            await reply(ErrorReply(code="unavailable", error="too many control connections; try again"))
            return
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid is not None and uid != self.uid:
            log.warning("refused a control connection from uid %d", uid)
            await reply(
                ErrorReply(
                    code="forbidden",
                    error=f"this daemon runs as uid {self.uid} and serves only that user; run agentctl as it",
                )
            )
            return
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                await reply(ErrorReply(code="bad_request", error=f"request line longer than {MAX_LINE} bytes"))
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request_message = parse_request(line)
            except VersionMismatch as exc:
                await reply(ErrorReply(code="version", error=str(exc)))
                continue
            except ValueError as exc:
                await reply(ErrorReply(code="bad_request", error=f"bad request: {exc}"))
                continue
            try:
                await self.handler(request_message, reply)
            except (ClientGone, ConnectionError, asyncio.CancelledError):
                raise
            except Exception as exc:
                log.exception("control request %s failed", getattr(request_message, "op", "?"))
                await reply(ErrorReply(code="internal", error=f"{type(exc).__name__}: {exc}"))


async def request(path: Path, message: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon and return its (single) reply; raises DaemonUnreachable."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
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
    result: dict[str, Any] = json.loads(b"".join(chunks).split(b"\n", 1)[0])
    return result
