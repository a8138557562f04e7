"""Decoding stored step rows one by one, so that one bad row cannot stall a tail or a snapshot.

Why: the tail reads a range of table versions and turns every row into a ``StepRecord``. If
one row does not decode (a JSON column that does not parse, a value the model refuses, written
by a buggy plug-in or by hand), decoding the batch as a whole raises, the poll fails, and the
same range is read again forever: every room of every agent stalls. Here such a row becomes a
``SkippedStep``: it keeps its (session_id, seq) place, so the seq check neither holds the
session's later steps nor reports a gap, and it is never sent (subscribers only see their
position move past it). Each bad row is logged once (``Quarantine``), however many snapshots
and polls read it again, and counted in ``/healthz`` (``tail.steps.quarantined``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import pyarrow as pa

from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow

__all__ = ["QUARANTINE", "Quarantine", "SkippedStep", "decode_steps"]

log = logging.getLogger(__name__)

# Bad rows remembered (so each is logged once); beyond it the oldest may be logged again.
QUARANTINE_MEMORY = 10_000


class SkippedStep(StepRecord):
    """Stands in for a row that could not be decoded: it orders like a step and is never sent."""


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


def _skipped(row: dict[str, Any]) -> SkippedStep | None:
    session_id, seq = row.get("session_id"), row.get("seq")
    if not isinstance(session_id, str) or not isinstance(seq, int):
        return None
    agent_id = row.get("agent_id")
    return SkippedStep.model_construct(
        session_id=session_id,
        agent_id=agent_id if isinstance(agent_id, str) else "",
        shard=0,
        seq=seq,
        ts=utcnow(),
        status="error",
        kind="quarantined",
    )


def decode_steps(rows: pa.Table, quarantine: Quarantine = QUARANTINE) -> tuple[list[StepRecord], int]:
    """The rows as records, in row order, bad ones as ``SkippedStep``; and how many were new.

    A row without a readable session_id and seq cannot be placed at all and is dropped (the
    schema makes both non-nullable, so this takes a table written around the schema).
    """
    records: list[StepRecord] = []
    new = 0
    for row in rows.to_pylist():
        try:
            records.append(StepRecord.from_row(row))
        except (ValueError, TypeError, RecursionError) as exc:  # pydantic's ValidationError is a ValueError
            skipped = _skipped(row)
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            if skipped is None:
                log.warning("steps row without session_id/seq cannot be decoded (%s); skipped", reason)
                continue
            new += quarantine.note(skipped.session_id, skipped.seq, reason)
            records.append(skipped)
    return records, new
