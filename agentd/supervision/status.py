"""What ``agentctl daemon status`` (and the console's daemon view) shows of the supervisor.

Kept apart from the supervision loop because it only reads the supervisor's state; nothing
here changes which children run.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from agentd.supervision.gateway_health import fetch_health
from agentd.supervision.handoff import settings_digest

if TYPE_CHECKING:
    from agentd.supervision.supervisor import Supervisor

__all__ = ["supervisor_status"]


async def supervisor_status(sup: Supervisor) -> dict[str, Any]:
    """What ``agentctl daemon status`` shows; ``config_digest`` per child tells which settings it runs."""
    now = time.monotonic()
    children = [c.status(now) for c in sorted(sup.workers.values(), key=lambda c: c.index or 0)]
    for child in (sup.gateway, sup.spare):
        if child is not None:
            children.append(child.status(now))
    for info in children:
        if info["index"] is not None:
            history = sup.restarts.get(info["index"])
            info["restarts"] = history.total if history is not None else 0
    gateway: dict[str, Any] | None = None
    if sup.gateway is not None:
        gateway = await fetch_health(sup.settings.gateway)
    return {
        "pid": os.getpid(),
        "uptime": round(now - sup.started, 1),
        "database": sup.settings.storage.uri,
        "num_shards": sup.settings.storage.num_shards,
        "workers": sup.settings.daemon.workers,
        "ready": sup.ready_notified,
        "sessions": sum(int(c.counters.get("sessions") or 0) for c in sup.workers.values()),
        "children": children,
        "gateway": gateway,
        "heartbeat_timeout": sup.settings.daemon.heartbeat_timeout,
        "maintenance": sup.last_maintenance,
        "config_digest": settings_digest(sup.settings),
        "spare_disabled": sup.spare_disabled,
        "watchdog": {
            "interval": sup.watchdog.interval,
            "pings": sup.watchdog.pings,
            "triggered": sup.watchdog.triggered,
        },
    }
