"""Actions from the console, submitted through the daemon's control API (agentctl's path).

Why one small module: the browser's ``action`` op must take exactly the path ``agentctl`` takes:
the daemon's owner-only control socket, ``agentd.protocol.SubmitRequest`` with ``wait``. The
supervisor group-commits the action into the ``actions`` table (the source of truth), wakes the
owning worker, and pushes the worker's acknowledgement back; nothing here polls the table. With
no daemon answering, nothing is queued: the console says so at once instead of leaving an
action to fire at some later start. A daemon that does not speak ``submit`` (an older version
behind a newer standalone gateway) is reported the same way, with the reason.

The outcome is always an ``AckEvent``. ``seq`` (the step the action applied at) comes from the
acknowledgement's result (the workers put it there) or, when it has none, from the step that
records the action's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentd.control import DaemonUnreachable
from agentd.gateway.protocol import AckEvent, ActionOp
from agentd.protocol import Accepted, AckReply, End, ErrorReply, ResultReply, SubmitRequest, dump_line, parse_reply
from agentd.store.sql import sql_str

__all__ = ["NO_DAEMON", "ControlBridge", "unanswered"]

log = logging.getLogger(__name__)

NO_DAEMON = "no daemon answers on the control socket (is `agentd run` running with this config?)"
# Reading one reply line; acks may take up to the op's timeout, so this bounds each line only.
LINE_LIMIT = 16 * 1024 * 1024
CONNECT_TIMEOUT = 2.0


@dataclass(slots=True)
class ControlBridge:
    """Submits console actions for one gateway; ``socket`` is None when the config has no socket path."""

    store: Any
    socket: Path | None
    socket_problem: str | None = None
    # Submissions that reached the daemon's control API (for /metrics).
    submitted: int = 0

    async def submit(self, op: ActionOp) -> AckEvent:
        """Queue ``op`` through the daemon and wait for its acknowledgement (at most ``op.timeout``)."""
        if self.socket is None:
            return unanswered(op, self.socket_problem or NO_DAEMON, "unavailable")
        try:
            ack = await self._submit_api(op)
        except DaemonUnreachable as exc:
            log.info("console action %s of %s not queued: %s", op.kind, op.session_id, exc)
            return unanswered(op, f"{NO_DAEMON}; nothing was queued", "unavailable")
        if ack.status == "done" and ack.seq is None and ack.action_id is not None:
            ack.seq = await self._applied_seq(ack.session_id, ack.action_id)
        return ack

    async def _submit_api(self, op: ActionOp) -> AckEvent:
        item = {"kind": op.kind, "session_id": op.session_id, "payload": op.payload}
        message = SubmitRequest(items=[item], wait=True, timeout=op.timeout)
        assert self.socket is not None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.socket), limit=LINE_LIMIT), timeout=CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise DaemonUnreachable(str(exc)) from exc
        action_id: str | None = None
        try:
            writer.write(dump_line(message))
            await writer.drain()
            self.submitted += 1
            async with asyncio.timeout(op.timeout + 5):
                while True:
                    line = await reader.readline()
                    if not line:
                        return _lost(op, action_id)
                    reply = _parse(line)
                    if isinstance(reply, ErrorReply):
                        code = "invalid" if reply.code == "invalid" else "unavailable"
                        return unanswered(op, f"the daemon refused the request: {reply.error}", code)
                    if isinstance(reply, Accepted):
                        if reply.invalid:
                            bad = reply.invalid[0]
                            code = "not_found" if bad.code == "not_found" else "invalid"
                            return unanswered(op, bad.error, code)
                        action_id = reply.actions[0].action_id if reply.actions else None
                    elif isinstance(reply, AckReply):
                        return _from_ack(op, reply)
                    elif isinstance(reply, End):
                        return _pending(op, action_id)
        except TimeoutError:
            return _pending(op, action_id)
        except (OSError, ConnectionError, ValueError):  # reset, or a line over LINE_LIMIT
            return _lost(op, action_id)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _applied_seq(self, session_id: str, action_id: str) -> int | None:
        """The seq of the step that records ``action_id`` (steps carry the action that caused them)."""
        try:
            clause = f"session_id = {sql_str(session_id)} AND action_id = {sql_str(action_id)}"
            rows = await self.store.steps.query().where(clause).select(["seq"]).to_arrow()
        except Exception as exc:  # the ack stands without its seq
            log.debug("seq of action %s not read: %s", action_id, exc)
            return None
        seqs = rows.column("seq").to_pylist() if rows.num_rows else []
        return int(max(seqs)) if seqs else None


def _parse(line: bytes) -> Accepted | AckReply | End | ResultReply | ErrorReply:
    try:
        return parse_reply(line)
    except ValueError as exc:
        # An older daemon answers {"ok": false, "error": "unknown op 'submit' ..."}.
        shown = line.decode(errors="replace")[:200].strip()
        return ErrorReply(code="version", error=f"it does not speak the control API ({shown}); restart it ({exc})")


def _seq_of(result: dict[str, Any] | None) -> int | None:
    value = (result or {}).get("seq")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _from_ack(op: ActionOp, reply: AckReply) -> AckEvent:
    if reply.status == "done":
        return AckEvent(
            id=op.id,
            action_id=reply.action_id,
            session_id=reply.session_id,
            kind=reply.kind,
            status="done",
            result=reply.result,
            seq=_seq_of(reply.result),
        )
    code = "not_found" if reply.code == "not_found" else "rejected"
    error = reply.error or f"{reply.kind} {reply.status}"
    return unanswered(op, error, code, action_id=reply.action_id, result=reply.result)


def unanswered(
    op: ActionOp,
    error: str,
    code: Any,
    *,
    status: Literal["failed", "pending"] = "failed",
    action_id: str | None = None,
    result: dict[str, Any] | None = None,
) -> AckEvent:
    """The console's answer to ``op`` when no worker's acknowledgement is there to pass on:
    refused before it was queued, refused by the daemon, or queued but not acknowledged yet."""
    return AckEvent(
        id=op.id,
        action_id=action_id,
        session_id=op.session_id,
        kind=op.kind,
        status=status,
        error=error,
        code=code,
        result=result,
    )


def _pending(op: ActionOp, action_id: str | None) -> AckEvent:
    error = (
        f"no worker acknowledged the {op.kind} within {op.timeout:g}s; it stays queued and is applied "
        "when a worker claims it"
    )
    return unanswered(op, error, "timeout", status="pending", action_id=action_id)


def _lost(op: ActionOp, action_id: str | None) -> AckEvent:
    """The daemon went away after the request was sent (a restart): say what is known, no more."""
    if action_id is not None:
        error = (
            f"the daemon closed the connection before the acknowledgement; the {op.kind} is queued "
            f"(action {action_id}) and is applied when a worker claims it"
        )
    else:
        error = f"the daemon closed the connection after the request was sent; the {op.kind} may be queued"
    return unanswered(op, error, "unavailable", status="pending", action_id=action_id)
