"""Restart policy: exponential backoff and crash-loop detection, one history per child slot.

Why one class for workers, the gateway and the warm spare: each needs the same two answers
after an exit ("how long to wait before the next start" and "is this a crash loop"), and the
spare had neither, so a spare that could not boot was respawned about five times a second.
What a crash loop *means* differs and stays with the caller: a worker's halts the daemon, the
gateway's and the spare's only stop that child (the workers keep serving sessions).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from agentd.config import DaemonConfig

__all__ = ["RestartDecision", "RestartHistory"]


@dataclass(frozen=True)
class RestartDecision:
    delay: float  # seconds to wait before starting again
    exits: int  # exits within the crash-loop window, this one included
    crash_loop: bool  # more than crash_loop_restarts exits within the window


class RestartHistory:
    """Exits of one slot within ``crash_loop_window``; ``record()`` after each unplanned exit.

    The first exit in a quiet window restarts at once (``immediate_first``; a worker's
    sessions should resume in well under 2 s), then each further one waits
    ``restart_backoff_initial * 2**n``, capped at ``restart_backoff_max``.
    """

    def __init__(self, cfg: DaemonConfig, *, immediate_first: bool = True) -> None:
        self.cfg = cfg  # replaced on reload by the caller
        self.immediate_first = immediate_first
        self.exits: deque[float] = deque()
        self.total = 0  # restarts ever scheduled, shown in status

    def record(self, now: float | None = None) -> RestartDecision:
        now = time.monotonic() if now is None else now
        self.exits.append(now)
        while self.exits and now - self.exits[0] > self.cfg.crash_loop_window:
            self.exits.popleft()
        count = len(self.exits)
        if count > self.cfg.crash_loop_restarts:
            return RestartDecision(delay=0.0, exits=count, crash_loop=True)
        self.total += 1
        steps = count - 1 if self.immediate_first else count
        delay = 0.0 if steps <= 0 else self.cfg.restart_backoff_initial * 2 ** (steps - 1)
        return RestartDecision(delay=min(delay, self.cfg.restart_backoff_max), exits=count, crash_loop=False)

    def clear(self) -> None:
        self.exits.clear()
