"""What a worker counts for Prometheus, sent to the supervisor in every heartbeat.

Workers do not import prometheus-client or serve HTTP: they keep cumulative counters and
fixed-bucket histograms here (a few integer additions per tick), and the heartbeat carries
``WorkerTelemetry.snapshot()``. The supervisor's ``/metrics`` turns the latest snapshot of each
worker into metric families labelled by worker (``agentd.supervision.metrics``), so a restarted
worker is a counter reset of its own series, which Prometheus' ``rate()`` handles.
"""

from __future__ import annotations

import bisect
from typing import Any

__all__ = ["ACTION_BUCKETS", "FLUSH_ROW_BUCKETS", "SECONDS_BUCKETS", "Histogram", "WorkerTelemetry"]

# Upper bounds (Prometheus ``le``), seconds: from a millisecond to a minute.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
ACTION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_ROW_BUCKETS: tuple[float, ...] = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Histogram:
    """Cumulative fixed-bucket histogram: O(log buckets) per observation, no allocation."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        """Per-bucket (not cumulative) counts with their bounds, and the sum."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": round(self.sum, 6)}


class WorkerTelemetry:
    """One worker's counters since it started."""

    def __init__(self) -> None:
        self.ticks = 0
        self.tick_errors = 0
        self.tick_lateness = Histogram(SECONDS_BUCKETS)
        self.tick_duration = Histogram(SECONDS_BUCKETS)
        self.flush_duration = Histogram(SECONDS_BUCKETS)
        self.flush_rows = Histogram(FLUSH_ROW_BUCKETS)
        self.action_latency: dict[str, Histogram] = {}
        self.actions: dict[tuple[str, str], int] = {}  # (kind, outcome) -> count

    def tick(self, duration: float, error: bool) -> None:
        self.ticks += 1
        self.tick_errors += error
        self.tick_duration.observe(duration)

    def flushed(self, seconds: float, rows: int) -> None:
        self.flush_duration.observe(seconds)
        self.flush_rows.observe(rows)

    def action(self, kind: str, outcome: str, latency: float | None) -> None:
        """An acknowledged action; ``latency`` is from its creation to its acknowledgement."""
        key = (kind, outcome)
        self.actions[key] = self.actions.get(key, 0) + 1
        if latency is not None:
            histogram = self.action_latency.get(kind)
            if histogram is None:
                histogram = self.action_latency[kind] = Histogram(ACTION_BUCKETS)
            histogram.observe(max(0.0, latency))

    def snapshot(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "tick_errors": self.tick_errors,
            "tick_lateness": self.tick_lateness.snapshot(),
            "tick_duration": self.tick_duration.snapshot(),
            "flush_duration": self.flush_duration.snapshot(),
            "flush_rows": self.flush_rows.snapshot(),
            "action_latency": {kind: h.snapshot() for kind, h in self.action_latency.items()},
            "actions": [{"kind": k, "outcome": o, "count": n} for (k, o), n in sorted(self.actions.items())],
        }
