"""The tail of ``steps``: ``TableTail`` (``tailer.py``) plus a per-session seq check.

A batch whose first seq is not last+1 (or that has a hole) is backfilled from rows committed at
<= v; what is still missing (two writers of one session committing out of order) holds the
later steps back for ``GAP_HOLD_SECONDS``, then they are delivered anyway with a warning, since
a seq that never comes must not stall a room. Versions whose commit hint carried the rows are
taken from the hint instead of read back (``hints.py``), and a batch is offered in parts
(``StepTail.parts``).
"""

from __future__ import annotations

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
from agentd.gateway.tailer import VERSION_COLUMN, TableTail
from agentd.store.sql import sql_str
from agentd.store.steps import read_steps_between_versions

__all__ = ["GAP_HOLD_SECONDS", "PART_ROWS", "StepTail"]

log = logging.getLogger(__name__)

GAP_HOLD_SECONDS = 2.0
# Rows decoded and offered at a time (StepTail.parts).
PART_ROWS = 128
# Per-session last seq remembered for the gap check (LRU); a forgotten session is not checked once.
SEQ_CACHE_SIZE = 100_000
# With at most this many subscribed sessions/agents, rows of others are not turned into records.
FILTER_LIMIT = 512


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
        session_ids = rows.column("session_id").to_pylist()
        summary = _seq_summary(session_ids, rows.column("seq").to_pylist())
        wanted = self.registry.step_filter(FILTER_LIMIT)
        if wanted is not None:
            sessions, agents = wanted
            mask = pc.or_(
                pc.is_in(rows.column("session_id"), pa.array(sorted(sessions), pa.string())),
                pc.is_in(rows.column("agent_id"), pa.array(sorted(agents), pa.string())),
            )
            rows = rows.filter(mask)
            session_ids = rows.column("session_id").to_pylist()
        present = set(session_ids)
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
