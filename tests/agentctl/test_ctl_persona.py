"""Conversations and personas through the CLI, against a real daemon."""

from __future__ import annotations

from ctlkit import Ctl
from helpers import wait_for


def test_conversation_commands_and_a_persona_replying(ctl: Ctl) -> None:
    created = ctl.json("conversation", "create", "tea time")
    assert set(created) == {"conversation_id", "title"}
    assert created["title"] == "tea time"
    cid = created["conversation_id"]
    assert ctl("conversation", "create", "other").stdout.strip().startswith("c-")

    options = ["--name", "Ada Lovelace", "--tone", "dry", "--cooldown", "0", "--interval", "10"]
    persona = ctl.json("create", "persona", "--conversation", cid, *options)
    assert persona["agent_id"] == "ada-lovelace"
    row = ctl.json("status", persona["session_id"])
    assert row["agent_type"] == "persona"
    assert row["conversation_id"] == cid
    assert row["context"]["tone"] == "dry"

    posted = ctl.json("conversation", "post", cid, "Who wants tea?", "--author", "alice")
    assert {"message_id", "conversation_id", "author_id", "role", "text", "created_at"} <= set(posted)
    assert (posted["author_id"], posted["role"], posted["text"]) == ("alice", "user", "Who wants tea?")

    def reply() -> list[dict[str, object]]:
        shown = ctl.json("conversation", "show", cid)
        messages = shown if isinstance(shown, list) else [shown]
        return [m for m in messages if m["role"] == "agent"]

    replies = wait_for(reply, 30, "the persona's reply")
    assert replies[0]["author_id"] == "ada-lovelace"

    shown = ctl.json("conversation", "show", cid)
    assert shown[0]["text"] == "Who wants tea?"
    assert all(set(m) >= {"message_id", "conversation_id", "author_id", "role", "text", "created_at"} for m in shown)
    human = ctl("conversation", "show", cid).stdout.splitlines()
    assert human[0].split() == ["WHEN", "AUTHOR", "ROLE", "TEXT"]
    assert "alice" in human[1] and "Who wants tea?" in human[1]

    later = ctl("conversation", "show", cid, "--since", posted["created_at"]).stdout
    assert "Who wants tea?" not in later and "ada-lovelace" in later
    assert ctl("--json", "conversation", "show", cid, "--since", "2999-01-01T00:00:00").stdout == ""

    tone = ctl.json("interrupt", persona["session_id"], '{"set_tone": "cheerful"}')
    assert tone["context"]["tone"] == "cheerful"
    assert ctl.json("interrupt", persona["session_id"], "speak now")["applied"] == {"speak_now": True}


def test_persona_for_a_missing_conversation_is_rejected(ctl: Ctl) -> None:
    result = ctl("create", "persona", "--conversation", "c-missing", "--name", "Ada", code=1)
    assert "conversation 'c-missing' does not exist" in result.stderr


def test_conversation_errors(ctl: Ctl) -> None:
    assert "unknown conversation c-nope" in ctl("conversation", "post", "c-nope", "hi", code=3).stderr
    assert "unknown conversation c-nope" in ctl("conversation", "show", "c-nope", code=3).stderr
    cid = ctl.json("conversation", "create", "x")["conversation_id"]
    ctl("conversation", "post", cid, "hi", "--author", "bad author", code=2)
    ctl("conversation", "post", cid, "  ", code=2)
    ctl("conversation", "show", cid, "--since", "yesterday", code=2)
    assert "no messages" in ctl("conversation", "show", cid).stderr
