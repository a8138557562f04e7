"""Identifiers and shard placement.

Shards come from blake2b, never Python's ``hash()``: the latter is salted per process, and
every process (agentctl, each worker, the gateway) must agree on where a session lives.
Generated ids start with the creation time in hex so that they sort by age.
"""

from __future__ import annotations

import hashlib
import os
import time

__all__ = [
    "deterministic_id",
    "new_id",
    "shard_for",
    "shards_of_worker",
    "validate_id",
]

_MAX_ID = 128


def shard_for(session_id: str, num_shards: int) -> int:
    """The shard of a session: stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(session_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def shards_of_worker(index: int, workers: int, num_shards: int) -> list[int]:
    """Shard ``s`` belongs to worker ``s % workers``."""
    return [s for s in range(num_shards) if s % workers == index]


def new_id(prefix: str) -> str:
    """A unique, time-ordered id such as ``s-0189f3c2a1b4-3f9a2c1d``."""
    return f"{prefix}-{time.time_ns() // 1000:013x}-{os.urandom(4).hex()}"


def deterministic_id(prefix: str, *parts: str) -> str:
    """The same parts always give the same id: exactly-once writes across a crash use it."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=12).hexdigest()
    return f"{prefix}-{digest}"


def validate_id(value: str, what: str = "id") -> str:
    """Reject ids that would be awkward in rooms, SQL filters or file names."""
    if not value or len(value) > _MAX_ID:
        raise ValueError(f"{what} must be 1-{_MAX_ID} characters")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@")
    bad = sorted(set(value) - allowed)
    if bad or "::" in value:
        shown = "'::'" if not bad else " ".join(repr(c) for c in bad)
        raise ValueError(f"{what} {value!r} has characters not allowed: {shown}")
    return value
