"""``agentctl purge``: finished sessions (and their steps) deleted on request, live ones refused.

Offline tests write sessions straight into a real database (no daemon needed: a purge never
goes through a worker); the end-to-end test drives a real daemon with the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ctlkit import Ctl, Daemon, agentctl_argv, stop_process, write_config

from agentd.config import load_settings
from agentd.ids import deterministic_id, shard_for
from agentd.store import Store
from agentd.store.sessions import SessionRecord, upsert_sessions
from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow

pytestmark = pytest.mark.timeout(180)

STATUSES = {
    "s-run": ("running", 0),
    "s-pause": ("paused", 0),
    "s-old": ("stopped", 7200),
    "s-new": ("stopped", 10),
    "s-err": ("error", 7200),
}


def _rows(config: Path, *, orphan: bool = False) -> None:
    """Each session of STATUSES with 3 steps, updated that many seconds ago; optionally orphan steps."""
    settings = load_settings(config)
    now = utcnow()

    async def go() -> None:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        sessions, steps = [], []
        for sid, (status, age) in STATUSES.items():
            when = now - timedelta(seconds=age)
            sessions.append(
                SessionRecord.model_validate(
                    {
                        "session_id": sid,
                        "agent_id": sid,
                        "agent_type": "joke",
                        "shard": 1,
                        "status": status,
                        "last_seq": 3,
                        "created_at": when,
                        "updated_at": when,
                    }
                )
            )
            steps += [StepRecord(session_id=sid, agent_id=sid, shard=1, seq=q, ts=when) for q in (1, 2, 3)]
        if orphan:
            steps.append(StepRecord(session_id="s-orphan", agent_id="x", shard=1, seq=1, ts=now))
        await store.steps.add(StepRecord.to_arrow(steps))
        await upsert_sessions(store.sessions, sessions)

    asyncio.run(go())


def _left(config: Path) -> dict[str, int]:
    """Steps per session id still stored, plus '#row:<id>' for each session row."""
    settings = load_settings(config)

    async def go() -> dict[str, int]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
        found: dict[str, int] = {}
        for sid in (await store.steps.query().select(["session_id"]).to_arrow()).column("session_id").to_pylist():
            found[sid] = found.get(sid, 0) + 1
        for sid in (await store.sessions.query().select(["session_id"]).to_arrow()).column("session_id").to_pylist():
            found[f"#row:{sid}"] = 1
        return found

    return asyncio.run(go())


def test_purge_named_sessions_refuses_live_and_unknown_ones(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _rows(config, orphan=True)
    ctl = Ctl(config)
    before = _left(config)

    live = ctl("purge", "s-old", "s-run", "s-pause", code=1)
    assert "refusing to purge live session(s) s-pause (paused), s-run (running)" in live.stderr
    assert "destroy them first" in live.stderr
    assert json.loads(ctl("--json", "purge", "s-run", code=1).stdout)["live"] == ["s-run"]
    unknown = ctl("purge", "s-old", "s-nope", code=3)
    assert "unknown session(s) s-nope; nothing purged" in unknown.stderr
    assert _left(config) == before  # nothing deleted by a refused purge

    out = ctl.json("purge", "s-old", "s-err", "s-orphan", "s-old")
    assert out == {
        "purged": ["s-err", "s-old", "s-orphan"],
        "sessions": 2,
        "steps": 7,
        "dry_run": False,
        "would_purge": [],
    }
    left = _left(config)
    assert not {"s-old", "s-err", "s-orphan", "#row:s-old", "#row:s-err"} & set(left)
    assert left["s-run"] == 3 and left["s-new"] == 3
    ctl("purge", "s-old", code=3)  # gone for good: unknown now


def test_purge_by_age_all_and_dry_run(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _rows(config)
    ctl = Ctl(config)
    dry = ctl.json("purge", "--all-stopped", "--dry-run")
    assert dry["would_purge"] == ["s-err", "s-new", "s-old"] and dry["purged"] == [] and dry["steps"] == 0
    assert len(_left(config)) == 10

    human = ctl("purge", "--stopped-before", "1h")
    assert human.stdout.split() == ["s-err", "s-old"]
    assert "purged 2 session(s) and 6 step(s)" in human.stderr
    assert ctl.json("purge", "--stopped-before", "1h")["purged"] == []  # idempotent
    assert "nothing to purge" in ctl("purge", "--stopped-before", "1h").stderr
    assert ctl.json("purge", "--all-stopped", "--yes")["purged"] == ["s-new"]
    assert set(_left(config)) == {"s-run", "s-pause", "#row:s-run", "#row:s-pause"}

    for args, text in (
        ((), "exactly one of them"),
        (("s-run", "--all-stopped"), "exactly one of them"),
        (("--stopped-before", "soon"), "is not a duration"),
        (("bad id!",), "characters not allowed"),
    ):
        assert text in ctl("purge", *args, code=2).stderr, args


def test_purge_asks_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal it asks first; "n" deletes nothing (exit 1), --yes does not ask."""
    config = write_config(tmp_path)
    _rows(config)

    def on_tty(*args: str, answer: bytes) -> tuple[int, str]:
        primary, secondary = os.openpty()
        proc = subprocess.Popen(
            [*agentctl_argv(), "--config", str(config), "purge", *args],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=secondary,
        )
        os.close(secondary)
        try:
            seen = b""
            deadline = time.monotonic() + 60
            while b"[y/N]" not in seen and b"purged" not in seen and time.monotonic() < deadline:
                try:
                    seen += os.read(primary, 1024)
                except OSError:
                    break
            if b"[y/N]" in seen:
                os.write(primary, answer)
            proc.wait(timeout=60)
            try:
                while chunk := os.read(primary, 1024):
                    seen += chunk
            except OSError:
                pass
            return proc.returncode, seen.decode(errors="replace")
        finally:
            os.close(primary)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    code, seen = on_tty("s-old", answer=b"n\n")
    assert code == 1 and "Delete 1 session(s) and all their steps (s-old)?" in seen
    assert _left(config)["s-old"] == 3
    code, seen = on_tty("s-old", "--yes", answer=b"")
    assert code == 0 and "[y/N]" not in seen
    assert "s-old" not in _left(config)


def test_destroy_and_purge_an_error_session_then_reuse_its_id(ctl: Ctl, daemon: Daemon) -> None:
    """End to end with the daemon: a session left ``error`` (as by a failed create) can be
    destroyed and purged from the CLI; its id then creates a new session."""
    settings = load_settings(daemon.config)
    sid = f"s-broken-{os.getpid()}"
    key = f"k-{sid}"

    async def leave_error() -> None:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
        now = utcnow()
        record: dict[str, Any] = {
            "session_id": sid,
            "agent_id": sid,
            "agent_type": "joke",
            "shard": 0,
            "status": "error",
            "last_seq": 1,
            # As left by a create (sent with --idempotency-key KEY) that failed half-way.
            "config": {"_create_action": deterministic_id("a", "idem", key)},
            "created_at": now,
            "updated_at": now,
        }

        record["shard"] = shard_for(sid, store.num_shards)
        await upsert_sessions(store.sessions, [SessionRecord.model_validate(record)])
        step = StepRecord(session_id=sid, agent_id=sid, shard=record["shard"], seq=1, ts=now, status="error")
        await store.steps.add(StepRecord.to_arrow([step]))

    asyncio.run(leave_error())
    assert ctl.json("status", sid)["status"] == "error"
    assert ctl("create", "joke", "--session-id", sid, code=1).stderr.count("already exists") == 1
    # Retrying that create is acknowledged from the stored row: not a success while it is in error.
    retried = ctl("create", "joke", "--session-id", sid, "--idempotency-key", key, code=1)
    assert f"session {sid} exists but is in error" in retried.stderr and "agentctl purge" in retried.stderr
    destroyed = ctl.json("destroy", sid)  # succeeds; the runtime may record a final "stopped" step
    assert destroyed["session_id"] == sid and destroyed["status"] in ("error", "stopped")
    assert ctl.json("purge", sid)["purged"] == [sid]
    ctl("status", sid, code=3)
    assert ctl.json("create", "joke", "--session-id", sid, "--interval", "5")["session_id"] == sid
    first = ctl.json("steps", sid, "--since", "0", "--limit", "1")  # a new session, seq from 1 again
    assert first["seq"] == 1 and first["text"] == "created"

    # A running session is refused until it is destroyed, then purged with its steps.
    assert "refusing to purge live" in ctl("purge", sid, code=1).stderr
    assert ctl.json("destroy", sid)["status"] == "stopped"
    assert ctl.json("purge", sid, "--yes")["steps"] >= 2
    assert "unknown session" in ctl("steps", sid, code=3).stderr


def test_purge_is_listed_in_the_root_help(ctl: Ctl) -> None:
    assert "purge" in ctl("--help").stdout
    proc = subprocess.Popen([*agentctl_argv(), "purge", "--help"], stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    assert "--stopped-before" in out and "Example" in out
