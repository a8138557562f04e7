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
    problems = _problems(sup, gateway, children, now)
    return {
        "healthy": sup.ready_notified and not problems,
        "problems": problems,
        "metrics": sup.metrics.address,
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
        "queue_compaction": sup.control_api.compactor.counters() if sup.control_api.compactor else None,
        "config_digest": settings_digest(sup.settings),
        "spare_disabled": sup.spare_disabled,
        "watchdog": {
            "interval": sup.watchdog.interval,
            "pings": sup.watchdog.pings,
            "triggered": sup.watchdog.triggered,
        },
    }


# A gateway that exited within this many seconds still counts as failing: a port held by another
# process makes it exit every couple of seconds, and /healthz may then be answered by that other
# process, so a successful probe alone proves nothing.
GATEWAY_SETTLE = 10.0


def _problems(sup: Supervisor, gateway: dict[str, Any] | None, children: list[dict[str, Any]], now: float) -> list[str]:
    """What keeps the daemon from being healthy, each as a sentence an operator can act on."""
    problems: list[str] = []
    cfg = sup.settings.gateway
    if cfg.enabled:
        where = f"{cfg.host}:{cfg.port}"
        child = sup.gateway
        if child is None or not child.alive:
            problems.append(f"the gateway is not running on {where} ({sup.gateway_problem or 'not started'})")
        elif sup.gateway_problem is not None and now - child.started_at < GATEWAY_SETTLE:
            problems.append(f"the gateway on {where} keeps restarting: it {sup.gateway_problem}")
        elif gateway is not None and "error" in gateway:
            problems.append(str(gateway["error"]))
    if sup.metrics.error is not None:
        problems.append(sup.metrics.error)
    timeout = sup.settings.daemon.heartbeat_timeout
    for info in children:
        if info["role"] != "worker":
            continue
        if not info["alive"] or not info["ready"]:
            problems.append(f"worker-{info['index']} is not ready")
        elif (info.get("last_heartbeat_ago") or 0) > timeout / 2:
            problems.append(f"worker-{info['index']} is late with its heartbeat ({info['last_heartbeat_ago']}s)")
    return problems
