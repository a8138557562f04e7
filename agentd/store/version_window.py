"""How long a table keeps its old versions: long enough for any operation in flight, short
enough that a busy table does not pile up thousands of them.

Why: the store opens tables with strong consistency (``read_consistency_interval=0``), so every
LanceDB operation first finds the table's latest version, and on a local directory that lists
the table's ``_versions`` directory; a commit lists it again, and a prune reads it all. The cost
grows with every version kept (``bench/versions_bench.py``, the ``actions`` table: with 5,000
versions kept an append took 9.3-9.8 ms and a read by id 6.6-7.2 ms; pruned to a few, 2.1-4.6
and 2.6-2.7 ms; ``optimize()`` 311-385 and 18-19 ms). A fixed age window lets a busy table pile them up: at
``[maintenance] cleanup_older_than = 600`` s, the ``steps`` table of two workers flushing four
times a second keeps about 5,000 versions, and the ``actions`` table under 40 actions a second
(three commits each) 72,000, so every claim would pay tens of milliseconds just to find the
latest version.

The rule: keep old versions for ``keep_versions / commit rate`` seconds (the rate measured
between two prunes of the same table), never less than ``min_age`` and never more than
``max_age`` (``cleanup_older_than``). A quiet table keeps ``max_age``; the ``steps`` table above
keeps about ``keep_versions`` (1,000: two minutes); the ``actions`` table under that stream keeps
``min_age`` worth (60 s: 7,200, a tenth of before).

Why a short age is safe here: every operation checks out the latest version when it starts and
holds it only while it runs (milliseconds; a contended commit, seconds), and nothing in agentd
reads an old version on purpose (the gateway tails the latest version by
``_row_created_at_version``). What a prune can break is an operation still running on a version
that is older than the window *and* was replaced during that operation (LANCEDB.md: a window of
0 s, pruned every 2 s, failed hundreds of reads). Worse, it can lose a commit that already
reported success: a process stopped while its versions were pruned came back, its claim and
acknowledgement "succeeded", and the row still read ``pending`` (``tests/test_version_window.py``). So
``min_age`` (default 60 s) must stay above any operation in flight and above
``[daemon] heartbeat_timeout``: a worker stopped longer than that is killed, never resumed (the
config refuses a shorter ``min_version_age``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["VersionWindow"]


class VersionWindow:
    """The age below which a table's versions are kept, per table, from its commit rate."""

    def __init__(
        self,
        *,
        keep_versions: int,
        min_age: float,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_age <= 0 or max_age < min_age:
            raise ValueError(f"need 0 < min_age <= max_age, got {min_age} and {max_age}")
        self.keep_versions = keep_versions  # 0: keep by age only (max_age)
        self.min_age = min_age
        self.max_age = max_age
        self.clock = clock
        self._seen: dict[str, tuple[int, float]] = {}

    def age(self, table: str, version: int) -> float:
        """Seconds of versions to keep for ``table``, now at ``version``; records the sample.

        The first call for a table has no rate yet and keeps ``max_age``, as does a table that
        has not committed since the last call.
        """
        now = self.clock()
        previous = self._seen.get(table)
        self._seen[table] = (version, now)
        if self.keep_versions <= 0 or previous is None:
            return self.max_age
        committed, elapsed = version - previous[0], now - previous[1]
        if committed <= 0 or elapsed <= 0:
            return self.max_age
        return max(self.min_age, min(self.max_age, self.keep_versions * elapsed / committed))
