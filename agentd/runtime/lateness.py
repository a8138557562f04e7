"""A bounded sample of tick lateness (or any latency) with percentiles, for status and benchmarks."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["LatencyStats"]


class LatencyStats:
    """Reservoir sample of values in seconds; reports milliseconds. O(1) per ``add``."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self.count = 0
        self.max = 0.0
        self._sample: list[float] = []

    def add(self, seconds: float) -> None:
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if len(self._sample) < self.size:
            self._sample.append(seconds)
        else:
            slot = random.randrange(self.count)
            if slot < self.size:
                self._sample[slot] = seconds

    def reset(self) -> None:
        self.count = 0
        self.max = 0.0
        self._sample.clear()

    def percentile(self, q: float) -> float:
        if not self._sample:
            return 0.0
        ordered = sorted(self._sample)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50": round(self.percentile(50) * 1000, 2),
            "p99": round(self.percentile(99) * 1000, 2),
            "max": round(self.max * 1000, 2),
        }
