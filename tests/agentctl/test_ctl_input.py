"""Bad input and long histories: undecodable argv bytes are usage errors, `steps` reads in pages."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ctlkit import Ctl, agentctl_argv, write_config

from agentd.config import load_settings
from agentd.store import Store
from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow
from agentd.views import read_view

pytestmark = pytest.mark.timeout(180)


def _flat(pages: list[list[int]]) -> list[int]:
    return [seq for page in pages for seq in page]


def _database(config: Path) -> Store:
    settings = load_settings(config)
    return asyncio.run(Store.open(settings.storage.uri, settings.storage.num_shards))


def test_undecodable_bytes_in_free_text_are_usage_errors_not_tracebacks(tmp_path: Path) -> None:
    """argv bytes that are not UTF-8 (Python sees lone surrogates) fail as exit 2 with a clear message.

    Run as real processes, as a shell would: before, ``interrupt`` got as far as encoding the
    action row and died with a UnicodeEncodeError traceback.
    """
    config = write_config(tmp_path)
    _database(config)  # a database exists, so nothing else stops the command first
    bad = b"about \xff cats"
    cases: list[tuple[list[bytes], str]] = [
        ([b"interrupt", b"s-1", bad], "'GUIDANCE'"),
        ([b"interrupt", b"s-1", b'{"subject": "\\ud800"}'], "a string in the guidance JSON"),
        ([b"conversation", b"post", b"c-1", bad], "'TEXT'"),
        ([b"conversation", b"create", bad], "'TITLE'"),
        ([b"create", b"joke", b"--subject", bad], "'--subject'"),
        ([b"create", b"persona", b"--conversation", b"c-1", b"--name", bad], "'--name'"),
        ([b"destroy", b"s-1", b"--reason", bad], "'--reason'"),
        ([b"pause", b"s-\xff"], "characters not allowed"),
    ]
    base = [os.fsencode(part) for part in agentctl_argv()] + [b"--config", os.fsencode(config), b"--timeout", b"1"]
    for args, where in cases:
        proc = subprocess.run([*base, *args], capture_output=True, timeout=60)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2, (args, proc.returncode, err)
        assert "Traceback" not in err and where in err, (args, err)
        if where != "characters not allowed":
            assert "not valid UTF-8 text" in err and "check the terminal" in err, (args, err)
    # Nothing was enqueued by any of them.
    store = _database(config)
    assert asyncio.run(store.actions.count_rows()) == 0
    assert asyncio.run(store.messages.count_rows()) == 0


def test_steps_reads_a_long_history_in_pages(tmp_path: Path) -> None:
    """Without --limit every step prints, in order, read STEPS_PAGE rows at a time; --limit keeps
    meaning the latest N, and --since/--limit the first N after SEQ (also across retention gaps)."""
    config = write_config(tmp_path)
    store = _database(config)
    now = utcnow()
    # Seqs 1-10 deleted by retention: the history starts at 11.
    steps = [
        StepRecord(session_id="s-long", agent_id="a", shard=1, seq=q, ts=now - timedelta(seconds=100 - q), text=f"t{q}")
        for q in range(11, 61)
    ]
    asyncio.run(store.steps.add(StepRecord.to_arrow(steps)))

    async def pages(since: int | None, limit: int | None) -> list[list[int]]:
        """Page through agentd.views' steps view, 7 steps a page, as agentctl does (following ``next``)."""
        opened = await Store.open(store.uri, store.num_shards, create=False)
        params: dict[str, Any] | None = {"session_id": "s-long", "since": since, "limit": limit, "page": 7}
        result = []
        while params is not None:
            page = await read_view(opened, "steps", params)
            result.append([s["seq"] for s in page["steps"]])
            params = None if page["next"] is None else {"session_id": "s-long", "page": 7, **page["next"]}
        return result

    all_pages = asyncio.run(pages(None, None))
    assert [len(p) for p in all_pages] == [7] * 7 + [1]
    assert _flat(all_pages) == list(range(11, 61))
    assert _flat(asyncio.run(pages(None, 10))) == list(range(51, 61))
    assert _flat(asyncio.run(pages(20, 3))) == [21, 22, 23]
    assert _flat(asyncio.run(pages(5, 3))) == [11, 12, 13]

    ctl = Ctl(config)
    printed = ctl.json("steps", "s-long")
    assert [s["seq"] for s in printed] == list(range(11, 61))
    assert [s["seq"] for s in ctl.json("steps", "s-long", "--limit", "3")] == [58, 59, 60]
    assert [s["seq"] for s in ctl.json("steps", "s-long", "--since", "58")] == [59, 60]
    table = ctl("steps", "s-long").stdout.splitlines()
    assert table[0].split()[:2] == ["SEQ", "WHEN"] and len(table) == 51  # one header, then every step
    assert table[1].split()[0] == "11" and table[-1].split()[0] == "60"
