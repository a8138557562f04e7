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
  worker count (or any worker setting) restarts the workers on the new shard layout; a changed
  ``[storage]`` is refused whole (``agentd.supervision.reload``).
- Children run the settings the supervisor validated, handed over on their channel
  (``agentd.supervision.handoff``), never a fresh read of ``config.toml``.
- One supervisor per database (``agentd.supervision.dblock``); the systemd watchdog is pinged
  from its own task (``agentd.supervision.watchdog``), reloads and restarts included.

Exit codes: 0 stopped cleanly; 1 a worker crash loop or boot failure; 2 bad database or
control socket; 75 (EX_TEMPFAIL) another supervisor holds the database, or this one lost its
lease on an object store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from typing import Any

from agentd.config import ConfigError, Settings
from agentd.control import ControlServer
from agentd.ids import shards_of_worker
from agentd.sdnotify import SdNotifier
from agentd.store import Store, StoreError
from agentd.store.maintenance import MaintenanceReport, maintenance_loop
from agentd.store.owners import OwnerRecord, list_owners, retire_owners, set_owner
from agentd.supervision.children import Child, describe_exit, spawn_child, stop_children
from agentd.supervision.control_api import ControlAPI
from agentd.supervision.dblock import DatabaseClaim, DatabaseInUse
from agentd.supervision.handoff import assign_message, hello_message
from agentd.supervision.metrics import MetricsServer
from agentd.supervision.reload import reload_config
from agentd.supervision.restarts import RestartHistory
from agentd.supervision.watchdog import Progress, Watchdog
from agentd.timeutil import utcnow
from agentd.worker import EXIT_BOOT

__all__ = ["EXIT_CRASH_LOOP", "EXIT_LOCKED", "EXIT_STARTUP", "Supervisor"]

log = logging.getLogger("agentd.supervisor")

EXIT_OK = 0
EXIT_CRASH_LOOP = 1
EXIT_STARTUP = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another supervisor runs on this database; try again later
TICK = 0.25
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
        cfg = settings.daemon
        self.restarts: dict[int, RestartHistory] = {}  # worker slot -> its exits
        self.spare_restarts = RestartHistory(cfg, immediate_first=False)
        self.gateway_restarts = RestartHistory(cfg, immediate_first=False)
        self.spare_disabled: str | None = None  # why no spare is made until the next reload
        self.started = time.monotonic()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.ready_notified = False
        self._stopping = False
        self.control_api = ControlAPI(self)  # the control socket's requests (agentd.protocol)
        self.metrics = MetricsServer(self, settings.metrics)
        self.gateway_problem: str | None = None  # why the gateway last exited (daemon status)
        self._last_epoch = 0  # the newest ownership epoch handed out (or found in the owners table)
        self._exit_code = EXIT_OK
        self.progress = Progress()  # what the watchdog looks at to decide "stuck"
        self._pending_restarts: set[int] = set()
        self._maintenance_stop = asyncio.Event()
        self.watchdog = Watchdog(self.notifier, self._stuck, self.status_line)
        self.store: Store | None = None
        self.last_maintenance: dict[str, Any] | None = None
        self.maintenance_task: asyncio.Task[None] | None = None
        self.maintenance_active = asyncio.Event()  # set while a maintenance pass runs

    # -- entry -------------------------------------------------------------------------------

    async def run(self) -> int:
        claim = DatabaseClaim(self.settings.storage, previous_workers_timeout=self.settings.daemon.stop_timeout + 10)
        try:
            self.store = await claim.open()  # one supervisor per database, before anything else
        except DatabaseInUse as exc:
            log.error("%s", exc)
            return EXIT_LOCKED
        except (StoreError, OSError) as exc:
            log.error("cannot open the database: %s", exc)
            return EXIT_STARTUP
        try:
            return await self._run_locked(claim)
        finally:
            await claim.release()

    async def _run_locked(self, claim: DatabaseClaim) -> int:
        try:
            control = ControlServer(self.settings.control_socket_path, self.control_api.handle)
            await control.start()
            self.control_api.start()
            if self.settings.metrics.enabled:
                await self.metrics.start()
        except (RuntimeError, OSError, ConfigError) as exc:
            log.error("cannot open the control socket: %s", exc)
            return EXIT_STARTUP
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._events.put_nowait, ("signal", sig))
        background = [asyncio.create_task(self.watchdog.run(), name="watchdog")]
        if claim.lease is not None:
            lost = functools.partial(self._halt, EXIT_LOCKED)
            background.append(asyncio.create_task(claim.lease.keep(on_lost=lost), name="lease"))
        self.maintenance_task = self._start_maintenance()
        try:
            await self.start_workers()
            await self.start_gateway()
            await self.start_spare()
            self.notifier.status(f"starting {self.settings.daemon.workers} workers")
            while not self._stopping:
                try:
                    kind, value = await asyncio.wait_for(self._events.get(), TICK)
                except TimeoutError:
                    pass
                else:
                    with self.progress.handling(kind):
                        await self._handle(kind, value)
                self._check()
            await self._shutdown()
        finally:
            await self.stop_maintenance()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await control.close()
            await self.control_api.close()
            await self.metrics.close()
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
                await reload_config(self)
        elif kind == "exit":
            await self._child_exited(value)
        elif kind == "restart":
            self._pending_restarts.discard(value)
            if not self._stopping and value not in self.workers and value < self.settings.daemon.workers:
                await self.start_worker(value)
        elif kind == "spare":
            await self.start_spare()
        elif kind == "gateway":
            await self.start_gateway()

    def _later(self, delay: float, event: tuple[str, Any]) -> None:
        """Enqueue ``event`` after ``delay``: a backoff never blocks the loop."""
        asyncio.get_running_loop().call_later(delay, self._events.put_nowait, event)

    async def _child_exited(self, child: Child) -> None:
        code = child.proc.returncode if child.proc.returncode is not None else 0
        cause = describe_exit(code) + (f"; killed by the supervisor: {child.killed}" if child.killed else "")
        if child.role == "spare":
            if self.spare is child:
                self.spare = None
                if not self._stopping and not child.killed:
                    self._spare_exited(child, cause)
            return
        if child.role == "gateway":
            if self.gateway is child:
                self.gateway = None
                if not self._stopping and child.killed != "reload":
                    self._gateway_exited(child, code, cause)
            return
        index = child.index
        if index is None or self.workers.get(index) is not child:
            return  # an old worker we replaced or stopped on purpose
        del self.workers[index]
        if self._stopping or child.killed == "reload":
            return
        log.error("worker-%d (pid %d) exited: %s", index, child.pid, cause)
        if code == EXIT_BOOT and not child.ready:
            # EXIT_BOOT means the handed-over config or the database is unusable (the worker
            # never reads the file, and sessions it cannot resume exit 1): no restart can help.
            log.error("worker-%d cannot open the database or use its configuration; stopping the daemon", index)
            self._halt()
            return
        self._schedule_restart(index)

    def _spare_exited(self, child: Child, cause: str) -> None:
        """Back off, and after a crash loop make no more spares: workers are replaced cold instead."""
        decision = self.spare_restarts.record()
        if decision.crash_loop:
            self.spare_disabled = f"{decision.exits} exits within {self.settings.daemon.crash_loop_window:.0f}s"
            log.error(
                "the warm spare keeps exiting (%s, last: %s); no more spares until the next reload",
                self.spare_disabled,
                cause,
            )
            return
        log.warning("the warm spare (pid %d) exited: %s; a new one in %.1fs", child.pid, cause, decision.delay)
        self._later(decision.delay, ("spare", None))

    def _gateway_exited(self, child: Child, code: int, cause: str) -> None:
        """Restart the gateway unless it refused its config or keeps dying; workers go on either way."""
        self.gateway_problem = f"exited with {cause} at {utcnow().isoformat(timespec='seconds')}"
        if code == GATEWAY_EXIT_CONFIG:
            log.error(
                "gateway (pid %d) refused its configuration; not restarting it (fix [gateway], then SIGHUP)", child.pid
            )
            return
        decision = self.gateway_restarts.record()
        if decision.crash_loop:
            log.error("gateway crash loop (%d exits); not restarting it until the next reload", decision.exits)
            return
        log.error("gateway (pid %d) exited: %s; restarting in %.1fs", child.pid, cause, decision.delay)
        self._later(decision.delay, ("gateway", None))

    def _schedule_restart(self, index: int) -> None:
        decision = self.restarts.setdefault(index, RestartHistory(self.settings.daemon)).record()
        if decision.crash_loop:
            log.error(
                "worker-%d crash loop: %d restarts within %.0fs; stopping the daemon",
                index,
                decision.exits,
                self.settings.daemon.crash_loop_window,
            )
            self._halt()
            return
        log.info("restarting worker-%d in %.2fs", index, decision.delay)
        self._pending_restarts.add(index)
        self._later(decision.delay, ("restart", index))

    def _halt(self, code: int = EXIT_CRASH_LOOP) -> None:
        self._exit_code = code
        self._stopping = True

    # -- starting children -------------------------------------------------------------------

    def _watch(self, child: Child) -> None:
        child.exit_task = asyncio.create_task(child.proc.wait())
        child.exit_task.add_done_callback(lambda _t: self._events.put_nowait(("exit", child)))
        if child.reader is not None:
            child.listen_task = asyncio.create_task(child.listen(self.control_api.relay))

    async def start_workers(self) -> None:
        workers = self.settings.daemon.workers
        assert self.store is not None
        self._last_epoch = max([self._last_epoch, *(o.epoch for o in await list_owners(self.store))])
        await retire_owners(self.store, workers)
        for index in range(workers):
            await self.start_worker(index)

    async def start_worker(self, index: int) -> None:
        assert self.store is not None
        workers = self.settings.daemon.workers
        # Epochs only grow, even if the wall clock steps back: rows are fenced by comparing them.
        epoch = self._last_epoch = max(time.time_ns(), self._last_epoch + 1)
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
            if await spare.send(assign_message(self.settings, index=index, workers=workers, epoch=epoch)):
                spare.role, spare.index, spare.epoch = "worker", index, epoch
                spare.shards = shards_of_worker(index, workers, self.settings.storage.num_shards)
                spare.started_at = spare.last_heartbeat = time.monotonic()
                self.workers[index] = spare
                log.info("worker-%d: the warm spare (pid %d) took the slot", index, spare.pid)
                await self.start_spare()
                return
            spare.killed = "lost its channel during an assignment"
            spare.signal(signal.SIGKILL)
        args = ["--index", str(index), "--workers", str(workers), "--epoch", str(epoch)]
        child = await spawn_child("worker", "agentd.worker", args, channel=True, hello=hello_message(self.settings))
        child.index, child.epoch = index, epoch
        child.shards = shards_of_worker(index, workers, self.settings.storage.num_shards)
        self.workers[index] = child
        self._watch(child)

    async def start_spare(self) -> None:
        if self._stopping or not self.settings.daemon.warm_spare or self.spare is not None or self.spare_disabled:
            return
        hello = hello_message(self.settings)
        self.spare = await spawn_child("spare", "agentd.worker", ["--standby"], channel=True, hello=hello)
        self._watch(self.spare)

    async def start_gateway(self) -> None:
        if self._stopping or not self.settings.gateway.enabled or self.gateway is not None:
            return
        hello = hello_message(self.settings)
        self.gateway = await spawn_child("gateway", "agentd.supervision.gateway_child", [], channel=True, hello=hello)
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
        if healthy and not self.ready_notified:
            self.ready_notified = True
            log.info("all %d workers ready", cfg.workers)
            self.notifier.ready(status=self.status_line())

    def _stuck(self) -> str | None:
        """Why the supervisor cannot make progress (the watchdog then triggers), or None."""
        if self._stopping:
            return None
        ready = {i for i, c in self.workers.items() if c.ready and c.alive}
        return self.progress.stuck(self.settings.daemon, ready)

    def status_line(self) -> str:
        sessions = sum(int(c.counters.get("sessions") or 0) for c in self.workers.values())
        return f"{len(self.workers)} workers, {sessions} sessions"

    # -- stopping ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self.notifier.stopping(status="stopping")
        children = [*self.workers.values(), *(c for c in (self.gateway, self.spare) if c is not None)]
        log.info("stopping %d children", len(children))
        stop_task = asyncio.create_task(stop_children(children, self.settings.daemon.stop_timeout))
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
        self._maintenance_stop = asyncio.Event()
        return asyncio.create_task(
            maintenance_loop(
                self.store,
                interval=cfg.interval,
                cleanup_older_than=cfg.cleanup_older_than,
                keep_versions=cfg.keep_versions,
                min_version_age=cfg.min_version_age,
                action_retention=self.settings.queue.retention,
                stop=self._maintenance_stop,
                on_report=self._maintenance_done,
                retention=self.settings.retention,
                active=self.maintenance_active,
            ),
            name="maintenance",
        )

    async def stop_maintenance(self) -> None:
        """Stop the maintenance loop after its pass in flight (it re-reads nothing by itself)."""
        self._maintenance_stop.set()
        if self.maintenance_task is not None:
            await asyncio.gather(self.maintenance_task, return_exceptions=True)
            self.maintenance_task = None

    async def restart_maintenance(self) -> None:
        """After a reload: run maintenance on the new [maintenance], [retention] and [queue] values."""
        await self.stop_maintenance()
        self.maintenance_task = self._start_maintenance()

    def _maintenance_done(self, report: MaintenanceReport) -> None:
        self.last_maintenance = {"at": utcnow().isoformat(), **report.as_dict()}
