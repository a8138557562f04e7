"""What the batching writer holds between commits: rows column by column, and its counters.

Rows arrive already encoded, as tuples in schema order (``StepRecord.to_values``, or built
directly by the session runtime, the hot path: ~10k steps/s per worker), and are buffered
column by column, so a commit converts each column once (``Record.arrow_from_columns``). The
buffer holds no pydantic model, dict or tuple per row: buffered rows allocate no objects the
cyclic garbage collector tracks, so they neither trigger collections nor get thousands of
other objects (the sleeping sessions' timers) promoted to the old generation, whose full
collections would stall the event loop for a whole heartbeat at 10k sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Columns", "FlushStats", "Row"]

# A row in its table's schema order with JSON columns encoded (see ``Record.to_values``).
Row = tuple[Any, ...]


class Columns:
    """Buffered rows, one list per column; with ``keyed``, one row per key (the newest wins)."""

    __slots__ = ("columns", "keys")

    def __init__(self, width: int, keyed: bool = False) -> None:
        self.columns: list[list[Any]] = [[] for _ in range(width)]
        self.keys: dict[Any, int] | None = {} if keyed else None

    def __len__(self) -> int:
        return len(self.columns[0])

    def append(self, row: Row) -> None:
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)

    def upsert(self, key: Any, row: Row) -> None:
        assert self.keys is not None
        index = self.keys.get(key)
        if index is None:
            self.keys[key] = len(self.columns[0])
            self.append(row)
        else:
            for column, value in zip(self.columns, row, strict=True):
                column[index] = value

    def insert_older(self, key: Any, row: Row) -> None:
        """Put back a row that failed to commit, unless a newer one for ``key`` came meanwhile."""
        assert self.keys is not None
        if key not in self.keys:
            self.upsert(key, row)

    def rows(self) -> Any:
        return zip(*self.columns, strict=True)

    def clear(self) -> None:
        for column in self.columns:
            column.clear()
        if self.keys is not None:
            self.keys.clear()


@dataclass(slots=True)
class FlushStats:
    """Counters since start, for status views and benchmarks."""

    flushes: int = 0
    steps: int = 0
    snapshots: int = 0
    failures: int = 0
    last_commit_ms: float = 0.0
    max_commit_ms: float = 0.0
    total_commit_ms: float = 0.0
    commit_ms: list[float] = field(default_factory=list)  # recent, bounded

    def record(self, elapsed_ms: float, steps: int, snapshots: int, *, flush: bool = True) -> None:
        """One commit; ``flush`` counts it as a flush (the ``sessions`` commit that follows one does not)."""
        self.flushes += flush
        self.steps += steps
        self.snapshots += snapshots
        self.last_commit_ms = elapsed_ms
        self.max_commit_ms = max(self.max_commit_ms, elapsed_ms)
        self.total_commit_ms += elapsed_ms
        self.commit_ms.append(elapsed_ms)
        if len(self.commit_ms) > 1000:
            del self.commit_ms[:500]
