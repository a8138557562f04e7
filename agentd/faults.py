"""Named fault points, for tests that prove a guarantee by killing a process at a chosen place.

``AGENTD_FAULTS`` lists points as ``name[:arg]`` separated by commas, e.g.
``AGENTD_FAULTS=after-effect:interrupt`` kills the worker with SIGKILL right after an
interrupt's effect is durable and before its acknowledgement is committed. With the variable
unset (production), ``hit()`` is one dict lookup on an empty dict.

Points:
- ``after-effect[:KIND]``: an action's state change is durable, its ack not yet committed.
- ``after-reply-post``: a persona's reply message is committed, the step recording it not yet.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["hit"]

log = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in spec.split(","):
        name, _, arg = item.strip().partition(":")
        if name:
            points[name] = arg
    return points


_POINTS = _parse(os.environ.get("AGENTD_FAULTS", ""))


def hit(point: str, arg: str = "") -> None:
    """SIGKILL this process if ``point`` (optionally restricted to ``arg``) is armed."""
    armed = _POINTS.get(point)
    if armed is None or (armed and armed != arg):
        return
    log.warning("fault point %s:%s armed: killing this process", point, arg)
    os.kill(os.getpid(), signal.SIGKILL)
