"""Fleet operations against the real daemon: create --count, selectors, confirmation, summaries.

Also the receipts (interrupt's seq), --json/--timeout anywhere, and a batch with an invalid
item submitted on the control socket (valid items applied, the invalid one reported by index).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from typing import Any

import pytest
from ctlkit import Ctl, Daemon, agentctl_argv, stop_process

import agentctl.cli
import agentctl.fleet
from agentctl.context import Obj
from agentctl.submit import outcome_error, submit
from agentd.ids import new_id

pytestmark = pytest.mark.timeout(300)


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_create_count_is_one_batch_with_one_agent_id(ctl: Ctl) -> None:
    agent = new_id("load")
    out = ctl("--json", "create", "joke", "--count", "6", "--agent-id", agent, "--interval", "30").stdout
    created = lines(out)
    assert len(created) == 6 and len({c["session_id"] for c in created}) == 6
    assert all(set(c) == {"session_id", "agent_id", "status"} for c in created)
    assert {c["agent_id"] for c in created} == {agent} and {c["status"] for c in created} == {"running"}
    human = ctl("create", "joke", "--count", "2", "--agent-id", agent, "--interval", "30").stdout.split()
    assert len(human) == 2 and all(sid.startswith("s-") for sid in human)
    listed = ctl.json("list", "--agent-id", agent)
    assert {row["session_id"] for row in listed} == {c["session_id"] for c in created} | set(human)
    assert ctl("create", "joke", "--count", "2", "--session-id", "x", code=2)


def test_create_no_wait_prints_session_ids(ctl: Ctl) -> None:
    sid = ctl("create", "joke", "--no-wait", "--interval", "30").stdout.strip()
    assert sid.startswith("s-"), "create --no-wait prints the session id, not the action id"
    ids = ctl("create", "joke", "--count", "3", "--no-wait", "--interval", "30").stdout.split()
    assert len(ids) == 3 and all(i.startswith("s-") for i in ids)


def test_selectors_skip_what_is_already_in_that_state(ctl: Ctl) -> None:
    agent = new_id("fleet")
    sids = [c["session_id"] for c in lines(ctl("--json", "create", "joke", "--count", "4", "--agent-id", agent).stdout)]
    ctl("pause", sids[0])
    summary = ctl.json("pause", "--agent-id", agent, "--yes")
    assert sorted(r["session_id"] for r in summary["applied"]) == sorted(sids[1:])
    assert summary["failed"] == [] and [s["session_id"] for s in summary["skipped"]] == [sids[0]]
    assert summary["skipped"][0]["reason"] == "already paused"
    again = ctl("pause", "--agent-id", agent, "--yes").stdout.strip()
    assert again == "pause: 0 applied, 0 failed, 4 skipped (4 already paused)"
    # several ids, no selector: one batch, a summary
    resumed = ctl.json("resume", sids[0], sids[1])
    assert sorted(r["session_id"] for r in resumed["applied"]) == sorted(sids[:2])
    by_status = ctl.json("resume", "--agent-id", agent, "--status", "paused", "--yes")
    assert sorted(r["session_id"] for r in by_status["applied"]) == sorted(sids[2:])
    guided = ctl.json("interrupt", "--agent-id", agent, "--yes", '{"subject": "owls"}')
    assert len(guided["applied"]) == 4 and all(isinstance(r["seq"], int) for r in guided["applied"])
    destroyed = ctl("destroy", "--agent-id", agent, "--yes").stdout.strip()
    assert destroyed == "destroy: 4 applied, 0 failed, 0 skipped"
    after = ctl.json("pause", "--agent-id", agent, "--yes")
    assert after["applied"] == [] and {s["reason"] for s in after["skipped"]} == {"stopped"}
    assert ctl("pause", sids[0], "--agent-id", agent, code=2)
    assert "selector" in ctl("pause", code=2).stderr


def test_a_failed_item_fails_the_batch(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "30")
    result = ctl("pause", sid, "s-does-not-exist", code=1)
    assert "agentctl: s-does-not-exist: unknown session" in result.stderr
    assert result.stdout.strip() == "pause: 1 applied, 1 failed, 0 skipped"
    failed = json.loads(ctl("--json", "pause", sid, "s-does-not-exist", code=1).stdout)["failed"]
    assert failed[0]["code"] == "not_found" and failed[0]["exit_code"] == 3


def test_a_selector_asks_on_a_terminal(ctl: Ctl, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = new_id("ask")
    ctl("create", "joke", "--count", "2", "--agent-id", agent, "--interval", "30")
    monkeypatch.setattr(agentctl.fleet, "stdin_is_terminal", lambda: True)
    declined = ctl.runner.invoke(
        agentctl.cli.cli, ["--config", str(ctl.config), "pause", "--agent-id", agent], input="n\n"
    )
    assert declined.exit_code == 1 and "Pause 2 session(s)" in declined.stderr
    assert {row["status"] for row in ctl.json("list", "--agent-id", agent)} == {"running"}
    accepted = ctl.runner.invoke(
        agentctl.cli.cli, ["--config", str(ctl.config), "pause", "--agent-id", agent], input="y\n"
    )
    assert accepted.exit_code == 0 and "pause: 2 applied" in accepted.stdout
    assert ctl("resume", "--agent-id", agent, "--yes").exit_code == 0  # --yes: no question


def test_interrupt_receipt_and_status_options_anywhere(ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "60")
    receipt = ctl.json("interrupt", sid, '{"subject": "tea"}')
    assert isinstance(receipt["seq"], int) and receipt["seq"] > 0
    human = ctl("interrupt", sid, "about coffee").stdout
    assert f"at seq {receipt['seq'] + 1}" in human.splitlines()[0]
    for args in (
        ["--json", "status", sid],
        ["status", sid, "--json"],
        ["status", "--json", sid],
        ["--timeout", "20", "status", sid, "--json"],
        ["status", sid, "--timeout", "20", "--json"],
    ):
        row = json.loads(ctl(*args).stdout)
        assert row["session_id"] == sid and row["queued_actions"] == [], args
    assert json.loads(ctl("pause", sid, "--timeout", "20", "--json").stdout)["status"] == "paused"


def test_a_batch_with_an_invalid_item_applies_the_valid_ones(daemon: Daemon, ctl: Ctl) -> None:
    sid = ctl.create_joke("--interval", "30")
    obj = Obj(str(daemon.config), None, False, 30.0)
    batch = submit(
        obj,
        [
            {"kind": "pause", "session_id": sid},
            {"kind": "pause", "session_id": "bad::id"},
            {"kind": "explode", "session_id": sid},
        ],
        wait=True,
    )
    assert batch.no_daemon is None, "the daemon carried it"
    good, bad_id, bad_kind = batch.items
    assert good.state == "done" and good.result is not None and good.result["status"] == "paused"
    assert bad_id.state == "invalid" and bad_kind.state == "invalid" and bad_id.action_id is None
    error = outcome_error(bad_id, batch)
    assert error is not None and error.exit_code == 2


def test_types_stop_suggestion_and_list_fits_the_terminal(ctl: Ctl) -> None:
    types = {row["type"]: row for row in ctl.json("types")}
    assert {"joke", "persona"} <= set(types)
    assert {f["name"] for f in types["persona"]["config"]} >= {"conversation_id", "name", "tone"}
    assert "conversation_id" in ctl("types").stdout
    stop = ctl("stop", "s-1", code=2)
    assert "pause" in stop.stderr and "destroy" in stop.stderr and "steps" not in stop.stderr
    cid = ctl("conversation", "create", "tea").stdout.strip()
    listed = ctl.json("conversation", "list")
    rows = listed if isinstance(listed, list) else [listed]
    assert any(r["conversation_id"] == cid and r["messages"] == 0 for r in rows)


def test_create_count_shows_a_progress_bar_only_on_a_terminal(ctl: Ctl) -> None:
    """The bar goes to stderr when stderr is a terminal (a pty here); piped, stderr stays quiet and
    stdout carries only the session ids either way."""
    agent = new_id("bar")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*agentctl_argv(), "--config", str(ctl.config), "create", "joke", "--count", "3", "--agent-id", agent],
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=120)
        finally:
            stop_process(proc)
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the writer side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    assert proc.returncode == 0
    assert len(out.split()) == 3, out
    text = shown.decode(errors="replace")
    assert "creating" in text and "3/3" in text, f"no progress bar on the terminal: {text!r}"
    piped = ctl("create", "joke", "--count", "3", "--agent-id", agent)
    assert "creating" not in piped.stderr and len(piped.stdout.split()) == 3
