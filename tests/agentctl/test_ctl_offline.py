"""Exit codes without a running daemon: 5 for daemon status, 4 for an unacknowledged action,
3 for a missing database, 2 for configuration problems."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ctlkit import Ctl, write_config

from agentd.config import load_settings
from agentd.store import Store
from agentd.store.actions import ActionRecord


def test_daemon_status_without_a_daemon_exits_5(tmp_path: Path) -> None:
    ctl = Ctl(write_config(tmp_path))
    result = ctl("daemon", "status", code=5)
    assert "no daemon answers on" in result.stderr and "agentd.sock" in result.stderr
    error = json.loads(ctl("--json", "--timeout", "1", "daemon", "status", code=5).stdout)
    assert error["exit_code"] == 5 and error["socket"].endswith("agentd.sock")


def test_action_without_a_daemon_times_out_and_stays_queued(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)

    async def create_db() -> None:
        await Store.open(settings.storage.uri, settings.storage.num_shards)

    asyncio.run(create_db())
    ctl = Ctl(config)
    result = ctl("--timeout", "1", "pause", "s-somewhere", code=4)
    assert "within 1s" in result.stderr
    assert "stays queued" in result.stderr
    assert "no daemon answers" in result.stderr  # the hint could not be delivered, and it says so

    error = json.loads(ctl("--json", "--timeout", "0.5", "create", "joke", "--session-id", "later", code=4).stdout)
    assert error["exit_code"] == 4 and error["status"] == "pending" and error["session_id"] == "later"

    async def pending() -> list[ActionRecord]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
        return ActionRecord.from_arrow(await store.actions.query().to_arrow())

    rows = {a.session_id: a for a in asyncio.run(pending())}
    assert rows["s-somewhere"].status == "pending" and rows["s-somewhere"].kind == "pause"
    assert rows["later"].action_id == error["action_id"] and rows["later"].status == "pending"


def test_missing_database_is_not_found(tmp_path: Path) -> None:
    ctl = Ctl(write_config(tmp_path, db=tmp_path / "nowhere"))
    for args in (["list"], ["status", "s-1"], ["steps", "s-1"], ["pause", "s-1"], ["create", "joke"]):
        result = ctl(*args, code=3)
        assert "no agentd database at" in result.stderr, args
    ctl("conversation", "show", "c-1", code=3)
    assert not (tmp_path / "nowhere").exists(), "agentctl never creates a database"


def test_configuration_problems_are_usage_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = load_settings(config)

    async def create_db() -> None:
        await Store.open(settings.storage.uri, settings.storage.num_shards)

    asyncio.run(create_db())
    other = tmp_path / "other.toml"
    other.write_text(f'[storage]\nuri = "{settings.storage.uri}"\nnum_shards = 16\n')
    mismatch = Ctl(other)("list", code=2)
    assert "num_shards = 8" in mismatch.stderr

    typo = tmp_path / "typo.toml"
    typo.write_text("[daemon]\nworkerz = 2\n")
    assert "unknown key" in Ctl(typo)("list", code=2).stderr
    assert "config file not found" in Ctl(tmp_path / "absent.toml")("list", code=2).stderr


def _empty_database(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    settings = load_settings(config)
    asyncio.run(Store.open(settings.storage.uri, settings.storage.num_shards))
    return config


def test_without_a_daemon_it_says_so_at_once_and_ctrl_c_withdraws(tmp_path: Path) -> None:
    """The default 30 s wait starts with the news (no daemon; queued); Ctrl-C then withdraws it."""
    import signal
    import time

    from ctlkit import spawn_agentctl, stop_process

    config = _empty_database(tmp_path)
    proc = spawn_agentctl(config, "pause", "s-nobody")
    try:
        assert proc.stderr is not None
        started = time.monotonic()
        first = proc.stderr.readline()
        assert "no daemon answers" in first and "is queued (action a-" in first and "Ctrl-C withdraws" in first
        assert time.monotonic() - started < 20, "said at once, not after the 30 s timeout"
        action_id = first.split("(action ")[1].split(")")[0]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        rest = proc.stderr.read()
        assert f"withdrew action {action_id}" in rest, rest
    finally:
        stop_process(proc)
    ctl = Ctl(config)
    assert ctl.json("actions") == [], "no longer queued"
    row = ctl.json("actions", "--all")
    assert row["action_id"] == action_id and row["status"] == "failed" and row["error_code"] == "cancelled"


def test_without_a_daemon_no_wait_queues_and_cancel_withdraws(tmp_path: Path) -> None:
    config = _empty_database(tmp_path)
    ctl = Ctl(config)
    created = ctl("create", "joke", "--session-id", "later", "--no-wait")
    assert created.stdout.strip() == "later", "create --no-wait prints the session id"
    assert "no daemon answers" in created.stderr and "queued" in created.stderr
    queued = ctl.json("pause", "later", "--no-wait")
    assert queued["status"] == "pending" and queued["kind"] == "pause" and queued["shard"] >= 0
    listed = ctl.json("actions")
    assert [a["kind"] for a in listed] == ["create", "pause"]
    status = ctl("status", "later", code=3)  # no session row yet: nothing applied
    assert "unknown session" in status.stderr
    cancelled = ctl.json("cancel", queued["action_id"])
    assert cancelled["outcome"] == "cancelled"
    assert ctl("cancel", queued["action_id"]).stdout.split() == [queued["action_id"], "cancelled"]
    assert ctl("cancel", "a-nothing", code=3).stdout.split()[-2:] == ["not", "found"]
    assert ctl.json("actions")["kind"] == "create", "one queued action left: one JSON object"
