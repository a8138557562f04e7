"""Running action commands: one session exactly as before, or many as one batch with a summary.

A single-session command (``agentctl pause ID``) keeps its output and JSON shape (scripts rely
on them). Several ids, or a selector (``--agent-id``, ``--type``, ``--status``, ``--all``),
become one ``submit`` batch (``agentctl.submit``); a selector asks first on a terminal (unless
``--yes``), skips sessions already in the state asked for (and, except for destroy, finished
ones), shows a progress bar on stderr when stderr is a terminal, and ends with a summary:
applied, failed, skipped. Exit 1 if any item failed, else 4 if any is still queued.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from agentctl.context import Obj
from agentctl.errors import EXIT_FAILED, EXIT_TIMEOUT, CtlError, Rejected, UsageProblem
from agentctl.output import emit_json
from agentctl.reads import read
from agentctl.submit import Batch, ItemOutcome, outcome_error, submit
from agentd.ids import shard_for

__all__ = ["Progress", "Selector", "create_error", "queued_json", "run_many", "run_single"]

# Sessions a selector skips per action: already in the state asked for.
ALREADY = {
    "pause": {"paused": "already paused"},
    "resume": {"running": "already running", "starting": "already running"},
    "destroy": {"stopped": "already stopped", "stopping": "already stopping"},
    "interrupt": {},
}
FINISHED = {"stopped": "stopped", "error": "in error"}
# Shown in a confirmation question before the list is cut short.
CONFIRM_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Selector:
    """Which sessions a fleet command acts on (any combination; ``every`` alone means all)."""

    agent_id: str | None = None
    agent_type: str | None = None
    statuses: tuple[str, ...] = ()
    every: bool = False

    @property
    def given(self) -> bool:
        return self.every or bool(self.agent_id or self.agent_type or self.statuses)


class Progress:
    """A progress bar on stderr, only when stderr is a terminal and there is more than one item."""

    def __init__(self, total: int, label: str) -> None:
        self._bar: Any = None
        if total > 1 and sys.stderr.isatty():
            self._bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            self._bar.__enter__()

    def step(self, _item: ItemOutcome | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def queued_json(obj: Obj, item: ItemOutcome) -> dict[str, Any]:
    """What ``--no-wait`` prints per action (the contract of issue 6)."""
    sid = str(item.session_id)
    return {
        "action_id": item.action_id,
        "session_id": sid,
        "kind": item.kind,
        "shard": shard_for(sid, obj.light().num_shards),
        "status": "pending",
    }


def create_error(item: ItemOutcome) -> CtlError | None:
    """A create acknowledged for a session that is in error did not give the user a working session."""
    result = item.result or {}
    if item.kind == "create" and item.state == "done" and result.get("status") == "error":
        sid = item.session_id
        return Rejected(
            f"session {sid} exists but is in error (agentctl status {sid} shows why); "
            f"`agentctl destroy {sid}` then `agentctl purge {sid}` frees the id",
            **result,
        )
    return None


def run_single(
    obj: Obj,
    kind: str,
    session_id: str,
    payload: dict[str, Any],
    *,
    no_wait: bool,
    human: Callable[[dict[str, Any]], None],
    idempotency_key: str | None = None,
) -> None:
    """One action, with today's output: the result, the queued action, or the error and its exit code."""
    item_data: dict[str, Any] = {"kind": kind, "session_id": session_id, "payload": payload}
    if idempotency_key is not None:
        item_data["idempotency_key"] = idempotency_key
    batch = submit(obj, [item_data], wait=not no_wait)
    [item] = batch.items
    if no_wait and item.state == "pending":
        if obj.json:
            emit_json(queued_json(obj, item))
        else:
            click.echo(item.session_id if kind == "create" else item.action_id)
            click.echo(f"queued {kind} for session {item.session_id} (action {item.action_id}); not waiting", err=True)
        return
    error = outcome_error(item, batch) or create_error(item)
    if error is not None:
        raise error
    result = item.result or {}
    if obj.json:
        emit_json(result)
    else:
        human(result)


def resolve(obj: Obj, kind: str, selector: Selector) -> tuple[list[str], list[dict[str, Any]]]:
    """The sessions a selector picks: (to act on, skipped with the reason)."""
    params = {
        "agent_id": selector.agent_id,
        "agent_type": selector.agent_type,
        "statuses": list(selector.statuses),
        "fields": ["session_id", "status"],
    }
    targets: list[str] = []
    skipped: list[dict[str, Any]] = []
    for row in read(obj, "list", params):
        status = str(row["status"])
        reason = ALREADY[kind].get(status)
        if reason is None and kind != "destroy" and status in FINISHED:
            reason = FINISHED[status]
        if reason is None:
            targets.append(str(row["session_id"]))
        else:
            skipped.append({"session_id": row["session_id"], "status": status, "reason": reason})
    return targets, skipped


def stdin_is_terminal() -> bool:
    """Whether a person can answer a question (tests replace this to answer one)."""
    return sys.stdin.isatty()


def confirm(kind: str, targets: list[str], assume_yes: bool) -> None:
    """On a terminal, ask before acting on a selection (unless --yes); scripts are not asked."""
    if assume_yes or not stdin_is_terminal():
        return
    shown = ", ".join(targets[:CONFIRM_SHOWN]) + (" ..." if len(targets) > CONFIRM_SHOWN else "")
    click.confirm(f"{kind.capitalize()} {len(targets)} session(s) ({shown})?", abort=True, err=True)


@dataclass(slots=True)
class Summary:
    kind: str
    applied: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "applied": self.applied,
            "failed": self.failed,
            "skipped": self.skipped,
            "pending": self.pending,
        }

    def line(self) -> str:
        parts = [f"{len(self.applied)} applied", f"{len(self.failed)} failed", f"{len(self.skipped)} skipped"]
        reasons: dict[str, int] = {}
        for entry in self.skipped:
            reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
        if reasons:
            parts[-1] += " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")"
        if self.pending:
            parts.append(f"{len(self.pending)} not acknowledged in time (still queued)")
        return f"{self.kind}: " + ", ".join(parts)


def summarise(kind: str, batch: Batch, skipped: list[dict[str, Any]]) -> Summary:
    summary = Summary(kind, skipped=skipped)
    for item in batch.items:
        error = outcome_error(item, batch) or create_error(item)
        if error is None:
            summary.applied.append(item.result or {"session_id": item.session_id})
        elif item.state == "pending":
            summary.pending.append({"session_id": item.session_id, "action_id": item.action_id})
        else:
            summary.failed.append(
                {"session_id": item.session_id, "action_id": item.action_id, "code": item.code, **error.as_json()}
            )
    return summary


def run_many(
    obj: Obj,
    kind: str,
    session_ids: list[str],
    payload: dict[str, Any],
    *,
    selector: Selector,
    no_wait: bool,
    assume_yes: bool,
) -> None:
    """Several named sessions, or a selection, as one batch; prints the summary and sets the exit code."""
    if session_ids and selector.given:
        raise UsageProblem("give SESSION_ID... or a selector (--agent-id, --type, --status, --all), not both")
    if not session_ids and not selector.given:
        raise UsageProblem("give SESSION_ID... or a selector (--agent-id, --type, --status, --all)")
    skipped: list[dict[str, Any]] = []
    targets = list(session_ids)
    if selector.given:
        targets, skipped = resolve(obj, kind, selector)
        if targets:
            confirm(kind, targets, assume_yes)
    if not targets:
        summary = Summary(kind, skipped=skipped)
        if obj.json:
            emit_json(summary.as_json())
        else:
            click.echo(summary.line())
        return
    items = [{"kind": kind, "session_id": sid, "payload": payload} for sid in targets]
    progress = Progress(len(items), kind)
    try:
        batch = submit(obj, items, wait=not no_wait, on_ack=progress.step)
    finally:
        progress.close()
    if no_wait:
        for item in batch.items:
            if obj.json:
                emit_json(queued_json(obj, item))
            elif item.action_id:
                click.echo(item.action_id)
        return
    summary = summarise(kind, batch, skipped)
    if obj.json:
        emit_json(summary.as_json())
    else:
        for entry in summary.failed:
            click.echo(f"agentctl: {entry['session_id']}: {entry['error']}", err=True)
        click.echo(summary.line())
    if summary.failed:
        raise click.exceptions.Exit(EXIT_FAILED)
    if summary.pending:
        raise click.exceptions.Exit(EXIT_TIMEOUT)
