"""Following the ``steps`` and ``messages`` tables exactly once (LANCEDB.md, "Tailing").

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
(ending at the same v, which such a subscription's snapshot covers) is read again.

Steps get a per-session seq check on top: a batch whose first seq is not last+1 (or that has a
hole) is backfilled from rows committed at <= v; what is still missing (two writers of one
session committing out of order) holds the later steps back for ``GAP_HOLD_SECONDS``, then
they are delivered anyway with a warning, since a seq that never comes must not stall a room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agentd.gateway.health import TailStats
from agentd.gateway.hints import HintedRows
from agentd.gateway.rooms import RoomRegistry
from agentd.gateway.rows import StepRow, decode_steps
from agentd.store.conversations import MESSAGES, MessageRecord
from agentd.store.sql import sql_str
from agentd.store.steps import read_steps_between_versions
from agentd.timeutil import utcnow

__all__ = ["GAP_HOLD_SECONDS", "MESSAGE_COLUMNS", "VERSION_COLUMN", "MessageTail", "StepTail", "TableTail"]

log = logging.getLogger(__name__)

GAP_HOLD_SECONDS = 2.0
# Pacing (rooms.Pacer): one wait for crowded outboxes, and all waits of one batch together.
PACE_STEP = 0.05
PACE_DEADLINE = 1.0
# Rows decoded and offered at a time (StepTail.parts).
PART_ROWS = 128
# Per-session last seq remembered for the gap check (LRU); a forgotten session is not checked once.
SEQ_CACHE_SIZE = 100_000
# With at most this many subscribed sessions/agents, rows of others are not turned into records.
FILTER_LIMIT = 512
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


@dataclass(slots=True)
class _Held:
    records: list[StepRow]
    since: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _StepBatch:
    # (session_id, max seq) of the sessions in the range with no row here (nobody subscribed):
    # their remembered seq moves on.
    passed: list[tuple[str, int]]
    # Records by session: of subscribed sessions, plus backfilled ones.
    records: dict[str, list[StepRow]]
    # Rows of subscribed sessions not decoded yet: ``StepTail.parts`` decodes them a part at a time.
    rows: pa.Table | None = None
    # Release the steps that earlier polls held back (in the first part of a poll only).
    held: bool = True


def _seq_summary(session_ids: list[Any], seqs: list[Any]) -> list[tuple[str, int, int, int]]:
    """(session_id, min seq, max seq, row count) per session, in order of first appearance; a row
    without either (written around the schema) is left out, as decoding leaves it out.

    A loop, not Arrow's ``group_by``: that runs on Arrow's thread pool, and on a busy machine the
    hand-off to it cost the gateway about a millisecond per commit, before any frame went out.
    """
    found: dict[str, list[int]] = {}
    for session_id, seq in zip(session_ids, seqs, strict=True):
        if type(session_id) is not str or type(seq) is not int:
            continue
        entry = found.get(session_id)
        if entry is None:
            found[session_id] = [seq, seq, 1]
        else:
            if seq < entry[0]:
                entry[0] = seq
            elif seq > entry[1]:
                entry[1] = seq
            entry[2] += 1
    return [(session_id, low, high, count) for session_id, (low, high, count) in found.items()]


def _by_session(records: list[StepRow]) -> dict[str, list[StepRow]]:
    groups: dict[str, list[StepRow]] = {}
    for record in records:
        groups.setdefault(record.session_id, []).append(record)
    return groups


class StepTail(TableTail):
    """Tail of ``steps`` with the per-session seq check (see the module docstring)."""

    def __init__(
        self,
        table: Any,
        registry: RoomRegistry,
        stats: TailStats,
        *,
        poll_interval: float,
        chunk: int = 500,
        hints: HintedRows | None = None,
    ) -> None:
        super().__init__(table, registry, stats, poll_interval=poll_interval, chunk=chunk)
        # Rows from the writers' commit hints: versions found there are not read back.
        self.hints = hints
        # Last seq dispatched (or skipped as unsubscribed) per session; LRU-bounded.
        self._last: OrderedDict[str, int] = OrderedDict()
        # Steps waiting for a missing seq, by session.
        self._held: dict[str, _Held] = {}

    def wanted(self) -> bool:
        return self.registry.wants_steps()

    def known_version(self, after: int) -> int | None:
        # Hinted versions are committed (a worker's add() returned them): when the next ones are
        # here, the poll goes as far as they reach without the table's version check (~1-5 ms
        # under load); versions beyond them are found by the next poll.
        return self.hints.contiguous(after) if self.hints is not None and self.wanted() else None

    def ready_upto(self, after: int, latest: int) -> int:
        # Versions whose hints are here go out now; one still on its way (the other worker's)
        # does not hold them back.
        if self.hints is not None and latest - after <= self.hints.max_versions:
            return self.hints.contiguous(after, latest) or latest
        return latest

    def skip(self, version: int) -> None:
        # Rows pass unseen: the remembered seqs go stale and the held steps have no audience.
        self._last.clear()
        self._held.clear()
        if self.hints is not None:
            self.hints.forget(version)
        super().skip(version)

    def expired(self) -> list[StepRow]:
        return self.commit(_StepBatch([], {})) if self._held else []

    async def _read(self, after: int, upto: int, where: str | None = None) -> pa.Table:
        started = time.perf_counter()
        rows: pa.Table = await read_steps_between_versions(self.table, after, upto, where=where)
        self.stats.record_read(time.perf_counter() - started)
        self.stats.reads += 1
        return rows

    async def _rows_between(self, after: int, upto: int) -> pa.Table:
        """Rows committed in versions ``(after, upto]``: hinted ones as the hints carried them,
        the others read from the table (``hints.py`` says why this is exact)."""
        hints = self.hints
        if hints is None or upto - after > hints.max_versions:
            if hints is not None:
                hints.forget(upto)
            return await self._read(after, upto)
        missing = await hints.missing_soon(after, upto)
        parts = hints.take(after, upto)
        self.stats.hinted += len(parts)
        if missing:
            where = f"{VERSION_COLUMN} IN ({', '.join(str(v) for v in missing)})" if parts else None
            parts.append(await self._read(after, upto, where))
        if len(parts) == 1:
            return parts[0]
        return pa.concat_tables(parts, promote_options="permissive")

    async def prepare(self, after: int, upto: int) -> _StepBatch:
        """The range's rows of subscribed sessions, still encoded, and the repair reads of its gaps."""
        rows = await self._rows_between(after, upto)
        self.stats.rows += rows.num_rows
        if rows.num_rows == 0:
            return _StepBatch([], {})
        summary = _seq_summary(rows.column("session_id").to_pylist(), rows.column("seq").to_pylist())
        wanted = self.registry.step_filter(FILTER_LIMIT)
        if wanted is not None:
            sessions, agents = wanted
            mask = pc.or_(
                pc.is_in(rows.column("session_id"), pa.array(sorted(sessions), pa.string())),
                pc.is_in(rows.column("agent_id"), pa.array(sorted(agents), pa.string())),
            )
            rows = rows.filter(mask)
        present = set(rows.column("session_id").to_pylist())
        passed: list[tuple[str, int]] = []
        backfilled: dict[str, list[StepRow]] = {}
        for session_id, low, high, count in summary:
            if session_id not in present:
                passed.append((session_id, high))
                continue
            last = self._last.get(session_id)
            if (last is not None and low > last + 1) or high - low + 1 != count:
                backfilled[session_id] = await self._backfill(session_id, low if last is None else last, high, upto)
        return _StepBatch(passed, backfilled, rows)

    def parts(self, batch: _StepBatch) -> Iterator[_StepBatch]:
        """About ``PART_ROWS`` rows at a time, each part offered before the next is decoded.

        Turning rows into frames is most of a batch's cost (2-3 ms for the 500 steps of a tick
        burst): the first subscribers get theirs while the rest is decoded. Every session's
        rows, and its backfilled ones, are in one part: the range's rows are not in seq order
        (a version read back comes after the hinted ones), and the seq check of a session it
        has not seen yet starts from the first seq it is given, so a session split over two
        parts lost the steps of the second that came before the first's (the long chaos run:
        a subscriber got seq 2 right after 0).
        """
        rows = batch.rows
        if rows is None:
            yield batch
            return
        rows = rows.take(pc.sort_indices(rows, sort_keys=[("session_id", "ascending"), ("seq", "ascending")]))
        session_ids = rows.column("session_id").to_pylist()
        total, start = rows.num_rows, 0
        while start < total:
            end = min(start + PART_ROWS, total)
            while end < total and session_ids[end] == session_ids[end - 1]:
                end += 1
            groups = _by_session(self._decode(rows.slice(start, end - start)))
            for session_id in set(session_ids[start:end]).intersection(batch.records):
                groups.setdefault(session_id, []).extend(batch.records[session_id])
            yield _StepBatch(batch.passed, groups) if start == 0 else _StepBatch([], groups, held=False)
            start = end

    async def _backfill(self, session_id: str, low: int, high: int, upto: int) -> list[StepRow]:
        """Rows of the session in (low, high) committed at <= upto: the seq check's repair read."""
        self.stats.gaps_detected += 1
        where = f"session_id = {sql_str(session_id)} AND seq > {low} AND seq < {high}"
        rows = await read_steps_between_versions(self.table, 0, upto, where=where)
        return self._decode(rows)

    def _decode(self, rows: pa.Table) -> list[StepRow]:
        """Row by row: an undecodable row has an empty body (``rows.py``), never a failed poll."""
        records, new = decode_steps(rows)
        self.stats.quarantined += new
        return records

    def commit(self, batch: _StepBatch) -> list[StepRow]:
        for session_id, high in batch.passed:
            self._remember(session_id, high)
        ordered: list[StepRow] = []
        sessions = sorted(set(batch.records) | set(self._held)) if batch.held else sorted(batch.records)
        for session_id in sessions:
            ordered += self._release(session_id, batch.records.get(session_id, []))
        newest = max((r.ts_us for r in ordered), default=0)  # 0: none, or only unreadable rows
        if newest:
            self.stats.record_age(time.time() - newest / 1_000_000)
        return ordered

    def dispatch(self, items: list[StepRow], version: int) -> None:
        self.registry.dispatch_steps(items, version)

    def _remember(self, session_id: str, seq: int) -> None:
        previous = self._last.get(session_id)
        self._last[session_id] = seq if previous is None else max(previous, seq)
        self._last.move_to_end(session_id)
        while len(self._last) > SEQ_CACHE_SIZE:
            self._last.popitem(last=False)

    def _release(self, session_id: str, new: list[StepRow]) -> list[StepRow]:
        """The steps of one session that can go out now, in seq order, each at most once."""
        held = self._held.pop(session_id, None)
        by_seq = {r.seq: r for r in (held.records if held else [])}
        last = self._last.get(session_id)
        for record in new:
            if (last is not None and record.seq <= last) or record.seq in by_seq:
                self.stats.duplicates_dropped += 1
                continue
            by_seq[record.seq] = record
        records = [by_seq[s] for s in sorted(by_seq)]
        if not records:
            return []
        expected = records[0].seq if last is None else last + 1
        cut = 0
        while cut < len(records) and records[cut].seq == expected:
            expected += 1
            cut += 1
        ready, waiting = records[:cut], records[cut:]
        if waiting:
            first_held = held.since if held else time.monotonic()
            if time.monotonic() - first_held < GAP_HOLD_SECONDS:
                self._held[session_id] = _Held(waiting, first_held)
            else:
                self.stats.gaps_unfilled += 1
                log.warning(
                    "session %s: seq %d never committed after %.1fs; delivering %d later steps with a gap",
                    session_id,
                    expected,
                    GAP_HOLD_SECONDS,
                    len(waiting),
                )
                ready += waiting
        elif held is not None:
            self.stats.gaps_filled += 1
        if ready:
            self._remember(session_id, ready[-1].seq)
        return ready


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
