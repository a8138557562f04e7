"""``agentd run``: the supervisor of worker processes and the gateway.

One flat loop (gunicorn's arbiter, on asyncio): signal handlers and child events only enqueue;
the loop drains the queue and, every turn, checks heartbeats, the watchdog and readiness.

- Worker slot ``k`` owns shards ``s % workers == k``. Each (re)start writes a new epoch for the
  slot to the ``owners`` table *before* the process gets the slot, and a replaced worker is
  killed and reaped first, so no two processes run a shard's sessions at once.
- A dead worker is replaced in its slot at once the first time, then with exponential
  backoff; more than ``crash_loop_restarts`` restarts within ``crash_loop_window`` is a crash
  loop: the supervisor stops everything and exits 1 so that systemd sees the failure.
- A worker silent for ``heartbeat_timeout`` (after it was ready) is hung: SIGKILL, replace.
- A warm spare (a worker interpreter with everything imported, waiting) takes a dead worker's
  slot so its sessions resume in well under 2 s; a new spare is then started.
- SIGTERM/SIGINT: graceful stop (workers finish the tick in flight, flush, exit), SIGKILL
  after ``stop_timeout``; a second SIGINT forces it. SIGHUP: reload the config; a changed
  worker count (or any worker setting) restarts the workers on the new shard layout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from typing import Any

from agentd.config import ConfigError, Settings, load_settings
from agentd.control import ControlServer
from agentd.ids import shards_of_worker
from agentd.sdnotify import SdNotifier
from agentd.store import Store, StoreError
from agentd.store.maintenance import MaintenanceReport, maintenance_loop
from agentd.store.owners import OwnerRecord, retire_owners, set_owner
from agentd.supervision.children import Child, describe_exit, spawn_child
from agentd.supervision.gateway_health import fetch_health
from agentd.timeutil import utcnow
from agentd.worker import EXIT_BOOT

__all__ = ["EXIT_CRASH_LOOP", "Supervisor"]

log = logging.getLogger("agentd.supervisor")

EXIT_OK = 0
EXIT_CRASH_LOOP = 1
EXIT_STARTUP = 2
TICK = 0.25
GATEWAY_SLOT = -1  # key of the gateway's restart history
GATEWAY_EXIT_CONFIG = 78  # EX_CONFIG from agentd.gateway.server: restarting cannot help


class Supervisor:
    def __init__(self, settings: Settings, *, config_path: str | None, db_override: str | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.db_override = db_override
        self.notifier = SdNotifier(unset_environment=True)
        self.workers: dict[int, Child] = {}
        self.spare: Child | None = None
        self.gateway: Child | None = None
        self.restarts: dict[int, deque[float]] = {}
        self.restart_count: dict[int, int] = {}
        self.started = time.monotonic()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._ready_notified = False
        self._stopping = False
        self._exit_code = EXIT_OK
        self._last_watchdog = 0.0
        self._pending_restarts: set[int] = set()
        self._maintenance_stop = asyncio.Event()
        self.store: Store | None = None
        self.last_maintenance: dict[str, Any] | None = None

    # -- entry -------------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            self.store = await Store.open(self.settings.storage.uri, self.settings.storage.num_shards)
        except StoreError as exc:
            log.error("cannot open the database: %s", exc)
            return EXIT_STARTUP
        control = ControlServer(self.settings.control_socket_path, self._control)
        try:
            await control.start()
        except (RuntimeError, OSError) as exc:
            log.error("cannot open the control socket: %s", exc)
            return EXIT_STARTUP
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._events.put_nowait, ("signal", sig))
        maintenance = self._start_maintenance()
        try:
            await self._start_workers()
            await self._start_gateway()
            await self._start_spare()
            self.notifier.status(f"starting {self.settings.daemon.workers} workers")
            while not self._stopping:
                try:
                    kind, value = await asyncio.wait_for(self._events.get(), TICK)
                    await self._handle(kind, value)
                except TimeoutError:
                    pass
                self._check()
            await self._shutdown()
        finally:
            self._maintenance_stop.set()
            if maintenance is not None:
                await asyncio.gather(maintenance, return_exceptions=True)
            await control.close()
            self.notifier.close()
        log.info("supervisor exiting with %d", self._exit_code)
        return self._exit_code

    # -- events ------------------------------------------------------------------------------

    async def _handle(self, kind: str, value: Any) -> None:
        if kind == "signal":
            if value in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s: stopping gracefully", signal.Signals(value).name)
                self._stopping = True
            elif value == signal.SIGHUP:
                await self._reload()
        elif kind == "exit":
            await self._child_exited(value)
        elif kind == "restart":
            self._pending_restarts.discard(value)
            if not self._stopping and value not in self.workers and value < self.settings.daemon.workers:
                await self._start_worker(value)

    async def _child_exited(self, child: Child) -> None:
        code = child.proc.returncode if child.proc.returncode is not None else 0
        cause = describe_exit(code) + (f"; killed by the supervisor: {child.killed}" if child.killed else "")
        if child.role == "spare":
            if self.spare is child:
                self.spare = None
                if not self._stopping:
                    log.warning("the warm spare (pid %d) exited: %s", child.pid, cause)
                    await self._start_spare()
            return
        if child.role == "gateway":
            if self.gateway is child:
                self.gateway = None
                if not self._stopping and child.killed != "reload":
                    await self._gateway_exited(child, code, cause)
            return
        index = child.index
        if index is None or self.workers.get(index) is not child:
            return  # an old worker we replaced or stopped on purpose
        del self.workers[index]
        if self._stopping or child.killed == "reload":
            return
        log.error("worker-%d (pid %d) exited: %s", index, child.pid, cause)
        if code == EXIT_BOOT and not child.ready:
            log.error("worker-%d failed to boot; stopping instead of restarting in a loop", index)
            self._halt()
            return
        self._schedule_restart(index)

    async def _gateway_exited(self, child: Child, code: int, cause: str) -> None:
        """Restart the gateway unless it refused its config or keeps dying; workers go on either way."""
        if code == GATEWAY_EXIT_CONFIG:
            log.error(
                "gateway (pid %d) refused its configuration; not restarting it (fix [gateway], then SIGHUP)", child.pid
            )
            return
        now = time.monotonic()
        window = self.restarts.setdefault(GATEWAY_SLOT, deque())
        window.append(now)
        while window and now - window[0] > self.settings.daemon.crash_loop_window:
            window.popleft()
        if len(window) > self.settings.daemon.crash_loop_restarts:
            log.error("gateway crash loop (%d exits); not restarting it until the next reload", len(window))
            return
        log.error("gateway (pid %d) exited: %s; restarting", child.pid, cause)
        await asyncio.sleep(min(self.settings.daemon.restart_backoff_initial * 2 ** (len(window) - 1), 5.0))
        await self._start_gateway()

    def _schedule_restart(self, index: int) -> None:
        cfg = self.settings.daemon
        now = time.monotonic()
        window = self.restarts.setdefault(index, deque())
        window.append(now)
        while window and now - window[0] > cfg.crash_loop_window:
            window.popleft()
        if len(window) > cfg.crash_loop_restarts:
            log.error(
                "worker-%d crash loop: %d restarts within %.0fs; stopping the daemon",
                index,
                len(window),
                cfg.crash_loop_window,
            )
            self._halt()
            return
        self.restart_count[index] = self.restart_count.get(index, 0) + 1
        delay = (
            0.0
            if len(window) == 1
            else min(cfg.restart_backoff_initial * 2 ** (len(window) - 2), cfg.restart_backoff_max)
        )
        log.info("restarting worker-%d in %.2fs", index, delay)
        self._pending_restarts.add(index)
        asyncio.get_running_loop().call_later(delay, self._events.put_nowait, ("restart", index))

    def _halt(self) -> None:
        self._exit_code = EXIT_CRASH_LOOP
        self._stopping = True

    # -- starting children -------------------------------------------------------------------

    def _child_args(self) -> list[str]:
        args = []
        if self.config_path:
            args += ["--config", self.config_path]
        args += ["--db", self.settings.storage.uri]
        return args

    def _watch(self, child: Child) -> None:
        child.exit_task = asyncio.create_task(child.proc.wait())
        child.exit_task.add_done_callback(lambda _t: self._events.put_nowait(("exit", child)))
        if child.reader is not None:
            child.listen_task = asyncio.create_task(self._listen(child))

    async def _listen(self, child: Child) -> None:
        import json

        assert child.reader is not None
        while True:
            try:
                line = await child.reader.readline()
            except (ConnectionError, ValueError):
                return
            if not line:
                return
            try:
                message = json.loads(line)
            except ValueError:
                continue
            kind = message.get("type")
            if kind == "heartbeat":
                child.last_heartbeat = time.monotonic()
                child.counters = message
            elif kind == "ready":
                child.ready = True
                child.last_heartbeat = time.monotonic()
                child.ready_event.set()
                log.info("%s ready (pid %d, %s sessions)", child.name, child.pid, message.get("sessions"))
            elif kind == "standby":
                child.ready_event.set()

    async def _start_workers(self) -> None:
        workers = self.settings.daemon.workers
        assert self.store is not None
        await retire_owners(self.store, workers)
        for index in range(workers):
            await self._start_worker(index)

    async def _start_worker(self, index: int) -> None:
        assert self.store is not None
        workers = self.settings.daemon.workers
        epoch = time.time_ns()
        spare = self.spare if self.spare is not None and self.spare.ready_event.is_set() and self.spare.alive else None
        # The new epoch is durable before any process acts on the slot.
        await set_owner(
            self.store,
            OwnerRecord(
                worker_index=index, workers=workers, epoch=epoch, pid=spare.pid if spare else None, started_at=utcnow()
            ),
        )
        if spare is not None:
            self.spare = None
            spare.ready_event.clear()
            if await spare.send({"type": "assign", "index": index, "workers": workers, "epoch": epoch}):
                spare.role, spare.index, spare.epoch = "worker", index, epoch
                spare.shards = shards_of_worker(index, workers, self.settings.storage.num_shards)
                spare.started_at = spare.last_heartbeat = time.monotonic()
                self.workers[index] = spare
                log.info("worker-%d: the warm spare (pid %d) took the slot", index, spare.pid)
                await self._start_spare()
                return
            spare.signal(signal.SIGKILL)
        args = [*self._child_args(), "--index", str(index), "--workers", str(workers), "--epoch", str(epoch)]
        child = await spawn_child("worker", "agentd.worker", args, channel=True)
        child.index, child.epoch = index, epoch
        child.shards = shards_of_worker(index, workers, self.settings.storage.num_shards)
        self.workers[index] = child
        self._watch(child)

    async def _start_spare(self) -> None:
        if self._stopping or not self.settings.daemon.warm_spare or self.spare is not None:
            return
        self.spare = await spawn_child("spare", "agentd.worker", [*self._child_args(), "--standby"], channel=True)
        self._watch(self.spare)

    async def _start_gateway(self) -> None:
        if self._stopping or not self.settings.gateway.enabled or self.gateway is not None:
            return
        self.gateway = await spawn_child(
            "gateway", "agentd", [*self._child_args(), "gateway", "--exit-with-parent"], channel=False
        )
        self.gateway.ready = True
        self._watch(self.gateway)

    # -- periodic checks ---------------------------------------------------------------------

    def _check(self) -> None:
        now = time.monotonic()
        cfg = self.settings.daemon
        for child in list(self.workers.values()):
            if not child.alive or child.killed:
                continue
            silent = now - child.last_heartbeat
            limit = cfg.heartbeat_timeout if child.ready else cfg.boot_timeout
            if silent > limit:
                child.killed = f"no heartbeat for {silent:.1f}s (hung)"
                log.error("%s (pid %d) is hung: no heartbeat for %.1fs; killing it", child.name, child.pid, silent)
                child.signal(signal.SIGKILL)
        healthy = len(self.workers) == cfg.workers and all(
            c.ready and c.alive and now - c.last_heartbeat <= cfg.heartbeat_timeout for c in self.workers.values()
        )
        if healthy and not self._ready_notified:
            self._ready_notified = True
            log.info("all %d workers ready", cfg.workers)
            self.notifier.ready(status=self._status_line())
        interval = self.notifier.watchdog_interval()
        if interval is not None and healthy and now - self._last_watchdog >= interval:
            self._last_watchdog = now
            self.notifier.watchdog()
            self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        sessions = sum(int(c.counters.get("sessions") or 0) for c in self.workers.values())
        return f"{len(self.workers)} workers, {sessions} sessions"

    # -- reload ------------------------------------------------------------------------------

    async def _reload(self) -> None:
        self.notifier.reloading(status="reloading configuration")
        try:
            new = load_settings(self.config_path, db=self.db_override)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.ready(status=f"reload failed: {str(exc).splitlines()[-1]}")
            return
        old = self.settings
        if new.storage != old.storage:
            log.error("reload: [storage] cannot change while running (restart the daemon); keeping the old one")
            new = new.model_copy(update={"storage": old.storage})
        restart = any(
            getattr(new, section) != getattr(old, section)
            for section in ("daemon", "writer", "queue", "runtime", "llm", "logging")
        )
        self.settings = new
        if restart:
            # READY=1 is sent again by _check() once the new workers report ready.
            self._ready_notified = False
            log.info("reload: restarting workers (%d -> %d)", old.daemon.workers, new.daemon.workers)
            await self._restart_all_workers()
        if new.gateway != old.gateway and self.gateway is not None:
            gateway, self.gateway = self.gateway, None
            gateway.killed = "reload"
            await self._stop_children([gateway], self.settings.daemon.stop_timeout)
            await self._start_gateway()
        elif new.gateway.enabled and self.gateway is None:
            await self._start_gateway()
        if not restart:
            self.notifier.ready(status=self._status_line())
        log.info("configuration reloaded")

    async def _restart_all_workers(self) -> None:
        old = list(self.workers.values())
        for child in old:
            child.killed = "reload"
        spare, self.spare = self.spare, None
        await self._stop_children(old + ([spare] if spare else []), self.settings.daemon.stop_timeout)
        self.workers.clear()
        self.restarts.clear()
        await self._start_workers()
        await self._start_spare()

    # -- stopping ----------------------------------------------------------------------------

    async def _stop_children(self, children: list[Child], timeout: float, *, force: bool = False) -> None:
        """SIGTERM (SIGKILL with ``force``), wait up to ``timeout``, then SIGKILL and reap."""
        for child in children:
            child.signal(signal.SIGKILL if force else signal.SIGTERM)
        waits = [c.exit_task for c in children if c.exit_task is not None and not c.exit_task.done()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            if pending:
                for child in children:
                    if child.alive:
                        log.warning("%s (pid %d) did not stop in %.0fs; SIGKILL", child.name, child.pid, timeout)
                        child.signal(signal.SIGKILL)
                await asyncio.wait(pending, timeout=10)

    async def _shutdown(self) -> None:
        self.notifier.stopping(status="stopping")
        children = [*self.workers.values(), *(c for c in (self.gateway, self.spare) if c is not None)]
        log.info("stopping %d children", len(children))
        stop_task = asyncio.create_task(self._stop_children(children, self.settings.daemon.stop_timeout))
        while not stop_task.done():
            try:
                kind, value = await asyncio.wait_for(self._events.get(), TICK)
            except TimeoutError:
                continue
            if kind == "signal" and value == signal.SIGINT:
                log.warning("second SIGINT: stopping immediately")
                for child in children:
                    child.signal(signal.SIGKILL)
        await stop_task

    # -- maintenance and control -------------------------------------------------------------

    def _start_maintenance(self) -> asyncio.Task[None] | None:
        cfg = self.settings.maintenance
        if not cfg.enabled or self.store is None:
            return None
        return asyncio.create_task(
            maintenance_loop(
                self.store,
                interval=cfg.interval,
                cleanup_older_than=cfg.cleanup_older_than,
                action_retention=self.settings.queue.retention,
                stop=self._maintenance_stop,
                on_report=self._maintenance_done,
            ),
            name="maintenance",
        )

    def _maintenance_done(self, report: MaintenanceReport) -> None:
        self.last_maintenance = {"at": utcnow().isoformat(), **report.as_dict()}

    async def _control(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "wake":
            shard = message.get("shard")
            targets = list(self.workers.values())
            if isinstance(shard, int):
                targets = [c for c in targets if shard in c.shards]
            for child in targets:
                await child.send({"type": "wake"})
            return {"ok": True}
        if op == "status":
            return {"ok": True, "status": await self.status()}
        return {"ok": False, "error": f"unknown op {op!r} (status, wake)"}

    async def status(self) -> dict[str, Any]:
        now = time.monotonic()
        children = [c.status(now) for c in sorted(self.workers.values(), key=lambda c: c.index or 0)]
        for child in (self.gateway, self.spare):
            if child is not None:
                children.append(child.status(now))
        for info in children:
            if info["index"] is not None:
                info["restarts"] = self.restart_count.get(info["index"], 0)
        gateway: dict[str, Any] | None = None
        if self.gateway is not None:
            gateway = await fetch_health(self.settings.gateway)
        return {
            "pid": os.getpid(),
            "uptime": round(now - self.started, 1),
            "database": self.settings.storage.uri,
            "num_shards": self.settings.storage.num_shards,
            "workers": self.settings.daemon.workers,
            "ready": self._ready_notified,
            "sessions": sum(int(c.counters.get("sessions") or 0) for c in self.workers.values()),
            "children": children,
            "gateway": gateway,
            "heartbeat_timeout": self.settings.daemon.heartbeat_timeout,
            "maintenance": self.last_maintenance,
        }
