"""The systemd watchdog, pinged from its own task on the supervisor's event loop.

Why a task of its own: the pings used to ride on the supervisor's main loop and only while
every worker was healthy, so a reload or a worker restart (which run inside that loop for as
long as a slow worker takes to stop) left a gap longer than ``WatchdogSec``, and systemd could
kill a healthy daemon mid-reload. A task proves what the watchdog is meant to prove: the
supervisor's loop turns. A blocked loop misses its pings, as it should.

``WATCHDOG=trigger`` (systemd then acts as on a missed ping, at once) is sent only when the
supervisor is truly stuck, as decided by the ``stuck`` callable: one event handled for far
longer than any stop/start can take, or a worker slot left without a ready worker for that
long. Pings stop after a trigger. Restarting workers, a reload, a crash-looping spare or a
dead gateway are not "stuck": the supervisor is handling them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from agentd.config import DaemonConfig
from agentd.sdnotify import SdNotifier

__all__ = ["Progress", "Watchdog", "stuck_after"]

log = logging.getLogger(__name__)


class Watchdog:
    """``run()`` pings every ``notifier.watchdog_interval()`` (half of ``WatchdogSec``).

    ``stuck`` returns a reason when the supervisor cannot make progress, else None.
    ``status`` returns a STATUS line sent with each ping (None: none). Cancel ``run()`` to stop.
    """

    def __init__(
        self,
        notifier: SdNotifier,
        stuck: Callable[[], str | None],
        status: Callable[[], str | None] | None = None,
    ) -> None:
        self.notifier = notifier
        self.stuck = stuck
        self.status = status
        self.pings = 0  # pings sent, for status and tests
        self.triggered: str | None = None  # why WATCHDOG=trigger was sent, once it was

    @property
    def interval(self) -> float | None:
        return self.notifier.watchdog_interval()

    async def run(self) -> None:
        interval = self.interval
        if interval is None:
            return  # no watchdog asked for (not under systemd, or WatchdogSec unset)
        while True:
            reason = self.stuck()
            if reason is not None:
                self.triggered = reason
                log.critical("supervisor stuck (%s): asking systemd to act (WATCHDOG=trigger)", reason)
                self.notifier.watchdog_trigger(status=f"stuck: {reason}")
                return
            self.notifier.watchdog()
            self.pings += 1
            line = self.status() if self.status is not None else None
            if line:
                self.notifier.status(line)
            await asyncio.sleep(interval)


def stuck_after(cfg: DaemonConfig, margin: float = 30.0) -> float:
    """Longer than any stop plus start can take: past it, the supervisor is not recovering."""
    return cfg.boot_timeout + 2 * cfg.stop_timeout + cfg.restart_backoff_max + margin


class Progress:
    """What "truly stuck" is measured on: the event in hand, and slots without a ready worker."""

    def __init__(self, margin: float = 30.0) -> None:
        self.margin = margin  # added to the longest stop-and-start (see stuck_after)
        self.busy: tuple[str, float] | None = None  # the event being handled, and since when
        self.down_since: dict[int, float] = {}  # worker slot -> first seen without a ready worker

    @contextmanager
    def handling(self, kind: str) -> Iterator[None]:
        self.busy = (kind, time.monotonic())
        try:
            yield
        finally:
            self.busy = None

    def stuck(self, cfg: DaemonConfig, ready: set[int]) -> str | None:
        """A reason when one event or one unready slot has lasted past ``stuck_after``, else None."""
        now, limit = time.monotonic(), stuck_after(cfg, self.margin)
        if self.busy is not None and now - self.busy[1] > limit:
            return f"handling {self.busy[0]!r} for {now - self.busy[1]:.0f}s"
        for index in list(self.down_since):
            if index in ready or index >= cfg.workers:
                del self.down_since[index]
        for index in range(cfg.workers):
            if index not in ready and now - self.down_since.setdefault(index, now) > limit:
                return f"worker-{index} has not been ready for {now - self.down_since[index]:.0f}s"
        return None
