"""``agentctl purge``: delete finished sessions (stopped or error) and all their steps.

Why it writes LanceDB directly instead of queueing an action: a finished session has no worker
hosting it, so there is no one to apply an action, and a purge must work with the daemon
stopped. It refuses, before deleting anything, when one named session is still live (exit 1:
destroy it first) or unknown (exit 3); the row delete repeats the status condition, so a row
that changed meanwhile is left alone. Steps go first, then the session row: an interruption
leaves a session without steps, which a second purge finishes. Purging is idempotent.

Purging frees the session id: a later ``create --session-id`` with it starts a new session.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import NotFound, Rejected, UsageProblem
from agentctl.output import emit_json, human_duration
from agentctl.params import ids_callback, parse_duration

if TYPE_CHECKING:
    from agentd.store import Store

__all__ = ["purge"]

# agentd.store.retention.FINISHED_STATUSES, repeated so that --help needs no LanceDB import.
FINISHED = ("stopped", "error")


@dataclass(slots=True)
class Plan:
    """What a purge would delete: sessions by id with their status ('-' for orphan steps)."""

    sessions: dict[str, str] = field(default_factory=dict)
    sessions_deleted: int = 0
    steps_deleted: int = 0

    def as_json(self, *, dry_run: bool) -> dict[str, Any]:
        return {
            "purged": [] if dry_run else sorted(self.sessions),
            "would_purge": sorted(self.sessions) if dry_run else [],
            "sessions": self.sessions_deleted,
            "steps": self.steps_deleted,
            "dry_run": dry_run,
        }


async def _named(store: Store, session_ids: list[str]) -> Plan:
    """Check every named session first; nothing is deleted unless all of them may go."""
    from agentd.store.sql import sql_in

    query = store.sessions.query().where(sql_in("session_id", session_ids)).select(["session_id", "status"])
    found = {r["session_id"]: r["status"] for r in (await query.to_arrow()).to_pylist()}
    live = sorted(sid for sid, status in found.items() if status not in FINISHED)
    if live:
        shown = ", ".join(f"{sid} ({found[sid]})" for sid in live)
        raise Rejected(
            f"refusing to purge live session(s) {shown}: destroy them first (agentctl destroy SESSION_ID)",
            live=live,
        )
    plan = Plan({sid: found[sid] for sid in session_ids if sid in found})
    missing = [sid for sid in session_ids if sid not in found]
    if missing:
        # Steps without a session row (a create interrupted between its two commits) are purged too.
        step_rows = await store.steps.query().where(sql_in("session_id", missing)).select(["session_id"]).to_arrow()
        orphans = set(step_rows.column("session_id").to_pylist())
        unknown = [sid for sid in missing if sid not in orphans]
        if unknown:
            raise NotFound(f"unknown session(s) {', '.join(unknown)}; nothing purged", unknown=unknown)
        plan.sessions.update({sid: "-" for sid in missing})
    return plan


async def _finished(store: Store, before: datetime | None) -> Plan:
    from agentd.store.sessions import list_sessions

    records = await list_sessions(store.sessions, statuses=list(FINISHED))
    return Plan({r.session_id: r.status for r in records if before is None or r.updated_at < before})


def _confirm(plan: Plan, assume_yes: bool) -> None:
    """On a terminal, ask before deleting (unless --yes); scripts (no terminal) are not asked."""
    if assume_yes or not sys.stdin.isatty():
        return
    shown = ", ".join(sorted(plan.sessions)[:5]) + (" ..." if len(plan.sessions) > 5 else "")
    click.confirm(f"Delete {len(plan.sessions)} session(s) and all their steps ({shown})?", abort=True, err=True)


@click.command("purge")
@click.argument("session_ids", nargs=-1, metavar="[SESSION_ID]...", callback=ids_callback("session id"))
@click.option(
    "--stopped-before",
    metavar="DURATION",
    callback=parse_duration,
    help="Every stopped or error session last updated more than DURATION ago (90s, 15m, 12h, 7d, 1h30m).",
)
@click.option("--all-stopped", is_flag=True, help="Every stopped or error session.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option("--dry-run", is_flag=True, help="Only print what would be purged.")
@json_option
@pass_obj
def purge(
    obj: Obj,
    session_ids: tuple[str, ...],
    stopped_before: float | None,
    all_stopped: bool,
    assume_yes: bool,
    dry_run: bool,
) -> None:
    """Delete finished sessions (stopped or error) with all their steps, for good.

    Name the sessions, or select them with --stopped-before or --all-stopped. A live session
    (starting, running, paused, stopping) is refused with exit 1: destroy it first. An unknown
    session is exit 3. Nothing is deleted unless every named session may be. Works without the
    daemon. On a terminal it asks first (--yes skips). The purged ids can be used again.
    JSON: {"purged": [ids], "sessions": N, "steps": N, "dry_run": false, "would_purge": []}.

    \b
    Examples:
      agentctl purge s-0189f3c2a1b4-3f9a2c1d
      agentctl purge --stopped-before 7d --yes
      agentctl --json purge --all-stopped --dry-run
    """
    ids = list(session_ids)
    selectors = sum([bool(ids), stopped_before is not None, all_stopped])
    if selectors != 1:
        raise UsageProblem("give SESSION_ID..., --stopped-before DURATION or --all-stopped (exactly one of them)")
    settings = obj.settings()
    before = None if stopped_before is None else datetime.now(UTC) - timedelta(seconds=stopped_before)

    async def go() -> Plan:
        from agentctl.direct import open_store
        from agentd.store.retention import purge_sessions

        store = await open_store(settings)
        plan = await (_named(store, ids) if ids else _finished(store, before))
        if plan.sessions and not dry_run:
            _confirm(plan, assume_yes)  # blocks the loop on purpose: nothing else runs in it
            result = await purge_sessions(store, sorted(plan.sessions), statuses=FINISHED)
            plan.sessions_deleted, plan.steps_deleted = result.sessions, result.steps
        return plan

    plan = obj.run(go())
    if obj.json:
        emit_json(plan.as_json(dry_run=dry_run))
        return
    if not plan.sessions:
        what = "" if before is None else f" last updated more than {human_duration(stopped_before or 0)} ago"
        click.echo(f"nothing to purge: no stopped or error sessions{what}", err=True)
        return
    for sid in sorted(plan.sessions):
        click.echo(sid)
    if dry_run:
        click.echo(f"would purge {len(plan.sessions)} session(s); nothing deleted (--dry-run)", err=True)
    else:
        click.echo(f"purged {plan.sessions_deleted} session(s) and {plan.steps_deleted} step(s)", err=True)
