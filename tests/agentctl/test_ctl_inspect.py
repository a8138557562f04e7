"""Read commands against a real daemon: list, status, steps, daemon status, and --help."""

from __future__ import annotations

from typing import Any

import click
from ctlkit import Ctl, Daemon
from helpers import wait_for

from agentctl.cli import cli

STEP_KEYS = {"session_id", "seq", "ts", "status", "kind", "text", "data", "state"}


def as_list(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value]


def test_list_filters_and_prints_json_lines(ctl: Ctl) -> None:
    a = ctl.create_joke("--agent-id", "lister", "--interval", "30")
    b = ctl.create_joke("--agent-id", "lister", "--interval", "30")
    ctl("pause", b)

    mine = as_list(ctl.json("list", "--agent-id", "lister"))
    assert [s["session_id"] for s in mine] == [a, b]  # oldest first
    assert all(isinstance(s["context"], dict) for s in mine)
    paused = as_list(ctl.json("list", "--agent-id", "lister", "--status", "paused"))
    assert [s["session_id"] for s in paused] == [b]
    both = as_list(ctl.json("list", "--agent-id", "lister", "--status", "paused", "--status", "running"))
    assert len(both) == 2
    assert ctl("list", "--json", "--agent-id", "nobody").stdout == ""  # --json after the command too
    assert "no sessions" in ctl("list", "--agent-id", "nobody").stderr

    lines = ctl("list", "--agent-id", "lister").stdout.splitlines()
    header = lines[0]
    assert header.split() == ["SESSION", "AGENT", "TYPE", "STATUS", "TICKS", "SEQ", "UPDATED", "ABOUT"]
    status_col = header.index("STATUS")
    assert [line[status_col:].split()[0] for line in lines[1:]] == ["running", "paused"], "columns are aligned"
    assert "\x1b[" not in "".join(lines), "no colour when stdout is not a terminal"


def test_status_human_output(ctl: Ctl) -> None:
    sid = ctl.create_joke("--subject", "cats", "--interval", "0.2")
    wait_for(lambda: ctl.json("status", sid)["iteration"] >= 2, 20, "two ticks")
    out = ctl("status", sid).stdout.splitlines()
    fields = {line.split()[0]: line.split()[1:] for line in out if line and not line.startswith(" ")}
    assert fields["session"] == [sid]
    assert fields["status"] == ["running"]
    assert fields["updated"][1] == "ago" or fields["updated"][0] == "just"
    assert "context:" in out
    assert any(line.split() == ["subject", "cats"] for line in out)
    ctl("destroy", sid)  # stop ticking: the daemon is shared


def test_steps_json_since_limit_and_table(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "0.1")
    wait_for(lambda: ctl.json("status", sid)["last_seq"] >= 8, 30, "eight steps")
    steps = as_list(ctl.json("steps", sid))
    assert all(set(s) >= STEP_KEYS for s in steps)
    seqs = [s["seq"] for s in steps]
    assert seqs == list(range(1, len(seqs) + 1))
    assert steps[0]["kind"] == "lifecycle" and steps[0]["text"] == "created"
    assert isinstance(steps[1]["state"], dict) and isinstance(steps[1]["data"], dict)

    assert [s["seq"] for s in as_list(ctl.json("steps", sid, "--since", "3", "--limit", "2"))] == [4, 5]
    assert [s["seq"] for s in as_list(ctl.json("steps", sid, "--since", "5"))][:2] == [6, 7]
    latest = as_list(ctl.json("steps", sid, "--limit", "3"))
    assert len(latest) == 3 and latest[-1]["seq"] >= 8, "without --since, --limit is the latest N"
    assert [s["seq"] for s in latest] == sorted(s["seq"] for s in latest)

    table = ctl("steps", sid, "--since", "0", "--limit", "3").stdout.splitlines()
    assert table[0].split() == ["SEQ", "WHEN", "KIND", "STATUS", "TEXT"]
    assert table[1].split()[0] == "1" and "created" in table[1]
    assert "ago" in table[2] or "just now" in table[2]
    ctl("destroy", sid)


def test_daemon_status(ctl: Ctl, daemon: Daemon) -> None:
    status = ctl.json("daemon", "status")
    assert status["pid"] == daemon.proc.pid
    assert status["ready"] is True
    assert status["num_shards"] == 8
    assert status["health"] == {"healthy": True, "problems": []}
    workers = [c for c in status["children"] if c["role"] == "worker"]
    assert sorted(c["index"] for c in workers) == [0, 1]
    assert all({"pid", "alive", "shards", "last_heartbeat_ago", "rss_bytes", "restarts"} <= set(c) for c in workers)

    out = ctl("daemon", "status").stdout.splitlines()
    assert out[0].startswith(f"agentd pid {daemon.proc.pid}") and "healthy" in out[0]
    assert out[2].split()[:4] == ["ROLE", "INDEX", "PID", "ALIVE"]
    assert [line.split()[0] for line in out[3:5]] == ["worker", "worker"]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # loaded on use: ask the group, not its dict
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


def test_every_command_has_help_with_an_example(ctl: Ctl) -> None:
    paths = _commands(cli)
    assert len(paths) >= 16
    for path in [(), *paths]:
        result = ctl(*path, "--help")
        assert "Example" in result.stdout, f"agentctl {' '.join(path)} --help has no example"
    assert "_AGENTCTL_COMPLETE=bash_source" in ctl("--help").stdout
