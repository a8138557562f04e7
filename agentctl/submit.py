"""Queue actions, wait for their acknowledgements, classify the outcomes: one module, both paths.

**Daemon path** (the usual one): one ``submit`` request on the control socket carries the
whole batch; the daemon group-commits it to the ``actions`` table, wakes the owning workers
and streams one ``ack`` per action as the workers' acknowledgements are pushed to it. Nothing
heavy is imported (no LanceDB, no asyncio).

**No-daemon path**: when nothing answers on the socket, the actions are appended directly
(``agentctl.direct``) and the user is told at once that no daemon answers and that the actions
are queued; then (unless ``--no-wait``) their rows are polled until ``--timeout``. If the
daemon goes away while a client waits, the rows are polled the same way for what is left.

Ctrl-C while waiting withdraws the actions no worker has claimed yet (``agentd.cancel``), and
says which ones were withdrawn and which will still be applied.

Classification (``outcome_error``) is the one place where an outcome becomes an exit code:
``not_found`` -> exit 3, any other failure -> 1, malformed item -> 2, not acknowledged in time
-> 4. The code comes from the action row (``error_code``), never from the message, except for
rows written by an agentd older than that column.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import click

from agentctl.context import Obj
from agentctl.errors import EXIT_INTERRUPTED, CtlError, NotFound, Rejected, TimedOut, Unreachable, UsageProblem
from agentctl.transport import Connection, DaemonLost, NoDaemon
from agentd.protocol_client import Message, request_line

__all__ = ["Batch", "ItemOutcome", "outcome_error", "say_withdrawn", "submit", "withdraw"]

# Extra seconds a reply may take beyond the request's own timeout before the daemon counts as gone.
REPLY_SLACK = 30.0
# Error codes after which the daemon queued nothing and the no-daemon path can take over.
_FALL_BACK_CODES = ("unavailable", "version")

State = Literal["done", "failed", "pending", "invalid"]


class Ack(Protocol):
    """An acknowledgement: the daemon's ``ack`` reply, or ``AckInfo`` read from the row directly."""

    @property
    def action_id(self) -> str: ...
    @property
    def status(self) -> Literal["done", "failed"]: ...
    @property
    def result(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...


@dataclass(slots=True)
class ItemOutcome:
    """What became of one submitted item (by its index in the batch)."""

    index: int
    kind: str
    session_id: str | None
    action_id: str | None = None
    state: State = "pending"
    result: dict[str, Any] | None = None
    error: str | None = None
    code: str | None = None

    def take(self, ack: Ack) -> None:
        self.state = ack.status
        self.result = ack.result
        self.error = ack.error
        self.code = ack.code


@dataclass(slots=True)
class Batch:
    """A submitted batch: its items' outcomes, and whether the daemon carried it."""

    items: list[ItemOutcome]
    timeout: float
    socket: str
    no_daemon: str | None = None  # why the no-daemon path was taken (None: the daemon answered)
    by_action: dict[str, ItemOutcome] = field(default_factory=dict)

    def pending_ids(self) -> list[str]:
        return [i.action_id for i in self.items if i.state == "pending" and i.action_id]

    def ack(self, ack: Ack, on_ack: Callable[[ItemOutcome], None] | None) -> None:
        item = self.by_action.get(ack.action_id)
        if item is None or item.state != "pending":
            return
        item.take(ack)
        if on_ack is not None:
            on_ack(item)


def outcome_error(item: ItemOutcome, batch: Batch) -> CtlError | None:
    """The error (and so the exit code) of one outcome; None when it succeeded."""
    details: dict[str, Any] = {"action_id": item.action_id, "session_id": item.session_id, "kind": item.kind}
    if item.state == "done":
        return None
    if item.state == "invalid":
        return UsageProblem(item.error or "invalid item", code=item.code or "invalid", index=item.index, **details)
    if item.state == "pending":
        why = (
            f" (no daemon answers on {batch.socket}: is `agentd run` running with this config?)"
            if batch.no_daemon
            else ""
        )
        return TimedOut(
            f"no worker acknowledged {item.kind} of session {item.session_id} within {batch.timeout:g}s{why}; "
            f"the action stays queued (action {item.action_id}) and will be applied when a worker claims it "
            f"(`agentctl cancel {item.action_id}` withdraws it)",
            status="pending",
            **details,
        )
    error = item.error or f"{item.kind} failed without a message"
    code = item.code
    if code is None:  # a row written by an agentd older than the error_code column
        code = "not_found" if error.startswith("unknown session") else "rejected"
    if code == "not_found":
        return NotFound(error, status="failed", code=code, **details)
    return Rejected(error, status="failed", code=code, **details)


def _items(raw: list[dict[str, Any]]) -> list[ItemOutcome]:
    return [
        ItemOutcome(index=i, kind=str(item.get("kind")), session_id=item.get("session_id"))
        for i, item in enumerate(raw)
    ]


def submit(
    obj: Obj,
    raw_items: list[dict[str, Any]],
    *,
    wait: bool,
    on_ack: Callable[[ItemOutcome], None] | None = None,
    on_accepted: Callable[[Batch], None] | None = None,
) -> Batch:
    """Queue ``raw_items`` (ActionItem-shaped dicts) as one batch and, with ``wait``, wait for them.

    ``on_accepted`` runs once the actions are queued (ids known); ``on_ack`` once per
    acknowledgement. Ctrl-C while waiting withdraws what no worker claimed and exits 130.
    """
    timeout = obj.action_timeout()
    path = obj.socket_path()
    batch = Batch(_items(raw_items), timeout, str(path))
    try:
        conn = Connection(path)
    except NoDaemon as exc:
        batch.no_daemon = str(exc)
        return _submit_direct(obj, batch, raw_items, wait, on_ack, on_accepted)
    deadline = time.monotonic() + timeout
    try:
        with conn:
            conn.send(request_line("submit", items=raw_items, wait=wait, timeout=timeout))
            replies = conn.replies(timeout + REPLY_SLACK)
            first = next(replies)
            if first.type == "error":
                if first.code in _FALL_BACK_CODES:
                    batch.no_daemon = f"the daemon on {path} cannot take actions now: {first.error}"
                    return _submit_direct(obj, batch, raw_items, wait, on_ack, on_accepted)
                if first.code == "forbidden":
                    raise Unreachable(first.error, socket=str(path))
                raise UsageProblem(f"the daemon refused the request: {first.error}", code=first.code)
            if first.type != "accepted":
                raise DaemonLost(f"the daemon answered {first.type!r} before accepting the actions")
            _apply_accepted(batch, first)
            if on_accepted is not None:
                on_accepted(batch)
            try:
                for reply in replies:
                    if reply.type == "ack":
                        batch.ack(reply, on_ack)
                    elif reply.type == "end":
                        break
            except DaemonLost as exc:  # restarted meanwhile: the rows still say what happened
                if wait and batch.pending_ids():
                    click.echo(f"agentctl: {exc}; reading the actions' rows instead", err=True)
                    _wait_direct(obj, batch, deadline, on_ack)
    except KeyboardInterrupt:
        _interrupted(obj, batch)
    except DaemonLost as exc:
        if not batch.by_action:  # never accepted: whether anything was queued is unknown
            raise TimedOut(
                f"{exc} before confirming the actions were queued; `agentctl actions` shows whether they were"
            ) from exc
    return batch


def _apply_accepted(batch: Batch, accepted: Message) -> None:
    for entry in accepted.actions:
        item = batch.items[entry.index]
        item.action_id = entry.action_id
        item.session_id = entry.session_id  # an idempotency key seen before: the first action's session
        batch.by_action[entry.action_id] = item
    for bad in accepted.invalid:
        item = batch.items[bad.index]
        item.state, item.error, item.code = "invalid", bad.error, bad.code


def _interrupted(obj: Obj, batch: Batch) -> None:
    """Ctrl-C while waiting: withdraw what no worker claimed, say so, exit 130."""
    pending = batch.pending_ids()
    if not pending:
        click.echo("agentctl: interrupted", err=True)
    else:
        say_withdrawn(withdraw(obj, pending))
    raise click.exceptions.Exit(EXIT_INTERRUPTED)


def say_withdrawn(results: list[dict[str, Any]]) -> None:
    """After Ctrl-C: which actions were withdrawn, and which a worker had already claimed."""
    withdrawn = [r["action_id"] for r in results if r["outcome"] == "cancelled"]
    kept = [r["action_id"] for r in results if r["outcome"] != "cancelled"]
    if withdrawn:
        click.echo(f"agentctl: interrupted; withdrew {_count(withdrawn)} (no worker had claimed it yet)", err=True)
    if kept:
        click.echo(
            f"agentctl: interrupted; {_count(kept)} already claimed by a worker (or finished) will still take effect",
            err=True,
        )


def _count(action_ids: list[str]) -> str:
    return f"action {action_ids[0]}" if len(action_ids) == 1 else f"{len(action_ids)} actions"


def withdraw(obj: Obj, action_ids: list[str]) -> list[dict[str, Any]]:
    """Cancel actions (daemon first, else directly); the per-id results of ``agentd.cancel``."""
    from agentctl import transport

    try:
        data = transport.cancel(obj.socket_path(), action_ids, timeout=obj.socket_timeout())
    except (NoDaemon, DaemonLost):

        async def go() -> Any:
            from agentctl.direct import DirectQueue

            return await (await DirectQueue.open(obj.settings())).cancel(action_ids)

        data = obj.run(go())
    results: list[dict[str, Any]] = data["results"]
    return results


def _submit_direct(
    obj: Obj,
    batch: Batch,
    raw_items: list[dict[str, Any]],
    wait: bool,
    on_ack: Callable[[ItemOutcome], None] | None,
    on_accepted: Callable[[Batch], None] | None,
) -> Batch:
    """Without a daemon: append here, say so at once, then poll the rows (Ctrl-C withdraws)."""
    settings = obj.settings()

    async def go() -> bool:
        from agentctl.direct import DirectQueue
        from agentctl.stopper import Stopper

        stopper = Stopper()
        with stopper.installed():
            direct = await DirectQueue.open(settings)
            records, invalid, finished = await direct.enqueue(raw_items)
            for item, record in zip(batch.items, records, strict=True):
                if record is not None:
                    item.action_id, item.session_id = record.action_id, record.session_id
                    batch.by_action[record.action_id] = item
                elif item.index in invalid:
                    item.state, item.error, item.code = "invalid", invalid[item.index], "invalid"
            _announce(batch, wait)
            if on_accepted is not None:
                on_accepted(batch)
            for ack in finished:
                batch.ack(ack, on_ack)
            if not wait or not batch.pending_ids():
                return False
            deadline = time.monotonic() + batch.timeout
            await direct.wait(batch.pending_ids(), deadline, lambda ack: batch.ack(ack, on_ack), stopper)
            if stopper.interrupted:
                pending = batch.pending_ids()
                if pending:
                    say_withdrawn((await direct.cancel(pending))["results"])
                return True
            return False

    if obj.run(go()):
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    return batch


def _announce(batch: Batch, wait: bool) -> None:
    """Say at once that no daemon answers and what is queued (stderr)."""
    queued = [i for i in batch.items if i.action_id]
    if not queued:
        return
    if len(queued) == 1:
        what = f"the {queued[0].kind} of session {queued[0].session_id} is queued (action {queued[0].action_id})"
    else:
        what = f"{len(queued)} actions are queued"
    then = (
        f"waiting up to {batch.timeout:g}s for a worker (Ctrl-C withdraws it)"
        if wait
        else "a worker applies it once the daemon runs (`agentctl cancel ACTION_ID` withdraws it)"
    )
    click.echo(f"agentctl: {batch.no_daemon}; {what}; {then}", err=True)


def _wait_direct(obj: Obj, batch: Batch, deadline: float, on_ack: Callable[[ItemOutcome], None] | None) -> None:
    async def go() -> None:
        from agentctl.direct import DirectQueue

        direct = await DirectQueue.open(obj.settings())
        await direct.wait(batch.pending_ids(), deadline, lambda ack: batch.ack(ack, on_ack))

    obj.run(go())
