"""Named fault points, for tests that prove a guarantee by breaking a process at a chosen place.

``AGENTD_FAULTS`` lists points as ``name[:arg][=action]`` separated by commas. The action is
``kill`` (the default: SIGKILL this process) or ``stall`` (an awaiting point waits until it is
cancelled, e.g. by the tick timeout). For example ``AGENTD_FAULTS=after-effect:interrupt``
kills the worker right after an interrupt's effect is durable and before its acknowledgement is
committed. ``kill-once`` kills only the first process to reach the point, across processes: the
first creates the file named by ``AGENTD_FAULTS_ONCE`` (so a daemon's replacement worker, which
inherits the same environment, survives it). In-process tests arm points with ``arm()``. With
nothing armed (production), ``hit()`` is one dict lookup on an empty dict.

Points:
- ``after-effect[:KIND]``: an action's state change is durable (for pause, resume and interrupt: its
  step, before the ``sessions`` row), its ack neither pushed nor committed.
- ``stopping:ROLE``: a worker (``stopping:worker``) begins its graceful stop (an awaiting
  point: ``stall`` makes the stop hang, as a wedged one would).
- ``after-reply-post``: a persona's reply message is committed, the step recording it not yet
  (an awaiting point: ``stall`` works there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

__all__ = ["arm", "hit", "hit_async"]

log = logging.getLogger(__name__)


def _parse(spec: str) -> dict[str, tuple[str, str]]:
    """``{name: (arg, action)}``; an empty arg matches any."""
    points: dict[str, tuple[str, str]] = {}
    for item in spec.split(","):
        point, _, action = item.strip().partition("=")
        name, _, arg = point.partition(":")
        if name:
            points[name] = (arg, action or "kill")
    return points


_POINTS = _parse(os.environ.get("AGENTD_FAULTS", ""))


def arm(spec: str) -> str:
    """Replace the armed points with ``spec`` (same form as ``AGENTD_FAULTS``); returns the previous spec."""
    global _POINTS
    previous = ",".join(f"{n}{':' + a if a else ''}={act}" for n, (a, act) in _POINTS.items())
    _POINTS = _parse(spec)
    return previous


def _armed(point: str, arg: str) -> str | None:
    armed = _POINTS.get(point)
    if armed is None or (armed[0] and armed[0] != arg):
        return None
    return armed[1]


def hit(point: str, arg: str = "") -> None:
    """SIGKILL this process if ``point`` (optionally restricted to ``arg``) is armed to kill."""
    action = _armed(point, arg)
    if action == "kill-once" and not _first_to_reach():
        return
    if action in ("kill", "kill-once"):
        log.warning("fault point %s:%s armed: killing this process", point, arg)
        os.kill(os.getpid(), signal.SIGKILL)


def _first_to_reach() -> bool:
    marker = os.environ.get("AGENTD_FAULTS_ONCE")
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


async def hit_async(point: str, arg: str = "") -> None:
    """``hit``, or wait until cancelled if ``point`` is armed to stall."""
    hit(point, arg)
    if _armed(point, arg) == "stall":
        log.warning("fault point %s:%s armed: stalling until cancelled", point, arg)
        await asyncio.Event().wait()
