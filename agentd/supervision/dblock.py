"""One supervisor per database: a lock that lives with the database, held for the whole run.

Why: the control socket used to be the only single-instance guard, and its path differs
between the systemd unit (``/run/agentd``) and a manual ``agentd run`` (inside the database
directory). Two supervisors on one database then wrote new epochs for the same worker slots
and fenced out each other's workers until one halted. The lock is keyed by the database itself:

- a local directory: ``fcntl.flock`` on ``<db>/.agentd-supervisor.lock`` (mode 0600). The
  kernel drops it when the process dies, however it dies, so a supervisor killed with SIGKILL
  and restarted by systemd never waits. The file holds the holder's pid and host, for the
  error message only; the lock is the flock, never the file's content. The descriptor is
  close-on-exec, so children do not hold it.
- an object store (``scheme://``, not ``file://``): a lease row in the ``meta`` table, taken
  with a conditional write (insert if absent, or compare-and-set of an expired value) and
  renewed by the supervisor every ``LEASE_SECONDS / 3``. A supervisor that cannot renew before
  its lease expires must stop (another may have taken the database). A lease left by a dead
  supervisor on the *same* host is taken at once; one from another host after it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from agentd.config import StorageConfig
from agentd.store import Store
from agentd.store.filesystem import filesystem_of
from agentd.store.sql import sql_str

__all__ = [
    "LEASE_KEY",
    "LEASE_SECONDS",
    "LOCK_NAME",
    "WORKERS_LOCK_NAME",
    "DatabaseClaim",
    "DatabaseInUse",
    "SupervisorLease",
    "SupervisorLock",
    "hold_workers_lock",
    "wait_for_previous_workers",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".agentd-supervisor.lock"
WORKERS_LOCK_NAME = ".agentd-workers.lock"
LEASE_KEY = "supervisor_lease"
LEASE_SECONDS = 30.0


class DatabaseInUse(Exception):
    """Another supervisor holds this database; the message names it."""


def _holder_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat(timespec="seconds")}


def _describe(info: dict[str, Any]) -> str:
    pid, host, since = info.get("pid", "?"), info.get("host", "?"), info.get("since", "?")
    return f"pid {pid} on {host}, since {since}"


class SupervisorLock:
    """``flock`` on a file inside a local database directory; ``acquire()`` raises DatabaseInUse."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None  # open (and locked) between acquire() and release()

    def acquire(self) -> None:
        """Take the lock without waiting. Blocking file IO: call before the event loop is busy."""
        self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise DatabaseInUse(
                f"another agentd supervisor ({_describe(holder)}) is running on the database "
                f"{self.path.parent} (it holds {self.path}); stop it first (`agentctl daemon status`)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder_info()) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor does it). Safe to call twice. The file stays:
        unlinking it would let a third process lock a new inode while a second holds the old."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


class SupervisorLease:
    """A renewed lease row in the ``meta`` table, for databases on object storage.

    ``acquire()`` raises DatabaseInUse; ``renew()`` returns False once the lease is lost.
    Every write is a conditional one (LANCEDB.md: a conditional ``update`` has exactly one
    winner per row; the key is an unenforced primary key, so concurrent inserts do not
    duplicate it). A commit that errors may still have landed, so outcomes are re-read.
    """

    def __init__(self, meta: Any, *, duration: float = LEASE_SECONDS) -> None:
        self.meta = meta  # the store's async ``meta`` table
        self.duration = duration
        self.token = uuid.uuid4().hex
        self._value: str | None = None  # the row's value while we hold it

    @property
    def renew_interval(self) -> float:
        return self.duration / 3

    def _new_value(self) -> str:
        return json.dumps({"holder": self.token, **_holder_info(), "expires": time.time() + self.duration})

    async def _read(self) -> str | None:
        rows = (await self.meta.query().where(f"key = {sql_str(LEASE_KEY)}").to_arrow()).to_pylist()
        return str(rows[0]["value"]) if rows else None

    def _is_ours(self, value: str | None) -> bool:
        return value is not None and _parse(value).get("holder") == self.token

    async def acquire(self) -> None:
        for _ in range(5):
            current = await self._read()
            value = self._new_value()
            if current is None:
                row = pa.Table.from_pylist([{"key": LEASE_KEY, "value": value}], schema=await self.meta.schema())
                with contextlib.suppress(Exception):  # lost a race or outcome unknown: re-read
                    await self.meta.merge_insert("key").when_not_matched_insert_all().execute(row)
            else:
                holder = _parse(current)
                if not _expired(holder):
                    raise DatabaseInUse(
                        f"another agentd supervisor ({_describe(holder)}) holds the lease on this database "
                        f"(expires in {float(holder.get('expires', 0)) - time.time():.0f}s); stop it first"
                    )
                log.warning("taking over the expired supervisor lease of %s", _describe(holder))
                with contextlib.suppress(Exception):
                    await self._swap(current, value)
            if self._is_ours(found := await self._read()):
                self._value = found
                return
        raise DatabaseInUse("could not take the supervisor lease on this database (contended)")

    async def renew(self) -> bool:
        """Extend our lease; False if it is no longer ours (stop: another supervisor may run)."""
        if self._value is None:
            return False
        value = self._new_value()
        try:
            if await self._swap(self._value, value):
                self._value = value
                return True
        except Exception as exc:  # outcome unknown: decide from what is stored
            log.warning("renewing the supervisor lease: %s", exc)
        found = await self._read()
        if self._is_ours(found):
            self._value = found
            return not _expired(_parse(found or ""))
        self._value = None
        return False

    async def release(self) -> None:
        if self._value is not None:
            with contextlib.suppress(Exception):
                await self.meta.delete(f"key = {sql_str(LEASE_KEY)} AND value = {sql_str(self._value)}")
            self._value = None

    async def keep(self, *, on_lost: Callable[[], None]) -> None:
        """Renew until cancelled; call ``on_lost`` and return once the lease is gone.

        A renewal that fails (store unreachable) is retried at the next turn: the lease is
        only lost when the stored row says so or our expiry passes without a renewal.
        """
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                held = await self.renew()
            except Exception as exc:
                log.warning("cannot renew the supervisor lease: %s", exc)
                continue
            if not held:
                log.error("lost the supervisor lease on the database; stopping")
                on_lost()
                return

    async def _swap(self, old: str, new: str) -> bool:
        where = f"key = {sql_str(LEASE_KEY)} AND value = {sql_str(old)}"
        result = await self.meta.update(updates_sql={"value": sql_str(new)}, where=where)
        return int(result.rows_updated) == 1


def _parse(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _expired(holder: dict[str, Any]) -> bool:
    """Past its expiry, or left by a supervisor on this host whose process is gone."""
    if float(holder.get("expires", 0)) <= time.time():
        return True
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid") or 0)
        if pid <= 0 or pid == os.getpid():
            return pid <= 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


class DatabaseClaim:
    """Open the store as *the* supervisor of its database: the lock first, then the tables.

    A local directory is locked before LanceDB touches it, so a second supervisor neither
    creates nor migrates anything; an object store is opened first (the lease row lives in
    its ``meta`` table). ``open()`` raises DatabaseInUse, StoreError or OSError and holds
    nothing when it raises; ``release()`` is idempotent.
    """

    def __init__(self, storage: StorageConfig, *, previous_workers_timeout: float = 30.0) -> None:
        self.storage = storage
        self.previous_workers_timeout = previous_workers_timeout
        self.lock = SupervisorLock(storage.local_path) if storage.is_local else None
        self.lease: SupervisorLease | None = None  # set by open() on an object store

    async def open(self) -> Store:
        if self.lock is not None:
            self.lock.acquire()
        try:
            if self.storage.is_local:
                await wait_for_previous_workers(self.storage.local_path, self.previous_workers_timeout)
            store = await Store.open(self.storage.uri, self.storage.num_shards)
            if self.storage.is_local and (warning := filesystem_of(self.storage.local_path).warning()):
                log.warning("%s", warning)
            if self.lock is None:
                lease = SupervisorLease(store.meta)
                await lease.acquire()
                self.lease = lease
        except BaseException:
            await self.release()
            raise
        return store

    async def release(self) -> None:
        if self.lease is not None:
            await self.lease.release()
            self.lease = None
        if self.lock is not None:
            self.lock.release()


# -- the workers' lock: no worker of a previous supervisor outlives it into ours ----------------
#
# A supervisor killed with SIGKILL leaves its workers running until they notice (pipe EOF,
# parent-death signal) and finish stopping. A new supervisor that started its own workers
# meanwhile would have two processes writing the same sessions, and its workers would take
# over claims the old ones still act on. So every worker holds a *shared* flock on
# ``<db>/.agentd-workers.lock`` for its whole life, and a supervisor, before it starts any
# worker, waits until it can take the lock *exclusively* (every previous worker has exited),
# then drops it at once. Local directories only: on object storage the shard leases of
# DESIGN.md §11 are the answer (not built yet).


def hold_workers_lock(directory: Path) -> int:
    """Take the shared lock for this worker's life; returns the descriptor (close-on-exec, never closed).

    Blocks only while a supervisor is checking for previous workers (a few milliseconds).
    """
    fd = os.open(directory / WORKERS_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


async def wait_for_previous_workers(directory: Path, timeout: float) -> None:
    """Return once no worker holds the workers' lock; raise DatabaseInUse after ``timeout``."""
    fd = os.open(directory / WORKERS_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                pass
            if time.monotonic() > deadline:
                raise DatabaseInUse(
                    f"workers of a previous supervisor still run on {directory} after {timeout:.0f}s "
                    f"(they hold {directory / WORKERS_LOCK_NAME}); stop them first"
                )
            if not logged:
                log.warning("waiting for the workers of a previous supervisor to exit")
                logged = True
            await asyncio.sleep(0.05)
    finally:
        os.close(fd)
