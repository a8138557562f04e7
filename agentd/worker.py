"""Worker process entry point: one uvloop loop hosting the sessions of the shards it owns.

Started by the supervisor as a fresh interpreter (``python -m agentd.worker ...``), never by
fork(), because LanceDB runs native threads. Also runnable by hand for debugging: with no
``--control-fd`` it runs until SIGTERM/SIGINT.

Control channel (``--control-fd``, a socketpair end inherited from the supervisor), JSON
lines both ways: the worker sends ``ready``, then a ``heartbeat`` with its counters every
heartbeat interval *from a task on its event loop* (so a blocked loop misses its beat);
the supervisor sends ``wake`` (new actions for a shard) and ``stop``. EOF on the channel means
the supervisor died: the worker stops gracefully by itself, and PR_SET_PDEATHSIG adds a
SIGTERM for the same case, so no orphan keeps running its shards (and ``agentd.orphans`` ends it
hard if that stop hangs).

Settings: the first line on the control channel is the supervisor's validated configuration
(``agentd.supervision.handoff``); a worker never re-reads ``config.toml`` when it has a channel,
so a file broken or changed on disk (not yet reloaded with SIGHUP) cannot stop a replacement
from booting. An ``assign`` to a warm spare carries the supervisor's current settings too.

Exit codes: 0 graceful stop; 3 boot failure (the handed-over config or the database is unusable,
so restarting cannot help and the supervisor must not restart it in a loop); 4 fenced out
(another worker owns these shards now); 1 anything else, resuming sessions included (restarted
with backoff: one bad session is the session host's to quarantine, never a reason to halt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from pydantic import BaseModel

from agentd import faults
from agentd.config import ConfigError, Settings, load_settings
from agentd.ids import shards_of_worker
from agentd.logsetup import configure_logging
from agentd.orphans import exit_when_orphaned, orphaned, set_parent_death_signal
from agentd.protocol import (
    HINT_ROWS_MAX_BYTES,
    MAX_LINE,
    Acked,
    Assign,
    CommitHint,
    Heartbeat,
    Hello,
    Ready,
    Standby,
    Stop,
    Wake,
    dump_line,
    parse_parent_message,
)
from agentd.supervision.handoff import decode_settings, read_hello, settings_digest

__all__ = ["EXIT_BOOT", "EXIT_FENCED", "main"]

log = logging.getLogger("agentd.worker")

EXIT_OK = 0
EXIT_BOOT = 3
EXIT_FENCED = 4
# Seconds an orphaned worker (its supervisor died) gives its sessions to stop.
ORPHAN_STOP_TIMEOUT = 2.0


class ControlChannel:
    """The worker's end of the supervisor socketpair: typed messages (``agentd.protocol``), one per line."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=MAX_LINE)

    def send_nowait(self, message: BaseModel) -> None:
        """Queue a message without waiting (from callbacks); the pipe is local and drained by send()."""
        if self.writer is None or self.writer.is_closing():
            return
        self.writer.write(dump_line(message))

    async def send(self, message: BaseModel) -> None:
        self.send_nowait(message)
        if self.writer is not None:
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def messages(self) -> AsyncIterator[Hello | Assign | Wake | Stop | CommitHint]:
        assert self.reader is not None
        while True:
            try:
                line = await self.reader.readline()
            except (ConnectionError, ValueError):
                return
            if not line:
                return
            try:
                yield parse_parent_message(line)
            except ValueError as exc:
                log.warning("ignoring a malformed control message: %s", exc)


class FencedOut(Exception):
    """Another worker owns our shards now: stop without committing anything more."""

    fatal = True


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from agentd.llm.factory import make_llm
    from agentd.runtime.host import SessionHost
    from agentd.store import Store, StoreError
    from agentd.store.actions import ActionRecord
    from agentd.store.ipc import table_to_text
    from agentd.store.owners import EpochCheck
    from agentd.store.writer import Committed
    from agentd.supervision.dblock import hold_workers_lock

    # Signals first: Ctrl-C in a terminal reaches every child, including one still booting or
    # waiting as the spare, and each must stop cleanly rather than die with a traceback.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    channel = ControlChannel(args.control_fd) if args.control_fd is not None else None
    if channel is not None:
        await channel.open()
    # A warm spare: everything above is imported already (the slow part of a start), so when a
    # worker dies the supervisor assigns its slot here and its sessions resume at once.
    if args.standby:
        assigned = None if channel is None else await _until_stop(_wait_for_assignment(channel, args), stop)
        if assigned is None:
            return EXIT_OK
        settings = assigned
    name = f"worker-{args.index}"
    if settings.storage.is_local and args.epoch:
        # Held until exit: a new supervisor waits for it before starting workers of its own.
        hold_workers_lock(settings.storage.local_path)
    try:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        llm = make_llm(settings.llm)
    except (StoreError, ConfigError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BOOT
    shards = shards_of_worker(args.index, args.workers, store.num_shards)

    epoch_check = EpochCheck(store, args.index, args.epoch)

    async def fence() -> None:
        if args.epoch and not await epoch_check.still_ours():
            raise FencedOut(f"{name} epoch {args.epoch} was replaced; not committing")

    def push_acks(records: list[ActionRecord], step_only: bool) -> None:
        if channel is not None:
            channel.send_nowait(Acked(acks=[record.ack_info() for record in records], step_only=step_only))

    def hint_commit(committed: Committed) -> None:
        if channel is not None:
            rows = None
            if committed.version is not None:
                rows = table_to_text(committed.rows, HINT_ROWS_MAX_BYTES)
            hint = CommitHint(sessions=committed.sessions, steps_version=committed.version, steps_ipc=rows)
            channel.send_nowait(hint)

    host = SessionHost(
        store,
        settings,
        shards,
        llm,
        epoch=args.epoch,
        name=name,
        fence=fence if args.epoch else None,
        on_acked=push_acks,
        on_commit=hint_commit,
    )
    started = time.monotonic()
    try:
        resumed = await host.start()
    except Exception:
        # Not EXIT_BOOT: the config and the database opened fine, so this is about the data
        # (a session the host could not quarantine). Exit 1: restarted with backoff, and only
        # a crash loop stops the daemon.
        log.exception("%s could not resume its sessions", name)
        await llm.aclose()
        return 1
    # Everything allocated so far (thousands of sessions, their timers) lives for the whole run:
    # move it out of the collector's view so that a full collection stays short (~60 ms at 10k
    # sessions instead of ~300 ms, which would show as tick lateness).
    gc.collect()
    gc.freeze()
    if channel is not None:
        await channel.send(
            Ready(pid=os.getpid(), sessions=resumed, shards=shards, config_digest=settings_digest(settings))
        )

    async def heartbeat() -> None:
        if channel is None:
            await stop.wait()
            return
        while True:
            counters = host.counters()
            await channel.send(Heartbeat(pid=os.getpid(), uptime=time.monotonic() - started, **counters))
            await asyncio.sleep(settings.daemon.heartbeat_interval)

    async def listen() -> None:
        if channel is None:
            await stop.wait()
            return
        async for message in channel.messages():
            if isinstance(message, Wake):
                offered = _offered(message)
                # Rows it could not hand over (too many, or not valid here) are found by a scan.
                host.hint(offered, look=message.look or len(offered) < len(message.actions))
            elif isinstance(message, Stop):
                break
        stop.set()  # stop message, or EOF: the supervisor is gone

    async def writer_failure() -> None:
        """A writer stopped for good (fenced inside a write, or by the fence check) ends the worker."""
        error = await host.writer.failed()
        if isinstance(error, FencedOut) or getattr(error, "fatal", False):
            raise FencedOut(f"{name}: {error}")
        raise error

    tasks = [
        asyncio.create_task(host.run(), name="claim-loop"),
        asyncio.create_task(writer_failure(), name="writer"),
        asyncio.create_task(heartbeat(), name="heartbeat"),
        asyncio.create_task(listen(), name="control"),
        asyncio.create_task(stop.wait(), name="stop"),
    ]
    code = EXIT_OK
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task.cancelled():
            continue
        error = task.exception()
        if isinstance(error, FencedOut):
            log.error("%s", error)
            code = EXIT_FENCED
        elif error is not None:
            log.error("%s failed: %r", task.get_name(), error)
            code = 1
    timeout = settings.daemon.stop_timeout * 0.8
    if channel is not None and orphaned():
        # Orphaned (the supervisor died): a new one waits for us before starting its workers,
        # so finish the ticks in flight briefly; what is not durable is simply redone.
        timeout = min(timeout, ORPHAN_STOP_TIMEOUT)
    log.info("%s stopping (%d sessions)", name, len(host.runners))
    await faults.hit_async("stopping", "worker")
    await host.stop(timeout=timeout)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await llm.aclose()
    if host.writer.stats.failures and host.writer.buffered:
        log.error("%d rows could not be committed", host.writer.buffered)
    return code


def _offered(wake: Wake) -> list[Any]:
    """The action rows a wake carries; a row that does not validate is left to the table scan."""
    from agentd.store.actions import ActionRecord

    offered = []
    for data in wake.actions:
        try:
            offered.append(ActionRecord.model_validate(data))
        except ValueError as exc:
            log.warning("ignoring an offered action that does not validate: %s", exc)
    return offered


async def _until_stop(work: Coroutine[Any, Any, Settings | None], stop: asyncio.Event) -> Settings | None:
    """``work``'s result, or None if ``stop`` is set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        return None
    return task.result()


async def _wait_for_assignment(channel: ControlChannel, args: argparse.Namespace) -> Settings | None:
    """Wait for an ``Assign`` (slot, epoch and settings); None on stop or EOF.

    Returns the settings the assignment carries: the supervisor's configuration at the moment
    it hands over the slot, which may be newer than the one this spare was started with.
    """
    await channel.send(Standby(pid=os.getpid()))
    async for message in channel.messages():
        if isinstance(message, Assign):
            args.index, args.workers, args.epoch = message.index, message.workers, message.epoch
            configure_logging_index(args.index)
            return decode_settings(message.settings, message.source_file)
        if isinstance(message, Stop):
            return None
    return None


def configure_logging_index(index: int) -> None:
    """A spare learns its worker index late: update the role tag of its log lines."""
    for handler in logging.getLogger().handlers:
        for flt in handler.filters:
            if hasattr(flt, "worker"):
                flt.worker = index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agentd-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="only without --control-fd (a run by hand)")
    parser.add_argument("--db", default=None, help="only without --control-fd (a run by hand)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--epoch", type=int, default=0, help="ownership epoch (0 = unfenced)")
    parser.add_argument("--control-fd", type=int, default=None)
    parser.add_argument("--standby", action="store_true", help="start warm and wait for an assignment")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_parent_death_signal()
    if args.control_fd is not None:  # the supervisor's child: never outlive it for long
        exit_when_orphaned()
    try:
        if args.control_fd is not None:
            settings = read_hello(args.control_fd)  # the supervisor's settings, never the file
        else:
            settings = load_settings(args.config, db=args.db)
    except ConfigError as exc:
        print(f"agentd worker: {exc}", file=sys.stderr)  # noqa: T201 - logging is not set up yet
        return EXIT_BOOT
    configure_logging(settings.logging, role="worker", worker=args.index)
    import uvloop

    return uvloop.run(_serve(settings, args))


if __name__ == "__main__":
    sys.exit(main())
