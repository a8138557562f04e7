"""Human and JSON renderings of the read views' data (sessions, steps, messages, actions, types).

The data is what ``agentd.views`` returns (plain JSON, from the daemon or from this process),
so printing never needs LanceDB. The JSON shapes are a contract (issue 6): a session is
``{session_id, agent_id, agent_type, status, context, iteration, last_seq, conversation_id,
created_at, updated_at}`` plus a few extra keys; steps and messages are their full records.
Keys are only ever added.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from agentctl.output import STATUS_COLOURS, clock, emit_json, relative_time, table_lines

__all__ = [
    "compact",
    "parse_time",
    "print_actions",
    "print_conversations",
    "print_messages",
    "print_session",
    "print_sessions",
    "print_steps",
    "print_types",
]

Row = dict[str, Any]


def compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from the JSON data (``...Z`` included), or None."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def print_sessions(rows: Sequence[Row], as_json: bool) -> None:
    if as_json:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        click.echo("no sessions", err=True)
        return
    now = datetime.now(UTC)
    table = [
        [
            str(r["session_id"]),
            str(r["agent_id"]),
            str(r["agent_type"]),
            str(r["status"]),
            str(r["iteration"]),
            str(r["last_seq"]),
            relative_time(parse_time(r.get("updated_at")), now),
            r.get("conversation_id") or _summary(r.get("context") or {}),
        ]
        for r in rows
    ]
    headers = ["SESSION", "AGENT", "TYPE", "STATUS", "TICKS", "SEQ", "UPDATED", "ABOUT"]
    # Too wide for the terminal: the agent id (often the session id again) gives way first.
    for line in table_lines(headers, table, colours={3: STATUS_COLOURS}, right=(4, 5), shrink=(1, 2, 6)):
        click.echo(line)


def _summary(context: dict[str, Any]) -> str:
    """A short line about what a session is doing (a joke session's subject, ...)."""
    if "subject" in context:
        return f"subject: {context['subject']}"
    return ", ".join(f"{k}={compact(v)}" for k, v in list(context.items())[:3])


def print_session(row: Row, as_json: bool) -> None:
    if as_json:
        emit_json(row)
        return
    now = datetime.now(UTC)
    created, updated = parse_time(row.get("created_at")), parse_time(row.get("updated_at"))
    fields = [
        ("session", row["session_id"]),
        ("agent", row["agent_id"]),
        ("type", row["agent_type"]),
        ("status", row["status"]),
        ("ticks", str(row["iteration"])),
        ("last seq", str(row["last_seq"])),
        ("conversation", row.get("conversation_id") or "-"),
        ("created", f"{relative_time(created, now)} ({row.get('created_at')})"),
        ("updated", f"{relative_time(updated, now)} ({row.get('updated_at')})"),
    ]
    if row.get("last_result"):
        fields.append(("last result", row["last_result"]))
    for line in table_lines(["", ""], [[name, str(value)] for name, value in fields], header=False):
        click.echo(line)
    context = row.get("context") or {}
    click.echo("context:")
    width = max((len(str(k)) for k in context), default=0)
    for key, value in context.items():
        click.echo(f"  {str(key).ljust(width)}  {compact(value)}")
    queued = row.get("queued_actions") or []
    if queued:
        click.echo(f"queued actions ({len(queued)}, not applied yet):")
        for action in queued:
            age = relative_time(parse_time(action.get("created_at")), now)
            click.echo(f"  {action['action_id']}  {action['kind']}  {action['status']}  queued {age}")


def _step_text(step: Row) -> str:
    text = step.get("text") or ""
    guidance = step.get("guidance")
    if step.get("kind") == "guidance" and guidance:
        shown = guidance.get("normalized", guidance) if isinstance(guidance, dict) else guidance
        text = f"{text} {compact(shown)}".strip()
    if step.get("error"):
        text = f"{text} error: {step['error']}".strip()
    return str(text)


STEP_HEADERS = ["SEQ", "WHEN", "KIND", "STATUS", "TEXT"]
# Widths kept steady while following, so that batches printed apart still line up.
STEP_WIDTHS = {0: 5, 1: 12, 2: 9, 3: 6}


def print_steps(steps: Sequence[Row], as_json: bool, *, streaming: bool = False, header: bool = True) -> None:
    """Steps as JSON lines, or a table; ``streaming`` shows wall-clock times instead of "ago"."""
    if as_json:
        for step in steps:
            emit_json(step)
        return
    now = datetime.now(UTC)
    rows = []
    for s in steps:
        ts = parse_time(s.get("ts"))
        when = (clock(ts) if ts else "-") if streaming else relative_time(ts, now)
        rows.append([str(s["seq"]), when, str(s.get("kind")), str(s.get("status")), _step_text(s)])
    for line in table_lines(
        STEP_HEADERS, rows, colours={3: STATUS_COLOURS}, right=(0,), min_widths=STEP_WIDTHS, header=header
    ):
        click.echo(line)


MESSAGE_HEADERS = ["WHEN", "AUTHOR", "ROLE", "TEXT"]
MESSAGE_WIDTHS = {0: 12, 1: 12, 2: 6}
ROLE_COLOURS = {"agent": "cyan", "user": "green", "system": "yellow"}


def print_messages(messages: Sequence[Row], as_json: bool, *, streaming: bool = False, header: bool = True) -> None:
    if as_json:
        for message in messages:
            emit_json(message)
        return
    now = datetime.now(UTC)
    rows = []
    for m in messages:
        created = parse_time(m.get("created_at"))
        when = (clock(created) if created else "-") if streaming else relative_time(created, now)
        rows.append([when, str(m["author_id"]), str(m["role"]), str(m["text"])])
    for line in table_lines(MESSAGE_HEADERS, rows, colours={2: ROLE_COLOURS}, min_widths=MESSAGE_WIDTHS, header=header):
        click.echo(line)


def print_conversations(rows: Sequence[Row], as_json: bool) -> None:
    if as_json:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        click.echo("no conversations", err=True)
        return
    now = datetime.now(UTC)
    table = [
        [
            str(r["conversation_id"]),
            str(r.get("messages", 0)),
            str(len(r.get("participants") or [])),
            relative_time(parse_time(r.get("created_at")), now),
            str(r.get("title") or ""),
        ]
        for r in rows
    ]
    for line in table_lines(["CONVERSATION", "MESSAGES", "PERSONAS", "CREATED", "TITLE"], table, right=(1, 2)):
        click.echo(line)


ACTION_COLOURS = {**STATUS_COLOURS, "pending": "yellow", "claimed": "cyan"}


def print_actions(rows: Sequence[Row], as_json: bool) -> None:
    if as_json:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        click.echo("no actions", err=True)
        return
    now = datetime.now(UTC)
    table = []
    for r in rows:
        note = r.get("error_code") or ""
        if r.get("error"):
            note = f"{note}: {r['error']}" if note else str(r["error"])
        if r.get("status") == "claimed":
            note = f"claimed by {r.get('claimed_by')}"
        table.append(
            [
                str(r["action_id"]),
                str(r["kind"]),
                str(r["session_id"]),
                str(r["status"]),
                relative_time(parse_time(r.get("created_at")), now),
                note,
            ]
        )
    headers = ["ACTION", "KIND", "SESSION", "STATUS", "QUEUED", "NOTE"]
    for line in table_lines(headers, table, colours={3: ACTION_COLOURS}, shrink=(2,)):
        click.echo(line)


def print_types(rows: Sequence[Row], as_json: bool) -> None:
    if as_json:
        for row in rows:
            emit_json(row)
        return
    for index, row in enumerate(rows):
        if index:
            click.echo("")
        click.echo(f"{row['type']}  ({row.get('class')})  {row.get('description') or ''}".rstrip())
        table = []
        for f in row.get("config") or []:
            default = "required" if f.get("required") else f"default {compact(f.get('default'))}"
            table.append([f"  {f['name']}", str(f.get("type")), default, f.get("description") or ""])
        for line in table_lines(["", "", "", ""], table, header=False):
            click.echo(line)
