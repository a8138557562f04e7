"""A session host: the sessions of a set of shards in one process, and their control actions.

The host loads the live sessions of its shards at start (resuming each from the newer of its
session row and its latest step), claims its shards' actions from the queue, hands each to
the right session's inbox in arrival order, and acknowledges it once the state change is
durable. Actions it cannot apply (unknown session, invalid guidance, missing conversation,
duplicate create) fail with a clear error and leave every other session alone.

Who cancels what: ``run()`` runs until ``stop()`` is called; ``stop()`` stops claiming, asks
every session to finish its tick in flight and persist its snapshot, flushes the writer, and
cancels whatever is still running after ``timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from agentd.agents.base import AgentServices
from agentd.agents.registry import agent_type
from agentd.config import Settings
from agentd.ids import new_id, shard_for
from agentd.llm.base import LLMClient
from agentd.queue import ActionQueue
from agentd.runtime.ack_path import done, rejected
from agentd.runtime.acks import AckBatcher, ClaimKeeper
from agentd.runtime.commands import Command, CommandResult
from agentd.runtime.creates import CreatePath
from agentd.runtime.lateness import LatencyStats
from agentd.runtime.resume import load_live_sessions
from agentd.runtime.session import SessionRunner
from agentd.runtime.unhosted import act_unhosted, replayed_result, write_final_step
from agentd.runtime.watcher import ConversationWatcher
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.sessions import SessionRecord
from agentd.store.steps import StepRecord, steps_of_actions
from agentd.store.writer import BatchingWriter, Committed
from agentd.telemetry import WorkerTelemetry

__all__ = ["SessionHost"]

log = logging.getLogger(__name__)

# Offered rows pinned by one conditional update: its WHERE clause grows with them (2,000 rows
# took 168 ms to claim, 5,000 took 651 ms); more wait for the next turn, which follows at once.
OFFERED_PER_CLAIM = 2000

# A claim that takes longer is abandoned (its rows, if won, are reclaimed after the lease).
CLAIM_TIMEOUT = 30.0

# Seconds of the loop one resumed session's first tick may take: resumed sessions' first ticks
# are spread over this times their number (a JokeAgent tick with its share of the commit takes
# about 60 us: 10,000 sessions at 1 s ticks use 61% of a core, README "Runtime").
RESUME_TICK_COST = 100e-6


class SessionHost(CreatePath):
    """Hosts the sessions of ``shards``. One per worker process (creates: ``CreatePath``)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        shards: list[int],
        llm: LLMClient,
        *,
        epoch: int = 0,
        name: str = "worker",
        fence: Callable[[], Awaitable[None]] | None = None,
        on_acked: Callable[[list[ActionRecord], bool], None] | None = None,
        on_commit: Callable[[Committed], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.shards = sorted(shards)
        self._shard_set = set(shards)
        self.llm = llm
        self.epoch = epoch
        self.name = name
        self.telemetry = WorkerTelemetry()  # cumulative counters and histograms for /metrics
        self.writer = BatchingWriter(
            store,
            flush_interval=settings.writer.flush_interval,
            flush_max_rows=settings.writer.flush_max_rows,
            max_buffered_rows=settings.writer.max_buffered_rows,
            fence=fence,
            on_commit=on_commit,
            on_flush=self.telemetry.flushed,
            epoch=epoch,
        )
        self.queue = ActionQueue(
            store.actions,
            store.num_shards,
            lease=settings.queue.lease,
            claim_batch=settings.queue.claim_batch,
            # Unique per process start: a claimer never re-claims its own claims (see agentd.queue).
            claimer=f"{name}@{epoch}" if epoch else f"{name}@{os.getpid()}.{new_id('h')}",
            epoch=epoch,
        )
        # Told each batch of acknowledgements, with True when pushed early (``_push_early``),
        # before their rows; the worker sends them to the supervisor (``protocol.Acked``).
        self.on_acked = on_acked
        self.acks = AckBatcher(self.queue, on_acked=self._push_committed if on_acked is not None else None)
        self.claims = ClaimKeeper(self.queue)
        self.fence = fence
        self.runners: dict[str, SessionRunner] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.lateness = LatencyStats()
        self.actions_applied = 0
        self.actions_failed = 0
        self.watcher = ConversationWatcher(store, self._wake_conversation, interval=0.1)
        self._hint = asyncio.Event()
        self._offered: list[ActionRecord] = []  # rows handed over with wake hints, claimed first
        self._look = True  # scan the table in the next turn (a wake without rows, or with more)
        self._fresh: set[str] = set()  # session ids a batch lookup found in neither table (creates)
        self._stopping = False
        # A turn that failed after claiming: the actions it held, not dispatched (``_recover``).
        self._undispatched: list[ActionRecord] = []
        self._unsettled = False
        self._ack_tasks: set[asyncio.Task[None]] = set()
        # Actions for a session whose create is still being validated, in arrival order.
        self._creating: dict[str, list[ActionRecord]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Start the writer, resume the live sessions of our shards; returns how many."""
        self.writer.start()
        self.acks.start()
        self.claims.start()
        await self.watcher.start()
        resumed = await self._resume_sessions()
        log.info("%s hosting %d sessions of %d shards", self.name, resumed, len(self.shards))
        return resumed

    async def run(self) -> None:
        """Claim and dispatch actions until ``stop()``; wakes early on ``hint()``."""
        poll = self.settings.queue.poll_interval
        while not self._stopping:
            # Cleared before the offered rows are taken, never after: a wake that comes while
            # this turn claims must start the next turn at once, not wait out the poll interval
            # (it did: the 500 ms tail of the control path).
            self._hint.clear()
            look, self._look = self._look, False
            scanned: list[ActionRecord] = []
            try:
                async with asyncio.timeout(CLAIM_TIMEOUT):
                    if self.fence is not None:
                        await self.fence()
                    if self._unsettled:  # before anything newer of the same sessions is claimed
                        actions = await self._recover()
                    else:
                        # We own these shards: claims someone else holds in them are a dead
                        # predecessor's, taken over at once (the supervisor reaped it first).
                        offered = self._offered[:OFFERED_PER_CLAIM]
                        del self._offered[:OFFERED_PER_CLAIM]
                        if self._offered:  # the rest in the next turn, at once
                            self._hint.set()
                        # Rows handed over with the daemon's wake need no scan to be found. Nor
                        # does a scan follow their claim unless the wake asks for one: it ran
                        # beside the step commit of the action just claimed and made that commit
                        # 2-3 ms slower. The poll's scan finds what else waits.
                        actions = await self.queue.claim_offered(offered, self.shards) if offered else []
                        if look or not actions:
                            scanned = await self.queue.claim(self.shards, takeover=True)
                        actions = [a for a in actions + scanned if a.action_id not in self.claims]
                    for action in actions:
                        self.claims.hold(action)
                    self._undispatched = actions
                    applied = await self._applied_before(actions)
            except Exception as exc:
                if getattr(exc, "fatal", False):
                    raise
                log.warning("claiming actions failed: %r", exc)
                self._unsettled, self._look = True, True
                actions, applied = [], {}
            else:
                self._unsettled, self._undispatched = False, []
            await self._prefetch_creates(actions)
            for action in actions:
                step = applied.get(action.action_id)
                if step is not None:  # applied before a crash or a hand-back: acknowledge it again
                    self._ack(action, done(replayed_result(action, step)))
                else:
                    self._dispatch(action)
            if scanned:
                continue  # the scan takes a batch at a time: there may be more
            try:
                await asyncio.wait_for(self._hint.wait(), poll)
            except TimeoutError:
                pass

    def hint(self, offered: list[ActionRecord] | None = None, *, look: bool = False) -> None:
        """A wake hint: new actions may be waiting (``offered``: the rows, as the daemon appended them).

        Without rows, or with ``look``, the next turn also scans the table for claimable rows.
        """
        if offered:
            self._offered.extend(offered)
        if look or not offered:
            self._look = True
        self._hint.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: finish ticks in flight, persist snapshots, flush. Idempotent."""
        self._stopping = True
        self._hint.set()
        futures = [runner.submit(Command("shutdown")) for runner in list(self.runners.values())]
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                log.warning("%s: %d sessions did not stop within %.0fs; cancelled", self.name, len(still), timeout)
        for future in futures:
            if not future.done():
                future.cancel()
        if self._ack_tasks:
            await asyncio.wait(list(self._ack_tasks), timeout=timeout)
        await self.acks.close()
        await self.watcher.stop()
        await self.writer.close()
        # What was not acknowledged goes back to the queue: the next owner applies it at once.
        await self.claims.hand_back()

    async def _recover(self) -> list[ActionRecord]:
        """After a failed turn: what we claimed and never dispatched, oldest first.

        The actions that turn held, and those whose claim landed though the turn never saw it
        (a timeout after the update). A claimer never re-claims its own claims, so these stayed
        claimed, their leases renewed, until the worker ended, while newer actions of the same
        sessions were applied before them (the long chaos run: 1,681 actions never applied,
        "unknown session" for the actions behind a stuck create).
        """
        held = {a.action_id for a in self._undispatched}
        lost = [a for a in await self.queue.claimed_by_us(self.shards) if a.action_id not in self.claims]
        lost = [a for a in lost if a.action_id not in held]
        return sorted([*self._undispatched, *lost], key=lambda a: (a.created_at, a.action_id))

    async def _applied_before(self, actions: list[ActionRecord]) -> dict[str, StepRecord]:
        """The steps that re-claimed actions caused already (found by their action_id).

        Only an action claimed before (``attempts > 1``) can have been applied; a create is
        recognised by its session's ``_create_action`` instead, since its session row may be
        missing after a crash and the create path repairs that.
        """
        again = [(a.session_id, a.action_id) for a in actions if a.attempts > 1 and a.kind != "create"]
        return await steps_of_actions(self.store.steps, again)

    # -- resuming ----------------------------------------------------------------------------

    async def _resume_sessions(self) -> int:
        """Resume the live sessions of our shards; quarantine those that cannot be resumed."""
        count = 0
        live, ended = await load_live_sessions(self.store, self.shards)
        if ended:  # rows lagging a final step (crash between commits): repaired before any action reads them
            for record in ended:
                generation = await self.writer.submit(None, record)
            await self.writer.wait_durable(generation)
        # First ticks spread over what the loop can take, not over a whole heartbeat: a worker
        # that takes over 500 sessions has them ticking again within 50 ms, not within 1 s.
        within = len(live) * RESUME_TICK_COST
        for record, problem in live:
            if problem is None:
                try:
                    self._start_runner(record, creating=False, resume_within=within)
                    count += 1
                    continue
                except Exception as exc:
                    problem = f"cannot resume: {type(exc).__name__}: {exc}"
            await self._quarantine(record, problem)
        return count

    async def _quarantine(self, record: SessionRecord, reason: str) -> None:
        log.error("session %s quarantined: %s", record.session_id, reason)
        try:
            await write_final_step(
                self.writer, self.store, record, status="error", text="quarantined", epoch=self.epoch, error=reason
            )
        except Exception:
            log.exception("cannot record the quarantine of session %s", record.session_id)

    def _services(self, record: SessionRecord) -> AgentServices:
        session_id = record.session_id

        def wake() -> None:
            runner = self.runners.get(session_id)
            if runner is not None:
                runner.wake(tick=True)

        return AgentServices(
            llm=self.llm,
            store=self.store,
            session_id=session_id,
            agent_id=record.agent_id,
            wake=wake,
            watch_conversation=lambda cid: self.watcher.watch(cid, session_id),
            extras={"default_subject": self.settings.runtime.default_subject},
        )

    def _start_runner(self, record: SessionRecord, *, creating: bool, resume_within: float = 0.0) -> SessionRunner:
        cls = agent_type(record.agent_type)
        config = cls.parse_config({k: v for k, v in record.config.items() if not k.startswith("_")})
        agent = cls(config, self._services(record))
        if creating:
            record.context = {**agent.initial_context(), **record.context, "paused": False}
        if record.conversation_id is None:
            record.conversation_id = agent.conversation_id()
        runner = SessionRunner(
            record,
            agent,
            self.writer,
            heartbeat=self.settings.runtime.heartbeat_interval,
            tick_timeout=self.settings.runtime.tick_timeout,
            creating=creating,
            resume_within=resume_within,
            epoch=self.epoch,
            on_lateness=self._lateness,
            on_tick=self.telemetry.tick,
        )
        # Register before the first await so that actions dispatched next find the session.
        self.runners[record.session_id] = runner
        task = asyncio.create_task(runner.run(), name=f"session:{record.session_id}")
        self.tasks[record.session_id] = task
        task.add_done_callback(functools.partial(self._session_done, record.session_id, runner))
        return runner

    def _session_done(self, session_id: str, runner: SessionRunner, task: asyncio.Task[None]) -> None:
        if self.runners.get(session_id) is runner:
            del self.runners[session_id]
            self.tasks.pop(session_id, None)
            self.watcher.unwatch(session_id)  # a destroyed persona needs no more wakes
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s task failed: %s", session_id, task.exception())

    def _wake_conversation(self, session_ids: set[str]) -> None:
        for session_id in session_ids:
            runner = self.runners.get(session_id)
            if runner is not None:
                runner.wake(tick=True)

    # -- actions -----------------------------------------------------------------------------

    def _dispatch(self, action: ActionRecord) -> None:
        """Route one claimed action; ordering per session is the order of calls.

        Once the host is stopping its sessions are gone or going: the action stays held and is
        handed back to the queue, never refused for a session that is merely moving.
        """
        if self._stopping:
            return
        if action.shard not in self._shard_set or shard_for(action.session_id, self.store.num_shards) != action.shard:
            self._ack(action, rejected(f"action for shard {action.shard} is not hosted here"))
            return
        runner = self.runners.get(action.session_id)
        if action.session_id in self._creating:  # wait for the create in progress
            self._creating[action.session_id].append(action)
            return
        if action.kind == "create":
            if runner is not None:
                self._ack(action, self._duplicate_create(action))
                return
            self._creating[action.session_id] = []
            self._ack(action, self._create(action))
            return
        if runner is None:
            self._ack(action, self._not_hosted(action))
            return
        self._ack(action, runner.submit(Command(action.kind, action.payload, action_id=action.action_id)))

    async def _not_hosted(self, action: ActionRecord) -> CommandResult:
        return await act_unhosted(self.writer, self.store, action, self.epoch)

    def _lateness(self, seconds: float) -> None:
        self.lateness.add(seconds)
        self.telemetry.tick_lateness.observe(seconds)

    # -- status ------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        types: dict[str, int] = {}
        for runner in self.runners.values():  # one pass: 10,000s of sessions, every heartbeat
            statuses[runner.status] = statuses.get(runner.status, 0) + 1
            types[runner.agent.type_name] = types.get(runner.agent.type_name, 0) + 1
        return {
            "sessions": len(self.runners),
            "statuses": statuses,
            "types": types,
            "telemetry": self.telemetry.snapshot(),
            "actions_applied": self.actions_applied,
            "actions_failed": self.actions_failed,
            "lateness_ms": self.lateness.summary(),
            "writer": self.writer.counters(),
            "claims": self.claims.counters(),
        }
