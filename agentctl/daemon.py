"""``agentctl daemon status``: the supervisor's view of its children, and a health verdict.

It asks the control socket (not LanceDB), so it answers even when the database is slow. Like
arq's ``check_health`` it is usable as a probe: exit 0 healthy; 1 reachable but unhealthy (not
ready yet, a worker dead, or a worker's heartbeat older than ``heartbeat_timeout``); 5 no
daemon answers. The status is printed in every case where there is one.
"""

from __future__ import annotations

from typing import Any

import click

from agentctl import transport
from agentctl.context import Obj, json_option, pass_obj
from agentctl.errors import EXIT_FAILED, Unreachable
from agentctl.output import emit_json, human_duration, style, table_lines

__all__ = ["daemon", "health_problems", "maintenance_summary"]


@click.group("daemon")
def daemon() -> None:
    """Inspect the running daemon (through its control socket).

    \b
    Example:
      agentctl daemon status
    """


def health_problems(status: dict[str, Any]) -> list[str]:
    """Why the daemon is not healthy; an empty list means healthy.

    The daemon judges its own health (``problems`` in its status: workers, heartbeats, a gateway
    that cannot serve, metrics that cannot bind); this only adds "not ready" while it starts.
    """
    problems = [] if status.get("ready") else ["not ready (workers still starting)"]
    problems += [str(p) for p in status.get("problems") or []]
    return problems


def maintenance_summary(report: dict[str, Any]) -> str:
    """The last maintenance pass in one line: when, how long, and what retention deleted."""
    parts = [f"last pass {report.get('at', '?')} took {float(report.get('seconds') or 0):.2f}s"]
    parts.append(f"actions purged {report.get('actions_purged', 0)}")
    retention = report.get("retention")
    if retention:
        parts.append(
            f"steps deleted {retention.get('steps_deleted', 0)}, sessions purged "
            f"{retention.get('sessions_purged', 0)}, messages deleted {retention.get('messages_deleted', 0)}"
        )
        if retention.get("skipped"):
            parts.append(f"retention skipped: {retention['skipped']}")
    skipped = [name for name, t in (report.get("tables") or {}).items() if isinstance(t, dict) and t.get("skipped")]
    if skipped:
        parts.append(f"compaction skipped for {', '.join(skipped)} (retried next pass)")
    return "; ".join(parts)


def _mib(value: Any) -> str:
    return f"{value / 1048576:.0f}M" if isinstance(value, int | float) else "-"


def _print_human(status: dict[str, Any], problems: list[str]) -> None:
    verdict = style("healthy", "green") if not problems else style("unhealthy", "red")
    click.echo(
        f"agentd pid {status.get('pid')}, up {human_duration(float(status.get('uptime') or 0))}, "
        f"{'ready' if status.get('ready') else 'not ready'}, {verdict}"
    )
    click.echo(
        f"database {status.get('database')}  shards {status.get('num_shards')}  "
        f"workers {status.get('workers')}  sessions {status.get('sessions')}"
    )
    headers = ["ROLE", "INDEX", "PID", "ALIVE", "READY", "UPTIME", "SHARDS", "SESSIONS", "HEARTBEAT"]
    headers += ["RSS", "CPU%", "RESTARTS"]
    rows = []
    for child in status.get("children") or []:
        ago = child.get("last_heartbeat_ago")
        shards = child.get("shards") or []
        rows.append(
            [
                str(child.get("role")),
                "-" if child.get("index") is None else str(child.get("index")),
                str(child.get("pid")),
                "yes" if child.get("alive") else "no",
                "yes" if child.get("ready") else "no",
                human_duration(float(child.get("uptime") or 0)),
                str(len(shards)),
                "-" if child.get("sessions") is None else str(child.get("sessions")),
                "-" if ago is None else f"{ago:.1f}s ago",
                _mib(child.get("rss_bytes")),
                "-" if child.get("cpu_percent") is None else f"{child['cpu_percent']:.0f}",
                str(child.get("restarts", "-")),
            ]
        )
    colours = {3: {"no": "red"}, 4: {"no": "yellow"}}
    for line in table_lines(headers, rows, colours=colours, right=(1, 2, 6, 7, 9, 10, 11)):
        click.echo(line)
    maintenance = status.get("maintenance")
    if maintenance:
        click.echo(f"maintenance: {maintenance_summary(maintenance)}")
    gateway = status.get("gateway")
    if gateway is not None:
        summary = ", ".join(f"{k}={v}" for k, v in gateway.items() if not isinstance(v, dict | list))
        click.echo(f"gateway: {summary}")
    for problem in problems:
        click.echo(style(f"problem: {problem}", "red"), err=True)


@daemon.command("status")
@json_option
@pass_obj
def daemon_status(obj: Obj) -> None:
    """Show the daemon's health, workers and sessions; exit 5 when no daemon answers.

    Exit 0 healthy, 1 reachable but unhealthy (not ready, a worker dead or its heartbeat
    stale, a gateway that cannot serve its port, metrics that cannot bind), 5 unreachable.
    JSON: the daemon's status object plus "health": {"healthy", "problems"}.

    \b
    Example:
      agentctl --config /etc/agentd/config.toml daemon status || systemctl status agentd
    """
    path = obj.socket_path()
    try:
        reply = transport.status(path, timeout=obj.socket_timeout())
    except (transport.NoDaemon, transport.DaemonLost) as exc:
        raise Unreachable(f"{exc} (is `agentd run` running with this config?)", socket=str(path)) from exc
    if not reply.get("ok"):
        raise Unreachable(f"the daemon on {path} answered with an error: {reply.get('error')}", socket=str(path))
    status: dict[str, Any] = reply["status"]
    problems = health_problems(status)
    if obj.json:
        emit_json({**status, "health": {"healthy": not problems, "problems": problems}})
    else:
        _print_human(status, problems)
    if problems:
        raise click.exceptions.Exit(EXIT_FAILED)
