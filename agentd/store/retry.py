"""LanceDB's optimistic commits: which failures are a lost race, and running the write again.

Every conditional write on the ``actions`` table (an append, a claim, an acknowledgement, a
cancel) can lose to another process's commit; running it again against the latest version is
safe. They all retry by this one rule: jittered backoff from 10 ms, doubling to a second.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

__all__ = ["retryable", "with_retry"]

log = logging.getLogger("agentd.queue")  # where these retries were logged before the split

# LanceDB raises these (as RuntimeError/OSError text) when optimistic commits keep conflicting.
_RETRYABLE = ("conflict", "TooMuchWriteContention", "preempted", "Retryable", "retry")


def retryable(exc: BaseException) -> bool:
    """LanceDB's optimistic commit lost a race; running the operation again is safe."""
    text = f"{type(exc).__name__}: {exc}"
    return any(marker.lower() in text.lower() for marker in _RETRYABLE)


async def with_retry(what: str, call: Any, attempts: int = 8) -> Any:
    """Run ``call()`` again with jittered backoff while LanceDB reports a commit conflict."""
    delay = 0.01
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as exc:
            if not retryable(exc) or attempt == attempts - 1:
                raise
            log.debug("%s: commit conflict (%s), retrying", what, exc)
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")
