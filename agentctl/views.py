"""Row shapes for JSON output and their human renderings (sessions, steps, messages).

The JSON shapes are a contract (issue 6): a session is ``{session_id, agent_id, agent_type,
status, context, iteration, last_seq, conversation_id, created_at, updated_at}`` plus a few
extra keys; steps and messages are their full records. Keys are only ever added.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from agentctl.output import STATUS_COLOURS, clock, emit_json, relative_time, table_lines

if TYPE_CHECKING:
    from agentd.store.conversations import MessageRecord
    from agentd.store.sessions import SessionRecord
    from agentd.store.steps import StepRecord

__all__ = [
    "compact",
    "print_messages",
    "print_session",
    "print_sessions",
    "print_steps",
    "session_json",
]

SESSION_KEYS = (
    "session_id",
    "agent_id",
    "agent_type",
    "status",
    "context",
    "iteration",
    "last_seq",
    "conversation_id",
    "created_at",
    "updated_at",
    "shard",
    "last_result",
)


def compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def session_json(record: SessionRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    shaped = {key: data.get(key) for key in SESSION_KEYS}
    # The creation config without the runtime's private keys (``_create_action``).
    shaped["config"] = {k: v for k, v in (data.get("config") or {}).items() if not k.startswith("_")}
    return shaped


def print_sessions(records: Sequence[SessionRecord], as_json: bool) -> None:
    if as_json:
        for record in records:
            emit_json(session_json(record))
        return
    if not records:
        click.echo("no sessions", err=True)
        return
    now = datetime.now(UTC)
    rows = [
        [
            r.session_id,
            r.agent_id,
            r.agent_type,
            r.status,
            str(r.iteration),
            str(r.last_seq),
            relative_time(r.updated_at, now),
            r.conversation_id or _summary(r.context),
        ]
        for r in records
    ]
    headers = ["SESSION", "AGENT", "TYPE", "STATUS", "TICKS", "SEQ", "UPDATED", "ABOUT"]
    for line in table_lines(headers, rows, colours={3: STATUS_COLOURS}, right=(4, 5)):
        click.echo(line)


def _summary(context: dict[str, Any]) -> str:
    """A short line about what a session is doing (a joke session's subject, ...)."""
    if "subject" in context:
        return f"subject: {context['subject']}"
    return ", ".join(f"{k}={compact(v)}" for k, v in list(context.items())[:3])


def print_session(record: SessionRecord, as_json: bool) -> None:
    if as_json:
        emit_json(session_json(record))
        return
    now = datetime.now(UTC)
    fields = [
        ("session", record.session_id),
        ("agent", record.agent_id),
        ("type", record.agent_type),
        ("status", record.status),
        ("ticks", str(record.iteration)),
        ("last seq", str(record.last_seq)),
        ("conversation", record.conversation_id or "-"),
        ("created", f"{relative_time(record.created_at, now)} ({record.created_at.isoformat()})"),
        ("updated", f"{relative_time(record.updated_at, now)} ({record.updated_at.isoformat()})"),
    ]
    if record.last_result:
        fields.append(("last result", record.last_result))
    rows = [[name, value] for name, value in fields]
    for line in table_lines(["", ""], rows, header=False):
        click.echo(line)
    click.echo("context:")
    width = max((len(str(k)) for k in record.context), default=0)
    for key, value in record.context.items():
        click.echo(f"  {str(key).ljust(width)}  {compact(value)}")


def _step_text(step: StepRecord) -> str:
    text = step.text or ""
    if step.kind == "guidance" and step.guidance:
        text = f"{text} {compact(step.guidance.get('normalized', step.guidance))}".strip()
    if step.error:
        text = f"{text} error: {step.error}".strip()
    return text


STEP_HEADERS = ["SEQ", "WHEN", "KIND", "STATUS", "TEXT"]
# Widths kept steady while following, so that batches printed apart still line up.
STEP_WIDTHS = {0: 5, 1: 12, 2: 9, 3: 6}


def print_steps(steps: Sequence[StepRecord], as_json: bool, *, streaming: bool = False, header: bool = True) -> None:
    """Steps as JSON lines, or a table; ``streaming`` shows wall-clock times instead of "ago"."""
    if as_json:
        for step in steps:
            emit_json(step.model_dump(mode="json"))
        return
    now = datetime.now(UTC)
    rows = [
        [
            str(s.seq),
            clock(s.ts) if streaming else relative_time(s.ts, now),
            s.kind,
            s.status,
            _step_text(s),
        ]
        for s in steps
    ]
    for line in table_lines(
        STEP_HEADERS, rows, colours={3: STATUS_COLOURS}, right=(0,), min_widths=STEP_WIDTHS, header=header
    ):
        click.echo(line)


MESSAGE_HEADERS = ["WHEN", "AUTHOR", "ROLE", "TEXT"]
MESSAGE_WIDTHS = {0: 12, 1: 12, 2: 6}
ROLE_COLOURS = {"agent": "cyan", "user": "green", "system": "yellow"}


def print_messages(
    messages: Sequence[MessageRecord], as_json: bool, *, streaming: bool = False, header: bool = True
) -> None:
    if as_json:
        for message in messages:
            emit_json(message.model_dump(mode="json"))
        return
    now = datetime.now(UTC)
    rows = [
        [
            clock(m.created_at) if streaming else relative_time(m.created_at, now),
            m.author_id,
            m.role,
            m.text,
        ]
        for m in messages
    ]
    for line in table_lines(MESSAGE_HEADERS, rows, colours={2: ROLE_COLOURS}, min_widths=MESSAGE_WIDTHS, header=header):
        click.echo(line)
