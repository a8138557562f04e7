"""Handing the supervisor's validated settings to a child over its control channel.

Why: a child that re-read ``config.toml`` at every start ran whatever was on disk *now*, not
what the supervisor validated. A file broken after start (not yet reloaded) made every new
child fail to boot, and a changed ``[storage] num_shards`` made it open the database with the
wrong shard count: both halted the daemon at the next worker death. So the supervisor sends
its own ``Settings`` as the first line on the child's channel, and the child validates that
JSON with the same model (``Settings.model_validate`` reads neither the file nor ``AGENTD_*``
variables). Only a child started by hand, with no channel, loads the file itself.

The channel rather than an environment variable or argv: the settings may hold the gateway
token, and argv is readable by every local user.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from agentd.config import ConfigError, Settings
from agentd.protocol import Assign, Hello, parse_parent_message

__all__ = [
    "assign_message",
    "decode_settings",
    "encode_settings",
    "hello_message",
    "read_hello",
    "settings_digest",
]
MAX_HELLO_BYTES = 4 << 20


def encode_settings(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON data (aliases included, so ``[logging] json`` survives)."""
    data: dict[str, Any] = settings.model_dump(mode="json", by_alias=True)
    return data


def decode_settings(data: Any, source_file: str | None = None) -> Settings:
    """Validate settings handed over by the supervisor; ConfigError if they do not validate."""
    try:
        settings = Settings.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"settings handed over by the supervisor do not validate: {exc}") from exc
    settings._source_file = Path(source_file) if source_file else None
    return settings


def settings_digest(settings: Settings) -> str:
    """A short fingerprint, so ``status`` shows which configuration each child runs."""
    blob = json.dumps(encode_settings(settings), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=6).hexdigest()


def hello_message(settings: Settings) -> Hello:
    source = settings.source_file
    return Hello(settings=encode_settings(settings), source_file=str(source) if source else None)


def assign_message(settings: Settings, *, index: int, workers: int, epoch: int) -> Assign:
    """A warm spare's assignment: its slot and epoch, and the supervisor's settings of the moment."""
    hello = hello_message(settings)
    return Assign(index=index, workers=workers, epoch=epoch, settings=hello.settings, source_file=hello.source_file)


def read_hello(fd: int, *, timeout: float = 60.0) -> Settings:
    """Read the first line on the channel ``fd`` (blocking, before any event loop) and decode it.

    Reads one byte at a time so that nothing after the newline is consumed: later messages
    (``wake``, ``assign``) stay in the socket for the event loop's reader. Raises ConfigError
    on EOF, timeout or a malformed message.
    """
    sock = socket.socket(fileno=fd)
    try:
        sock.settimeout(timeout)
        buffer = bytearray()
        while not buffer.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise ConfigError("the supervisor closed the channel before sending the settings")
            buffer += chunk
            if len(buffer) > MAX_HELLO_BYTES:
                raise ConfigError("the settings message is too large")
    except OSError as exc:
        raise ConfigError(f"no settings from the supervisor: {exc}") from exc
    finally:
        sock.detach()  # the fd stays open for the worker's ControlChannel
    try:
        message = parse_parent_message(bytes(buffer))
    except ValueError as exc:
        raise ConfigError(f"malformed settings message: {exc}") from exc
    if not isinstance(message, Hello):
        raise ConfigError("the first message from the supervisor is not the settings")
    return decode_settings(message.settings, message.source_file)
