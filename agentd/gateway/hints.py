"""Rows the workers committed, as their commit hints carried them: the step tail's read cache.

Why: at 1,000 sessions a flush is a few hundred steps, and reading them back from LanceDB (a
scan of ``_row_created_at_version``) cost the gateway 9-15 ms per commit, more than the raw
fan-out it feeds. The worker that committed them sends the rows along with the version its
``add()`` created (``agentd.protocol.CommitHint``), so the tail can serve a version range from
here. Exactly once still holds: one ``add()`` creates exactly one version holding exactly those
rows, and any version of the range without hinted rows (another writer's commit, a compaction,
a retention delete, a hint lost or sent without rows) is read from the table as before.

Hints of two workers can arrive out of commit order: the tail delivers the versions up to the
first one without rows at once (``contiguous``), and waits ``GRACE`` for that one's hint before
reading it (``missing_soon``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pyarrow as pa

from agentd.gateway.rows import HINTED_COLUMN
from agentd.store.ipc import table_from_text

__all__ = ["GRACE", "HintedRows"]

log = logging.getLogger(__name__)

# How long a tail waits for the hint of a version it found committed but not hinted yet.
GRACE = 0.02
# Hints count as flowing while the last one came this recently; otherwise nobody waits.
FLOWING = 2.0
# Versions kept at most (a tail that is not reading skips past them anyway).
MAX_VERSIONS = 512


class HintedRows:
    """Rows by ``steps`` version, from commit hints; bounded, dropped once the tail passed them."""

    def __init__(self, max_versions: int = MAX_VERSIONS) -> None:
        self.max_versions = max_versions
        self._rows: dict[int, Any] = {}  # version -> pa.Table
        self._arrived = asyncio.Event()
        self._last = float("-inf")
        self._floor = -1  # versions up to here were passed by the tail: their hints come too late
        self.bad = 0  # hints whose rows did not decode

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, version: int | None, text: str | None) -> None:
        """Keep the rows of ``version``; a hint without rows only counts as flowing."""
        self._last = time.monotonic()
        if version is None or text is None or version <= self._floor:
            return
        try:
            table = table_from_text(text)
        except ValueError as exc:
            self.bad += 1
            log.warning("commit hint for steps version %d has unreadable rows (%s); reading them instead", version, exc)
            return
        self._rows[version] = table.append_column(HINTED_COLUMN, pa.array([True] * table.num_rows, pa.bool_()))
        if len(self._rows) > self.max_versions:
            for old in sorted(self._rows)[: len(self._rows) - self.max_versions]:
                del self._rows[old]
        self._arrived.set()

    def flowing(self) -> bool:
        return time.monotonic() - self._last < FLOWING

    def contiguous(self, after: int, upto: int | None = None) -> int | None:
        """The highest v (<= upto, if given) with rows for every version of (after, v]; None if
        after+1 has none."""
        version = after
        while (upto is None or version < upto) and version + 1 in self._rows:
            version += 1
        return version if version > after else None

    def missing(self, after: int, upto: int) -> list[int]:
        return [v for v in range(after + 1, upto + 1) if v not in self._rows]

    async def missing_soon(self, after: int, upto: int, grace: float = GRACE) -> list[int]:
        """The versions of ``(after, upto]`` still without rows after waiting up to ``grace``
        for their hints (no wait while hints are not flowing)."""
        missing = self.missing(after, upto)
        if not missing or not self.flowing():
            return missing
        deadline = time.monotonic() + grace
        while missing and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                break
            missing = self.missing(after, upto)
        return missing

    def take(self, after: int, upto: int) -> list[Any]:
        """The hinted tables of ``(after, upto]`` in version order; forgets every version <= upto."""
        tables = [self._rows[v] for v in range(after + 1, upto + 1) if v in self._rows]
        self.forget(upto)
        return tables

    def forget(self, upto: int) -> None:
        """The tail moved past ``upto`` (read or skipped): those rows are of no more use."""
        self._floor = max(self._floor, upto)
        for version in [v for v in self._rows if v <= upto]:
            del self._rows[version]
