"""Ctrl-C for the asyncio parts of agentctl (followers, the no-daemon wait): end cleanly, not with a traceback.

The first SIGINT sets an event that the loop in progress checks between reads (exit 130, or
"withdraw the queued action" while waiting for an acknowledgement); a second one restores the
default handler and re-raises the signal, so a stuck read still dies (uvicorn's second Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

__all__ = ["Stopper"]


class Stopper:
    """Ends a loop on SIGINT; installed only around the loop, removed after it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.interrupted = False

    def _on_sigint(self) -> None:
        if self.interrupted:  # second Ctrl-C: stop waiting for the read in flight
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        self.interrupted = True
        self.event.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)
            added = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            added = False
        try:
            yield self
        finally:
            if added:
                loop.remove_signal_handler(signal.SIGINT)

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the loop should end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        return self.event.is_set()
