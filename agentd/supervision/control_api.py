"""The control API the supervisor serves on its control socket (``agentd.protocol`` requests).

Why through the supervisor: it already has LanceDB open and a pipe to every worker, so a
client (agentctl, the console) needs neither. A submitted action is still a row in the
``actions`` table, claimed by its worker exactly as before (the table is the source of truth);
the socket only makes the path fast:

- concurrent submissions are group-committed: whatever arrives while an append runs goes into
  the next one (``GroupAppender``), so 50 clients cost a few commits, not 50 racing ones;
- the owning workers are woken over their pipes at once, instead of at their next poll;
- a worker pushes its committed acknowledgements up its pipe, and ``AckRouter`` hands them to
  the clients waiting for those actions: nobody polls the table for an answer. A push can be
  lost (a worker killed between its ack commit and the push), so actions waited on for more
  than ``SWEEP_AFTER`` seconds are looked up in the table once per ``SWEEP_INTERVAL``, and once
  more at the client's timeout: a lost push costs latency, never a false "pending".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agentd.control import Reply
from agentd.ids import shard_for
from agentd.protocol import (
    Accepted,
    AcceptedItem,
    Acked,
    AckInfo,
    AckReply,
    ActionItem,
    CancelRequest,
    CommitHint,
    End,
    ErrorReply,
    InvalidItem,
    ReadRequest,
    ResultReply,
    StatusRequest,
    SubmitRequest,
    Wake,
    WakeRequest,
)
from agentd.queue import ActionQueue
from agentd.store.actions import ActionRecord
from agentd.store.version_window import VersionWindow
from agentd.supervision.children import Child
from agentd.supervision.queue_compaction import QueueCompactor
from agentd.supervision.status import supervisor_status

if TYPE_CHECKING:
    from agentd.supervision.supervisor import Supervisor

__all__ = ["AckRouter", "ControlAPI", "GroupAppender"]

log = logging.getLogger("agentd.control")

SWEEP_AFTER = 1.0
# Rows handed over per wake message: a bigger batch goes in several (a pipe message of 2,000
# rows is about 1 MB), so every row is claimed by id. Claiming 2,000 rows by id took 168 ms; a
# claim scan takes 200 rows a round at 114 ms each (a quiet table). On the 2-core test machine
# `create --count 10000` took as long either way (27-30 s, the CPU busy with the sessions
# ticking): this saves the workers' CPU, not wall time there.
MAX_OFFERED = 2000
SWEEP_INTERVAL = 1.0
# Reads of session and action rows that wait for early acknowledgements' rows
# (``AckRouter.settled``); ``status`` reads the newer steps itself (agentd.views.status_view).
ROW_VIEWS = frozenset({"list", "actions"})
SETTLE_TIMEOUT = 2.0
# Commit hints to the gateway carry rows only while less than this is waiting in its pipe.
HINT_BACKLOG_BYTES = 4 * 1024 * 1024


class AckRouter:
    """Which client waits for which action; acknowledgements pushed by workers go to them."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Queue[AckInfo]]] = {}
        self._since: dict[str, float] = {}
        # Actions acknowledged once their step committed, whose rows have not followed yet.
        self._unsettled: dict[str, float] = {}
        self._settled = asyncio.Event()
        self._settled.set()

    def watch(self, action_ids: list[str], inbox: asyncio.Queue[AckInfo]) -> None:
        now = time.monotonic()
        for action_id in action_ids:
            self._waiting.setdefault(action_id, set()).add(inbox)
            self._since.setdefault(action_id, now)

    def unwatch(self, action_ids: list[str], inbox: asyncio.Queue[AckInfo]) -> None:
        for action_id in action_ids:
            waiters = self._waiting.get(action_id)
            if waiters is None:
                continue
            waiters.discard(inbox)
            if not waiters:
                del self._waiting[action_id]
                self._since.pop(action_id, None)

    def deliver(self, acks: list[AckInfo], step_only: bool = False) -> None:
        for ack in acks:
            if step_only:
                self._unsettled[ack.action_id] = time.monotonic()
                self._settled.clear()
            elif self._unsettled.pop(ack.action_id, None) is not None and not self._unsettled:
                self._settled.set()
            for inbox in self._waiting.get(ack.action_id, ()):
                inbox.put_nowait(ack)

    async def settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (at most ``timeout``) until every action acknowledged early has its rows.

        Reads of ``sessions`` rows (``list``, fleet selectors) call this first, so a client
        that was told "paused" then lists sessions sees the session paused. An entry older than
        the timeout is dropped: its worker died, and its replacement writes the rows anew.
        """
        cutoff = time.monotonic() - timeout
        for action_id in [a for a, since in self._unsettled.items() if since < cutoff]:
            del self._unsettled[action_id]
        if not self._unsettled:
            self._settled.set()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._settled.wait()

    def overdue(self, older_than: float) -> list[str]:
        cutoff = time.monotonic() - older_than
        return [action_id for action_id, since in self._since.items() if since <= cutoff]


class GroupAppender:
    """Appends the actions of concurrent submissions together: one commit per round."""

    def __init__(self, queue: ActionQueue) -> None:
        self.queue = queue
        self._pending: list[tuple[list[ActionRecord], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    async def append(self, records: list[ActionRecord]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="action-appender")
        await asyncio.shield(future)

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [record for records, _ in batch for record in records]
            try:
                await self.queue.append_many(rows)
                self.commits += 1
                error: BaseException | None = None
            except Exception as exc:
                log.error("appending %d actions failed: %s", len(rows), exc)
                error = exc
            for _, future in batch:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)


class ControlAPI:
    """Answers one request at a time per connection; see the module docstring for why each part."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.router = AckRouter()
        self._queue: ActionQueue | None = None
        self._appender: GroupAppender | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.compactor: QueueCompactor | None = None  # keeps the actions table's claims cheap
        self._compacting: asyncio.Task[None] | None = None

    @property
    def appends(self) -> int:
        """Group commits of submitted actions so far (for /metrics)."""
        return self._appender.commits if self._appender is not None else 0

    @property
    def queue(self) -> ActionQueue:
        if self._queue is None:
            assert self.sup.store is not None
            self._queue = ActionQueue(self.sup.store.actions, self.sup.store.num_shards)
            self._appender = GroupAppender(self._queue)
        return self._queue

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="ack-sweeper")
        fragments = self.sup.settings.queue.compact_fragments
        if self.compactor is None and fragments and self.sup.store is not None:
            kept = self.sup.settings.maintenance
            self.compactor = QueueCompactor(
                self.sup.store.actions,
                max_fragments=fragments,
                busy=self.sup.maintenance_active.is_set,
                versions=VersionWindow(
                    keep_versions=kept.keep_versions, min_age=kept.min_version_age, max_age=kept.cleanup_older_than
                ),
            )
            self._compacting = asyncio.create_task(self.compactor.run(), name="actions-compaction")

    async def close(self) -> None:
        for task in (self._sweeper, self._compacting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._sweeper = self._compacting = None

    # -- from the workers --------------------------------------------------------------------

    def relay(self, _child: Child, message: Acked | CommitHint) -> None:
        """A child's ``acked`` goes to waiting clients; its ``commit`` hint to the gateway."""
        if isinstance(message, Acked):
            self.router.deliver(message.acks, message.step_only)
        elif self.sup.gateway is not None:
            gateway = self.sup.gateway
            if message.steps_ipc is not None and gateway.buffered() > HINT_BACKLOG_BYTES:
                # The gateway is not reading (stopped, overloaded): keep its backlog small; it
                # reads the rows of a version hinted without them from the table.
                message = message.model_copy(update={"steps_ipc": None})
            gateway.send_nowait(message)

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, request: Any, reply: Reply) -> None:
        if isinstance(request, SubmitRequest):
            await self.submit(request, reply)
        elif isinstance(request, ReadRequest):
            await self.read(request, reply)
        elif isinstance(request, CancelRequest):
            await self.cancel(request, reply)
        elif isinstance(request, StatusRequest):
            await reply({"ok": True, "status": await supervisor_status(self.sup)})
        elif isinstance(request, WakeRequest):
            self.wake({request.shard} if request.shard is not None else None)
            await reply({"ok": True})
        else:  # pragma: no cover - parse_request admits nothing else
            await reply(ErrorReply(code="bad_request", error=f"unsupported request {type(request).__name__}"))

    def wake(self, shards: set[int] | None, appended: list[ActionRecord] | None = None) -> None:
        """Tell the workers owning ``shards`` (all workers for None) that actions wait for them.

        The rows just ``appended`` go along, each to its shard's worker, which then claims them
        by id instead of scanning for them.
        """
        for child in list(self.sup.workers.values()):
            if shards is None or shards.intersection(child.shards):
                mine = set(child.shards)
                rows = [r.model_dump(mode="json") for r in appended or () if r.shard in mine]
                for message in wake_messages(rows):
                    child.send_nowait(message)

    async def submit(self, request: SubmitRequest, reply: Reply) -> None:
        if self.sup.store is None or self.sup._stopping:
            await reply(ErrorReply(code="unavailable", error="the daemon is stopping; try again when it is back"))
            return
        queue = self.queue
        assert self._appender is not None
        accepted: list[AcceptedItem] = []
        invalid: list[InvalidItem] = []
        fresh: list[ActionRecord] = []
        finished: list[AckInfo] = []
        for index, raw in enumerate(request.items):
            try:
                item = ActionItem.model_validate(raw)
            except ValidationError as exc:
                session_id = raw.get("session_id") if isinstance(raw.get("session_id"), str) else None
                invalid.append(InvalidItem(index=index, error=_first_error(exc), session_id=session_id))
                continue
            if item.idempotency_key is not None:  # a retried submission finds its first action
                record = await queue.enqueue(
                    item.kind, item.session_id, item.payload, idempotency_key=item.idempotency_key
                )
                existing = record.status != "pending"
                if record.finished:
                    finished.append(record.ack_info())
            else:
                record = queue.new_action(item.kind, item.session_id, item.payload)
                fresh.append(record)
                existing = False
            accepted.append(
                AcceptedItem(
                    index=index,
                    action_id=record.action_id,
                    session_id=record.session_id,
                    kind=record.kind,
                    existing=existing,
                )
            )
        inbox: asyncio.Queue[AckInfo] = asyncio.Queue()
        done_ids = {ack.action_id for ack in finished}
        waiting = [item.action_id for item in accepted if item.action_id not in done_ids]
        self.router.watch(waiting, inbox)  # before the append: no acknowledgement can be missed
        try:
            try:
                await self._appender.append(fresh)
            except Exception as exc:
                await reply(ErrorReply(code="unavailable", error=f"could not queue the actions: {exc}"))
                return
            self.wake({shard_for(a.session_id, queue.num_shards) for a in accepted}, fresh)
            await reply(Accepted(actions=accepted, invalid=invalid))
            for ack in finished:
                await reply(AckReply(**ack.model_dump()))
            remaining = set(waiting)
            if request.wait:
                await self._await_acks(remaining, inbox, request.timeout, reply)
            await reply(End(pending=sorted(remaining)))
        finally:
            self.router.unwatch(waiting, inbox)

    async def _await_acks(
        self, remaining: set[str], inbox: asyncio.Queue[AckInfo], timeout: float, reply: Reply
    ) -> None:
        deadline = time.monotonic() + timeout
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                ack = await asyncio.wait_for(inbox.get(), left)
            except TimeoutError:
                break
            if ack.action_id in remaining:
                remaining.discard(ack.action_id)
                await reply(AckReply(**ack.model_dump()))
        if remaining:  # a last look at the table: a push lost with its worker is not "pending"
            rows = await self.queue.get_many(sorted(remaining))
            for action_id, record in rows.items():
                if record.finished:
                    remaining.discard(action_id)
                    await reply(AckReply(**record.ack_info().model_dump()))

    async def read(self, request: ReadRequest, reply: Reply) -> None:
        if request.view == "daemon_status":
            await reply(ResultReply(data=await supervisor_status(self.sup)))
            return
        if self.sup.store is None:
            await reply(ErrorReply(code="unavailable", error="the database is not open yet"))
            return
        from agentd.views import read_view

        if request.view in ROW_VIEWS:
            await self.router.settled()
        try:
            data = await read_view(self.sup.store, request.view, request.params)
        except LookupError as exc:
            await reply(ErrorReply(code="not_found", error=str(exc.args[0] if exc.args else exc)))
            return
        except ValueError as exc:
            await reply(ErrorReply(code="bad_request", error=str(exc)))
            return
        await reply(ResultReply(data=data))

    async def cancel(self, request: CancelRequest, reply: Reply) -> None:
        if self.sup.store is None:
            await reply(ErrorReply(code="unavailable", error="the database is not open yet"))
            return
        from agentd.cancel import cancel_actions

        outcome = await cancel_actions(self.sup.store, request.action_ids)
        await reply(ResultReply(data=outcome))

    async def _sweep(self) -> None:
        """Deliver acknowledgements whose push was lost (see the module docstring)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            overdue = self.router.overdue(SWEEP_AFTER)
            if not overdue or self.sup.store is None:
                continue
            try:
                rows = await self.queue.get_many(overdue[:5000])
            except Exception as exc:
                log.debug("ack sweep failed: %s", exc)
                continue
            self.router.deliver([record.ack_info() for record in rows.values() if record.finished])


def wake_messages(rows: list[dict[str, Any]]) -> list[Wake]:
    """The wakes that hand ``rows`` over to one worker, in order; one without rows if none."""
    return [Wake(actions=rows[start : start + MAX_OFFERED]) for start in range(0, max(len(rows), 1), MAX_OFFERED)]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
