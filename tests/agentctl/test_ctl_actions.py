"""Action commands against a real daemon: create, pause, resume, interrupt, destroy.

Each test drives the real CLI (click's CliRunner, in-process) and checks the JSON shapes and
exit codes of the contract in issue 6.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ctlkit import Ctl, Daemon
from helpers import wait_for

from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.sql import sql_str

SESSION_KEYS = {
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
}


def actions_of(ctl: Ctl, session_id: str) -> list[ActionRecord]:
    from agentd.config import load_settings

    settings = load_settings(ctl.config)

    async def go() -> list[ActionRecord]:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards, create=False)
        rows = await store.actions.query().where(f"session_id = {sql_str(session_id)}").to_arrow()
        return ActionRecord.from_arrow(rows)

    return asyncio.run(go())


def test_create_joke_prints_the_session_and_status_shows_it(ctl: Ctl) -> None:
    created = ctl.json("create", "joke", "--subject", "cats")
    assert set(created) >= {"session_id", "agent_id", "status"}  # keys are only ever added
    assert created["agent_id"] == created["session_id"]
    assert created["status"] == "running"

    row = ctl.json("status", created["session_id"])
    assert set(row) >= SESSION_KEYS
    assert row["agent_type"] == "joke"
    assert isinstance(row["context"], dict)
    assert row["context"]["subject"] == "cats"
    assert row["conversation_id"] is None
    assert "_create_action" not in row["config"]

    human = ctl("create", "joke", "--agent-id", "jokester", "--session-id", "human-1")
    assert human.stdout.strip() == "human-1"
    assert ctl.json("status", "human-1")["agent_id"] == "jokester"


def test_pause_and_resume_print_the_new_status(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "5")
    assert ctl.json("pause", sid).items() >= {"session_id": sid, "status": "paused"}.items()
    row = ctl.json("status", sid)
    assert row["status"] == "paused"
    assert row["context"]["paused"] is True
    assert ctl.json("pause", sid)["status"] == "paused"  # pausing twice is a no-op

    out = ctl("resume", sid).stdout
    assert out.split() == [sid, "running"]
    assert ctl.json("status", sid)["status"] == "running"


def test_interrupt_with_json_and_free_text_guidance(ctl: Ctl) -> None:
    sid = ctl.create_joke("--subject", "cats", "--interval", "60")
    applied = ctl.json("interrupt", sid, '{"subject": "owls"}')
    assert set(applied) >= {"session_id", "status", "applied", "context"}
    assert applied["applied"] == {"subject": "owls"}
    assert applied["context"]["subject"] == "owls"

    text = ctl.json("interrupt", sid, "about dogs", "--now")
    assert text["applied"] == {"subject": "dogs"}
    assert ctl.json("status", sid)["context"]["subject"] == "dogs"

    # --now: a tick about the new subject follows at once, not after the 60 s interval.
    def joke_about_dogs() -> bool:
        steps = ctl.json("steps", sid)
        steps = steps if isinstance(steps, list) else [steps]
        return any(s["kind"] == "tick" and (s["data"] or {}).get("subject") == "dogs" for s in steps)

    wait_for(joke_about_dogs, 20, "a tick right after interrupt --now")

    human = ctl("interrupt", sid, "subject: bats").stdout
    assert '{"subject": "bats"}' in human.splitlines()[0]
    assert any(line.split() == ["subject", "bats"] for line in human.splitlines()[1:])


def test_guidance_is_applied_while_paused(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "5")
    ctl("pause", sid)
    result = ctl.json("interrupt", sid, '{"subject": "tea"}')
    assert result["status"] == "paused"
    assert ctl.json("status", sid)["context"]["subject"] == "tea"


def test_invalid_guidance(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "5")
    before = len(actions_of(ctl, sid))

    broken = ctl("interrupt", sid, '{"subject": ', code=2)
    assert "not a valid JSON object" in broken.stderr
    empty = ctl("interrupt", sid, "   ", code=2)
    assert "guidance is empty" in empty.stderr
    assert len(actions_of(ctl, sid)) == before, "a usage error must not enqueue anything"

    wrong_key = ctl("interrupt", sid, '{"topic": "cats"}', code=1)
    assert "invalid joke guidance" in wrong_key.stderr
    gibberish = ctl("--json", "interrupt", sid, "blah", code=1)
    error = gibberish.stdout.strip()
    assert '"exit_code":1' in error and "cannot understand guidance" in error
    assert ctl.json("status", sid)["status"] == "running", "rejected guidance leaves the session alone"


def test_unknown_session_is_not_found(ctl: Ctl) -> None:
    for args in (["pause"], ["resume"], ["interrupt", "--now"], ["destroy"]):
        command = [args[0], "no-such-session", *(["about cats"] if args[0] == "interrupt" else []), *args[1:]]
        result = ctl(*command, code=3)
        assert "unknown session no-such-session" in result.stderr
    out = ctl("--json", "pause", "no-such-session", code=3).stdout
    shaped: dict[str, Any] = json.loads(out)
    assert shaped["exit_code"] == 3
    assert shaped["session_id"] == "no-such-session"
    assert shaped["kind"] == "pause"
    assert shaped["error"].startswith("unknown session")
    assert "unknown session" in ctl("status", "no-such-session", code=3).stderr
    assert "unknown session" in ctl("steps", "no-such-session", code=3).stderr


def test_creating_and_destroying_a_session_is_logged_by_the_daemon(ctl: Ctl, daemon: Daemon) -> None:
    """Issue 13: the fleet's lifecycle shows in the daemon's log (other actions only at debug)."""
    sid = ctl.create_joke("--interval", "30")
    ctl.json("destroy", sid)
    # Logged once the acknowledgement's row commits, a moment after the client got the push.
    wait_for(lambda: f"session {sid} destroyed" in daemon.tail(2_000_000), 10, "the destroy in the daemon's log")
    assert f"session {sid} created (agent {sid}, type joke)" in daemon.tail(2_000_000)


def test_destroy_then_actions_are_rejected(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "5")
    destroyed = ctl.json("destroy", sid, "--reason", "done testing")
    assert destroyed.items() >= {"session_id": sid, "status": "stopped"}.items()
    steps = ctl.json("steps", sid, "--limit", "1")
    assert steps["text"] == "destroyed: done testing"
    assert ctl.json("status", sid)["status"] == "stopped"

    rejected = ctl("pause", sid, code=1)
    assert f"session {sid} is stopped" in rejected.stderr
    assert ctl.json("destroy", sid)["status"] == "stopped"  # destroying again succeeds


def test_no_wait_prints_the_action_id(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "5")
    queued = ctl.json("pause", sid, "--no-wait")
    assert set(queued) == {"action_id", "session_id", "kind", "shard", "status"}
    assert queued["action_id"].startswith("a-")
    assert (queued["session_id"], queued["kind"], queued["status"]) == (sid, "pause", "pending")
    wait_for(lambda: ctl.json("status", sid)["status"] == "paused", 20, "the queued pause")

    human = ctl("resume", sid, "--no-wait")
    assert human.stdout.strip().startswith("a-")
    assert "not waiting" in human.stderr
    wait_for(lambda: ctl.json("status", sid)["status"] == "running", 20, "the queued resume")


def test_same_session_id_twice_is_rejected(ctl: Ctl) -> None:
    ctl("create", "joke", "--session-id", "twice")
    second = ctl("create", "joke", "--session-id", "twice", code=1)
    assert "session twice already exists" in second.stderr


def test_idempotency_key_makes_a_retried_create_the_same_action(ctl: Ctl) -> None:
    first = ctl.json("create", "joke", "--idempotency-key", "retry-me")
    again = ctl.json("create", "joke", "--idempotency-key", "retry-me")
    assert again == first
    creates = [a for a in actions_of(ctl, first["session_id"]) if a.kind == "create"]
    assert len(creates) == 1


def test_usage_errors(ctl: Ctl) -> None:
    assert "not allowed" in ctl("status", "bad id!", code=2).stderr
    assert "not allowed" in ctl("create", "joke", "--session-id", "a::b", code=2).stderr
    ctl("create", "joke", "--interval", "0", code=2)
    ctl("list", "--status", "sleeping", code=2)
    ctl("steps", "x", "--limit", "0", code=2)
    ctl("create", "persona", "--name", "Ada", code=2)  # --conversation is required
    ctl("frobnicate", code=2)
