"""A blocking client for the daemon's control socket (``agentd.protocol`` lines).

Why blocking and not asyncio: one command sends one request and reads its replies in order, so
an event loop would only add start-up time to the path whose whole point is to be fast (a
whole ``agentctl pause`` costs little more than an interpreter start). It imports only the
standard library and ``agentd.protocol_client`` (the messages checked against the schema
generated from ``agentd.protocol``'s models, without importing pydantic).

``NoDaemon`` means nothing accepted the connection (no socket file, nobody listening): the
caller falls back to opening LanceDB itself. ``DaemonLost`` means the daemon accepted and then
went away (restart, crash) or answered something that is not a protocol line; what was already
sent may have been acted on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentd.protocol_client import MAX_LINE, Message, parse_reply, request_line

__all__ = ["CONNECT_TIMEOUT", "Connection", "DaemonError", "DaemonLost", "NoDaemon", "cancel", "read", "status"]

# Connecting to a unix socket is immediate when someone listens; waiting longer only delays
# the fallback when the daemon is wedged.
CONNECT_TIMEOUT = 2.0
Reply = Message  # accepted, ack, end, result or error: its ``type`` says which


class NoDaemon(Exception):
    """Nothing accepts connections on the control socket."""


class DaemonLost(Exception):
    """The daemon closed the connection (or stopped answering) in the middle of a request."""


class DaemonError(Exception):
    """The daemon answered ``error`` with a typed code (agentd.protocol.ErrorCode)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Connection:
    """One connection: send requests, read reply lines with a deadline per read."""

    def __init__(self, path: Path, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(min(timeout, CONNECT_TIMEOUT))
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise NoDaemon(f"no daemon answers on {path}: {exc.strerror or exc}") from exc
        self._buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, message: bytes | dict[str, Any]) -> None:
        """A request line (``request_line``), or any JSON object (what older clients sent)."""
        line = message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode()
        try:
            self.sock.sendall(line)
        except OSError as exc:
            raise DaemonLost(f"the daemon on {self.path} closed the connection: {exc}") from exc

    def read_line(self, timeout: float | None) -> bytes:
        """The next reply line; DaemonLost on EOF, a line over MAX_LINE, or ``timeout`` passing."""
        self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError as exc:
                raise DaemonLost(f"the daemon on {self.path} did not answer within {timeout:g}s") from exc
            except OSError as exc:
                raise DaemonLost(f"the connection to the daemon on {self.path} failed: {exc}") from exc
            if not chunk:
                raise DaemonLost(f"the daemon on {self.path} closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE:
                raise DaemonLost(f"the daemon on {self.path} sent a line over {MAX_LINE} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def replies(self, timeout: float | None) -> Iterator[Reply]:
        """Reply messages until the caller stops iterating; each read waits at most ``timeout``."""
        while True:
            line = self.read_line(timeout)
            try:
                yield parse_reply(line)
            except ValueError as exc:
                raise DaemonLost(f"the daemon on {self.path} answered something unexpected: {exc}") from exc


def _single(path: Path, op: str, timeout: float, **fields: Any) -> Message:
    with Connection(path, timeout=timeout) as conn:
        conn.send(request_line(op, **fields))
        reply = next(conn.replies(timeout))
    if reply.type == "error":
        raise DaemonError(reply.code, reply.error)
    if reply.type != "result":
        raise DaemonLost(f"the daemon on {path} answered {reply.type!r} to a {op} request")
    return reply


def read(path: Path, view: str, params: dict[str, Any], *, timeout: float) -> Any:
    """One read view's data; DaemonError (e.g. ``not_found``), NoDaemon or DaemonLost otherwise."""
    return _single(path, "read", timeout, view=view, params=params).data


def cancel(path: Path, action_ids: list[str], *, timeout: float) -> Any:
    return _single(path, "cancel", timeout, action_ids=action_ids).data


def status(path: Path, *, timeout: float) -> dict[str, Any]:
    """The daemon's own status (the unversioned ``status`` reply: ``{"ok": ..., "status": {...}}``)."""
    with Connection(path, timeout=timeout) as conn:
        conn.send(request_line("status"))
        data: dict[str, Any] = json.loads(conn.read_line(timeout))
    return data
