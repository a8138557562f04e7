"""``--follow`` as real processes: new rows appear, the daemon may restart, Ctrl-C ends cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from ctlkit import Ctl, Daemon, Lines, spawn_agentctl, start_daemon, stop_process, write_config


def interrupt_and_check(proc: subprocess.Popen[str], lines: Lines) -> str:
    """SIGINT (Ctrl-C) must end the follower with 130 and no traceback."""
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=10)
    lines.rest()
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    assert code == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    return stderr


def test_steps_follow_sees_steps_committed_after_it_started(ctl: Ctl, daemon: Daemon) -> None:
    sid = ctl.create_joke("--subject", "cats", "--interval", "0.3")
    ctl("pause", sid)  # nothing new until the follower runs
    proc = spawn_agentctl(daemon.config, "--json", "steps", sid, "--follow")
    try:
        lines = Lines(proc)
        last = lines.until(lambda line: json.loads(line)["text"] == "paused", 30, "the steps so far")
        ctl("interrupt", sid, '{"subject": "owls"}')
        ctl("resume", sid)
        lines.until(lambda line: json.loads(line)["kind"] == "guidance", 30, "the guidance step")
        lines.until(lambda line: (json.loads(line)["data"] or {}).get("subject") == "owls", 30, "a joke about owls")
        interrupt_and_check(proc, lines)
    finally:
        stop_process(proc)
    ctl("destroy", sid)
    steps = [json.loads(line) for line in lines.seen]
    seqs = [s["seq"] for s in steps]
    assert seqs == list(range(1, len(seqs) + 1)), "every step once, in order"
    assert json.loads(last)["seq"] < seqs[-1]


def test_conversation_follow_sees_new_messages(ctl: Ctl, daemon: Daemon) -> None:
    cid = ctl.json("conversation", "create", "follow me")["conversation_id"]
    ctl("conversation", "post", cid, "first")
    proc = spawn_agentctl(daemon.config, "conversation", "show", cid, "--follow")
    try:
        lines = Lines(proc)
        lines.until(lambda line: "first" in line, 30, "the first message")
        ctl("conversation", "post", cid, "second", "--author", "bob")
        ctl("conversation", "post", cid, "third")
        lines.until(lambda line: "third" in line, 30, "the third message")
        interrupt_and_check(proc, lines)
    finally:
        stop_process(proc)
    texts = [line.split()[-1] for line in lines.seen[1:]]
    assert texts == ["first", "second", "third"], lines.seen
    assert lines.seen[0].split() == ["WHEN", "AUTHOR", "ROLE", "TEXT"]
    assert "bob" in lines.seen[2]


def test_follow_survives_a_daemon_restart_and_queued_actions_wait_for_it(tmp_path: Path) -> None:
    """Kill the daemon under a follower; meanwhile an action times out (exit 4) but stays
    queued; a new daemon resumes the session, applies the action, and the follower goes on."""
    config = write_config(tmp_path)
    ctl = Ctl(config)
    first = start_daemon(config)
    follower = None
    try:
        sid = ctl.create_joke("--subject", "cats", "--interval", "0.2")
        follower = spawn_agentctl(config, "--json", "steps", sid, "--follow")
        lines = Lines(follower)
        lines.until(lambda line: json.loads(line)["seq"] >= 3, 30, "steps from the first daemon")
        first.kill()

        ctl("daemon", "status", code=5)
        queued = ctl("--timeout", "1", "interrupt", sid, "about tea", code=4)
        assert "stays queued" in queued.stderr

        second = start_daemon(config)
        try:
            lines.until(lambda line: json.loads(line)["kind"] == "guidance", 60, "the queued guidance, applied")
            lines.until(lambda line: (json.loads(line)["data"] or {}).get("subject") == "tea", 30, "jokes about tea")
            assert ctl.json("status", sid)["context"]["subject"] == "tea"
            interrupt_and_check(follower, lines)
        finally:
            second.kill()
    finally:
        first.kill()
        if follower is not None:
            stop_process(follower)
    steps = [json.loads(line) for line in lines.seen]
    seqs = [s["seq"] for s in steps]
    assert seqs == list(range(1, len(seqs) + 1)), f"no gap or repeat across the restart: {seqs}"
    assert len({s["epoch"] for s in steps}) >= 2, "steps from both daemons"
