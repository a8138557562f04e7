"""Following the ``steps`` and ``messages`` tables exactly once (LANCEDB.md, "Tailing"): the poll
loop both tails share, and the tail of ``messages``; the tail of ``steps`` is ``step_tail.py``.

Each poll: ``await table.version()`` (the store's connection has a zero consistency interval,
so this sees other processes' commits; ~0.2 ms idle, no data read), or the top of the commit
hints that name the next versions, when they do (``StepTail.known_version``). If the version moved and
someone is subscribed, read ``_row_created_at_version in (watermark, v]``, sort, dispatch, and
set ``watermark = v``. Steps of versions whose commit hint carried the rows are taken from the
hint instead of read back (``hints.py``). Nobody subscribed: the watermark just moves, nothing is read.

Exactness: a batch (W, v] goes to the subscriptions registered below v (``rooms.py``); from the
moment it is chosen (before it is read) until it is offered the tail's ``watermark`` reads v, so
a subscription registered meanwhile reads it in its snapshot instead. ``prepare()`` awaits but
changes no tail state, so a failed poll leaves the watermark where it was and the same range
(ending at the same v, which such a subscription's snapshot covers) is read again. A batch
offered in ``parts`` that fails after some went out is read again too; the steps tail's seq
check drops what those parts delivered already.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from agentd.gateway.health import TailStats
from agentd.gateway.rooms import RoomRegistry
from agentd.store.conversations import MESSAGES, MessageRecord
from agentd.timeutil import utcnow

__all__ = ["MESSAGE_COLUMNS", "VERSION_COLUMN", "MessageTail", "TableTail"]

log = logging.getLogger(__name__)

# Pacing (rooms.Pacer): one wait for crowded outboxes, and all waits of one batch together.
PACE_STEP = 0.05
PACE_DEADLINE = 1.0
MAX_ERROR_BACKOFF = 5.0
VERSION_COLUMN = "_row_created_at_version"
MESSAGE_COLUMNS = [f.name for f in MESSAGES.schema] + [VERSION_COLUMN]


class TableTail:
    """Poll loop shared by both tails.

    Subclasses implement ``wanted``, ``prepare`` (read, may await), ``commit`` (decide what
    goes out, no await) and ``dispatch`` (offer one chunk to the registry); and may split a
    prepared batch into ``parts`` (no await), each committed and offered before the next is made.
    """

    def __init__(
        self, table: Any, registry: RoomRegistry, stats: TailStats, *, poll_interval: float, chunk: int = 500
    ) -> None:
        self.table = table
        self.registry = registry
        self.stats = stats
        self.poll_interval = poll_interval
        # Items offered between two pacing checks: half an outbox.
        self.chunk = max(1, chunk)
        # Set by poke() (a writer's commit hint) to cut the wait short; cleared by run().
        self._wake = asyncio.Event()
        # The version being read and offered, while poll_once() does so.
        self._dispatching: int | None = None
        # The end of a batch whose poll failed after subscriptions registered at it.
        self._retry_upto: int | None = None

    @property
    def watermark(self) -> int:
        """A subscription registered now covers versions <= this in its snapshot."""
        return self._dispatching if self._dispatching is not None else self.stats.version

    async def start(self) -> None:
        """Begin at the current version: history before it is served by snapshots, not the tail."""
        version = await self.table.version()
        self.stats.version = self.stats.latest_version = version

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Poll until cancelled (by the gateway's shutdown). Errors are logged and retried."""
        failures = 0
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                delay = min(MAX_ERROR_BACKOFF, self.poll_interval * 2**failures)
                log.warning("tail of %s failed (%s); retrying in %.2fs", self.stats.table, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.stats.last_ok = time.monotonic()
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def poll_once(self) -> None:
        self.stats.polls += 1
        after = self.stats.version
        version = self.known_version(after)
        if version is None:
            version = int(await self.table.version())
        self.stats.latest_version = max(self.stats.latest_version, version)
        if version <= after:
            await self._offer(self.expired(), after)
            return
        if not self.wanted():
            self._retry_upto = None  # nobody subscribed at it is left
            self.skip(version)
            return
        upto = self.ready_upto(after, version)
        if self._retry_upto is not None and self._retry_upto > after:
            upto = min(upto, self._retry_upto)
        # From here a subscription registers at ``upto``: its snapshot covers this batch and the
        # batch skips it. Set before prepare(), whose step filter may leave out a session
        # subscribed while it awaits (that batch went to nobody: the gap the long chaos run found).
        self._dispatching = upto
        self._retry_upto = upto  # if this poll fails, the next one ends here too (same exact split)
        try:
            for part in self.parts(await self.prepare(after, upto)):
                await self._offer(self.commit(part), upto)
        finally:
            self._dispatching = None
        self._retry_upto = None
        self.stats.version = upto
        if upto < version:
            self._wake.set()  # the rest at once, not at the next poll

    async def _offer(self, items: list[Any], version: int) -> None:
        """Offer ``items`` in chunks, letting crowded outboxes drain in between (``rooms.Pacer``).

        A connection that sent nothing during a PACE_STEP wait is a straggler for the rest of
        the batch: it is no longer waited for (it overflows if it stays stuck).
        """
        if not items:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PACE_DEADLINE
        pacer = self.registry.pacer
        stragglers: set[Any] = set()
        for start in range(0, len(items), self.chunk):
            remaining = deadline - loop.time()
            if remaining > 0 and pacer.crowded - stragglers:
                sent = {conn: conn.sent for conn in pacer.crowded}
                if not await pacer.wait(min(PACE_STEP, remaining), stragglers):
                    stragglers |= {c for c in pacer.crowded if c.sent == sent.get(c, c.sent)}
            self.dispatch(items[start : start + self.chunk], version)

    def wanted(self) -> bool:
        raise NotImplementedError

    def known_version(self, after: int) -> int | None:
        """A committed version above ``after`` known without asking the table, or None (ask it)."""
        return None

    def ready_upto(self, after: int, latest: int) -> int:
        """How far this poll goes: ``latest``, or less when an earlier part can go out sooner."""
        return latest

    def expired(self) -> list[Any]:
        """On a poll that found no new version: items whose wait is over (held steps)."""
        return []

    def skip(self, version: int) -> None:
        """Nobody listens: move the watermark without reading."""
        self.stats.version = version

    async def prepare(self, after: int, upto: int) -> Any:
        raise NotImplementedError

    def parts(self, batch: Any) -> Iterator[Any]:
        """The prepared batch in the parts to commit and offer one after another (default: whole)."""
        yield batch

    def commit(self, batch: Any) -> list[Any]:
        raise NotImplementedError

    def dispatch(self, items: list[Any], version: int) -> None:
        raise NotImplementedError


class MessageTail(TableTail):
    """Tail of ``messages``: rows in (version, created_at, message_id) order per conversation.

    That order only ever grows at the end (a new commit has a higher version than every row
    already visible), so a message's position in it is a stable per-conversation ``seq``.
    """

    def wanted(self) -> bool:
        return self.registry.wants_messages()

    async def prepare(self, after: int, upto: int) -> list[MessageRecord]:
        clause = f"{VERSION_COLUMN} > {int(after)} AND {VERSION_COLUMN} <= {int(upto)}"
        started = time.perf_counter()
        rows: pa.Table = await self.table.query().where(clause).select(MESSAGE_COLUMNS).to_arrow()
        self.stats.record_read(time.perf_counter() - started)
        self.stats.reads += 1
        self.stats.rows += rows.num_rows
        if rows.num_rows == 0:
            return []
        versions = rows.column(VERSION_COLUMN).to_pylist()
        records = MessageRecord.from_arrow(rows.drop_columns([VERSION_COLUMN]))
        keyed = sorted(
            zip(versions, records, strict=True),
            key=lambda vr: (vr[1].conversation_id, vr[0], vr[1].created_at, vr[1].message_id),
        )
        return [record for _, record in keyed]

    def commit(self, batch: list[MessageRecord]) -> list[MessageRecord]:
        if batch:
            self.stats.record_age((utcnow() - max(m.created_at for m in batch)).total_seconds())
        return batch

    def dispatch(self, items: list[MessageRecord], version: int) -> None:
        self.registry.dispatch_messages(items, version)
