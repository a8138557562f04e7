"""Decoding stored step rows into what the gateway sends, so that one bad row cannot stall a tail.

Why row by row: the tail reads a range of table versions and turns every row into a JSON body.
If one row does not decode (a JSON column that does not parse, a value the model refuses,
written by a buggy plug-in or by hand), decoding the batch as a whole raises, the poll fails,
and the same range is read again forever: every room of every agent stalls. Here such a row
becomes a ``StepRow`` with an empty body: it keeps its (session_id, seq) place, so the seq check
neither holds the session's later steps nor reports a gap, and it is never sent (subscribers
only see their position move past it). Each bad row is logged once (``Quarantine``), however
many snapshots and polls read it again, and counted in ``/healthz`` (``tail.steps.quarantined``).

Why not a pydantic model per row: at 1,000 sessions a commit is ~500 rows, and validating each
into a ``StepRecord`` and dumping it again cost the gateway ~8 ms per commit, more than the
fan-out it feeds (``bench/gateway_bench.py``). A row whose columns already have the types the
model would accept is written straight into the body here: strings escaped, the JSON columns
spliced as stored once ``json.loads`` accepts them, the timestamp formatted by Arrow. Anything
else (a null where the model wants a value, a status outside its set, ``NaN``, a JSON column
that is not an object) takes the model's path, row by row, which either accepts the row as the
model would or quarantines it; both paths give the same JSON (``tests/gateway/test_rows.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, get_args

import pyarrow as pa

from agentd.gateway.protocol import step_body_json
from agentd.store.spec import UTC_TS
from agentd.store.steps import StepRecord, StepStatus

__all__ = ["HINTED_COLUMN", "QUARANTINE", "Quarantine", "StepRow", "decode_steps"]

log = logging.getLogger(__name__)

# Bad rows remembered (so each is logged once); beyond it the oldest may be logged again.
QUARANTINE_MEMORY = 10_000
# True on rows that came with a worker's commit hint (``hints.py``): their JSON columns were
# written by our own encoder (``records.encode_json``), so they need no parse to be trusted.
HINTED_COLUMN = "_hinted"


@dataclass(slots=True, frozen=True)
class StepRow:
    """What the gateway needs of a step row: its place, its commit-side timestamp, its JSON body.

    ``body`` is the step event's fields as one JSON object (``protocol.step_body_json``'s
    output), or "" for a row that could not be decoded: it orders like a step and is never sent.
    """

    session_id: str
    agent_id: str
    seq: int
    ts_us: int  # the step's ts, microseconds since the epoch (0 when unreadable)
    body: str


class Quarantine:
    """The bad rows seen so far (bounded), so that each one is logged once per process."""

    def __init__(self, memory: int = QUARANTINE_MEMORY) -> None:
        self.memory = memory
        self._known: OrderedDict[tuple[str, int], None] = OrderedDict()

    def note(self, session_id: str, seq: int, reason: str) -> bool:
        """Record a bad row; True (and a warning) the first time it is seen."""
        key = (session_id, seq)
        if key in self._known:
            self._known.move_to_end(key)
            return False
        self._known[key] = None
        while len(self._known) > self.memory:
            self._known.popitem(last=False)
        log.warning(
            "steps row of session %s seq %d cannot be decoded (%s); it is left out of the gateway's delivery",
            session_id,
            seq,
            reason,
        )
        return True


# One per process: the tail and every snapshot read the same rows.
QUARANTINE = Quarantine()


def _skipped(row: dict[str, Any]) -> StepRow | None:
    session_id, seq = row.get("session_id"), row.get("seq")
    if not isinstance(session_id, str) or not isinstance(seq, int):
        return None
    agent_id = row.get("agent_id")
    return StepRow(session_id, agent_id if isinstance(agent_id, str) else "", seq, 0, "")


def _by_model(row: dict[str, Any], quarantine: Quarantine) -> tuple[StepRow | None, int]:
    """One row through ``StepRecord``: the body, or a quarantined place (and 1 if newly so)."""
    try:
        record = StepRecord.from_row(row)
    except (ValueError, TypeError, RecursionError) as exc:  # pydantic's ValidationError is a ValueError
        skipped = _skipped(row)
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        if skipped is None:
            log.warning("steps row without session_id/seq cannot be decoded (%s); skipped", reason)
            return None, 0
        return skipped, int(quarantine.note(skipped.session_id, skipped.seq, reason))
    ts_us = int(record.ts.timestamp() * 1_000_000)
    return StepRow(record.session_id, record.agent_id, record.seq, ts_us, step_body_json(record)), 0


_STATUSES = frozenset(get_args(StepStatus))
_COLUMNS = [f.name for f in StepRecord.SCHEMA]
_escape = json.encoder.encode_basestring  # the C escaper of json.dumps(ensure_ascii=False)


def _string(value: Any) -> str | None:
    """``value`` as a JSON string or null; None when it is neither (the model's path decides)."""
    if value is None:
        return "null"
    return _escape(value) if type(value) is str else None


def _object(text: Any, nullable: bool, ours: bool) -> str | None:
    """A stored JSON column to splice as is: an object, valid JSON, no ``NaN``/``Infinity`` (which
    ``json.encoder`` writes and ``json.loads`` accepts, and the model writes as null). ``ours``:
    written by ``records.encode_json``, whose output is valid JSON but for those two, so not
    parsed again. None: take the model's path."""
    if text is None:
        return "null" if nullable else None
    if type(text) is not str or not text.startswith("{") or "NaN" in text or "Infinity" in text:
        return None
    if not ours:
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return None
    return text


def _fast_body(c: dict[str, list[Any]], i: int, ts: str, ours: bool) -> str | None:
    """Row ``i`` as ``step_body_json`` would write it, or None when the model must look at it."""
    session_id, agent_id, seq = c["session_id"][i], c["agent_id"][i], c["seq"][i]
    status, kind, latency = c["status"][i], c["kind"][i], c["latency_ms"][i]
    if (
        type(session_id) is not str
        or type(agent_id) is not str
        or type(seq) is not int
        or type(kind) is not str
        or status not in _STATUSES
        or type(c["shard"][i]) is not int
        or type(c["epoch"][i]) is not int
        or not (latency is None or (type(latency) is float and math.isfinite(latency)))
    ):
        return None
    text, notes, error, action_id = (_string(c[name][i]) for name in ("text", "notes", "error", "action_id"))
    data = _object(c["data"][i], True, ours)
    state = _object(c["state"][i], False, ours)
    guidance = _object(c["guidance"][i], True, ours)
    if None in (text, notes, error, action_id, data, state, guidance):
        return None
    return (
        f'{{"session_id":{_escape(session_id)},"agent_id":{_escape(agent_id)},"seq":{seq},"ts":"{ts}Z",'
        f'"status":"{status}","kind":{_escape(kind)},"text":{text},"data":{data},"state":{state},'
        f'"guidance":{guidance},"notes":{notes},"latency_ms":{"null" if latency is None else repr(latency)},'
        f'"error":{error},"action_id":{action_id}}}'
    )


def decode_steps(rows: pa.Table, quarantine: Quarantine = QUARANTINE) -> tuple[list[StepRow], int]:
    """The rows in row order, bad ones with an empty body; and how many were newly quarantined.

    A row without a readable session_id and seq cannot be placed at all and is dropped (the
    schema makes both non-nullable, so this takes a table written around the schema).
    """
    if rows.num_rows == 0:
        return [], 0
    if any(name not in rows.column_names for name in _COLUMNS) or rows.schema.field("ts").type != UTC_TS:
        return _all_by_model(rows, quarantine)  # not our schema: defaults and conversions are the model's
    columns = {name: rows.column(name).to_pylist() for name in _COLUMNS if name != "ts"}
    micros = rows.column("ts").cast(pa.int64()).to_pylist()
    stamps = _stamps(micros)
    hinted = rows.column(HINTED_COLUMN).to_pylist() if HINTED_COLUMN in rows.column_names else [None] * rows.num_rows
    out: list[StepRow] = []
    new = 0
    for i, stamp in enumerate(stamps):
        body = None
        if stamp is not None:
            body = _fast_body(columns, i, stamp, hinted[i] is True)
        if body is not None:
            out.append(StepRow(columns["session_id"][i], columns["agent_id"][i], columns["seq"][i], micros[i], body))
            continue
        row, fresh = _by_model(rows.slice(i, 1).to_pylist()[0], quarantine)
        new += fresh
        if row is not None:
            out.append(row)
    return out, new


_END_OF_DATETIME_US = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z


def _stamps(micros: list[int | None]) -> list[str | None]:
    """Each ``ts`` as a body writes it (to the second, then ``.ffffff`` unless zero), or None to
    leave the row to the model's path (no value, before 1970, or past what a datetime holds).

    Each second is formatted once: a commit's steps share a few seconds. Arrow's ``strftime``
    kernel took 0.4 ms for a 500-row commit, this 0.1 ms.
    """
    seconds: dict[int, str] = {}
    out: list[str | None] = []
    for us in micros:
        if us is None or not 0 <= us < _END_OF_DATETIME_US:
            out.append(None)
            continue
        second, fraction = divmod(us, 1_000_000)
        base = seconds.get(second)
        if base is None:
            base = seconds[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        out.append(f"{base}.{fraction:06d}" if fraction else base)
    return out


def _all_by_model(rows: pa.Table, quarantine: Quarantine) -> tuple[list[StepRow], int]:
    out: list[StepRow] = []
    new = 0
    for row in rows.to_pylist():
        decoded, fresh = _by_model(row, quarantine)
        new += fresh
        if decoded is not None:
            out.append(decoded)
    return out, new
