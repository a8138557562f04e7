"""What a SIGHUP reload may change, decided apart from how the supervisor carries it out.

Why refuse instead of patching: ``[storage]`` (the database and its shard count) cannot change
under running workers. Keeping the old ``[storage]`` while taking the rest of the file would
run a configuration nobody wrote, and before children were handed their settings, workers read
the new shard count from disk, failed to open the database and halted the daemon. So a reload
that touches ``[storage]`` is refused whole, the running configuration is kept, and the log
says to restart the daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentd.config import ConfigError, Settings, load_settings
from agentd.supervision.children import stop_children

if TYPE_CHECKING:
    from agentd.supervision.supervisor import Supervisor

__all__ = ["WORKER_SECTIONS", "ReloadPlan", "plan_reload", "reload_config"]

log = logging.getLogger("agentd.supervisor")

# Sections a worker reads: any change restarts the workers (and the spare) on the new values.
WORKER_SECTIONS = ("daemon", "writer", "queue", "runtime", "llm", "logging", "retention")


@dataclass(frozen=True)
class ReloadPlan:
    refused: str | None  # why the whole reload is refused (the old settings stay), else None
    restart_workers: bool
    restart_gateway: bool


def plan_reload(old: Settings, new: Settings) -> ReloadPlan:
    if new.storage != old.storage:
        changed = [
            f"{key} {getattr(old.storage, key)!r} -> {getattr(new.storage, key)!r}"
            for key in type(old.storage).model_fields
            if getattr(old.storage, key) != getattr(new.storage, key)
        ]
        return ReloadPlan(
            refused=f"[storage] cannot change while running ({', '.join(changed)}); restart the daemon to apply it",
            restart_workers=False,
            restart_gateway=False,
        )
    return ReloadPlan(
        refused=None,
        restart_workers=any(getattr(new, s) != getattr(old, s) for s in WORKER_SECTIONS),
        restart_gateway=new.gateway != old.gateway,
    )


async def reload_config(sup: Supervisor) -> None:
    """SIGHUP: re-read the file, validate it, and apply what changed (or keep the old settings).

    Runs inside the supervisor's loop for as long as the old workers take to stop; the
    watchdog task keeps pinging meanwhile. READY=1 follows once the reload is complete (after
    the new workers report ready when they were restarted).
    """
    sup.notifier.reloading(status="reloading configuration")
    try:
        new = load_settings(sup.config_path, db=sup.db_override)
    except ConfigError as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)
        sup.notifier.ready(status=f"reload failed: {str(exc).splitlines()[-1]}")
        return
    old = sup.settings
    plan = plan_reload(old, new)
    if plan.refused is not None:
        log.error("reload refused, keeping the running configuration: %s", plan.refused)
        sup.notifier.ready(status=f"reload refused: {plan.refused}")
        return
    sup.settings = new
    for history in (*sup.restarts.values(), sup.spare_restarts, sup.gateway_restarts):
        history.cfg = new.daemon
    sup.gateway_restarts.clear()
    if plan.restart_workers:
        sup.ready_notified = False  # READY=1 again once the new workers report ready
        log.info("reload: restarting workers (%d -> %d)", old.daemon.workers, new.daemon.workers)
        await restart_all_workers(sup)
    if plan.restart_gateway and sup.gateway is not None:
        gateway, sup.gateway = sup.gateway, None
        gateway.killed = "reload"
        await stop_children([gateway], new.daemon.stop_timeout)
    await sup.start_gateway()
    if any(getattr(new, s) != getattr(old, s) for s in ("maintenance", "retention", "queue")):
        await sup.restart_maintenance()
    sup.spare_restarts.clear()  # a spare left stopped after a crash loop gets another chance
    sup.spare_disabled = None
    await sup.start_spare()
    if not plan.restart_workers:
        sup.notifier.ready(status=sup.status_line())
    log.info("configuration reloaded")


async def restart_all_workers(sup: Supervisor) -> None:
    """Stop every worker and the spare (gracefully, then SIGKILL), then start the new layout.

    The old workers are all gone before any new epoch is written, so no shard is served by
    two processes; their crash-loop histories start afresh. The caller starts a new spare.
    """
    old = list(sup.workers.values())
    spare, sup.spare = sup.spare, None
    if spare is not None:
        old.append(spare)
    for child in old:
        child.killed = "reload"
    await stop_children(old, sup.settings.daemon.stop_timeout)
    sup.workers.clear()
    for history in sup.restarts.values():
        history.clear()
    await sup.start_workers()
