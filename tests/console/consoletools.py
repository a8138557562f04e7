"""The real daemon (with its gateway) and a headless Chromium for the console tests.

Playwright drives Debian's ``chromium`` through ``executable_path``; it never downloads a
browser. Where no browser is installed the tests skip and say why (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from supervisor.daemon import Daemon, enqueue_and_wait, running, write_config

from agentd.ids import new_id
from agentd.store import Store
from agentd.store.conversations import ConversationRecord, insert_conversation
from agentd.timeutil import utcnow

CHROMIUM_PATHS = ("chromium", "chromium-browser", "google-chrome")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "console"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    """The system browser, or a skip that says how to get one."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    for name in CHROMIUM_PATHS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run does it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def console_daemon(tmp: Path, **gateway: Any) -> Iterator[tuple[Daemon, int]]:
    """One worker and the gateway on a free port; the daemon's process group is killed on exit."""
    port = free_port()
    extra = "".join(f"\n{k} = {v}" for k, v in gateway.items())
    config = write_config(tmp, workers=1, warm_spare="false")
    config.write_text(
        config.read_text().replace(
            "[gateway]\nenabled = false", f"[gateway]\nenabled = true\nport = {port}\npoll_interval = 0.05{extra}"
        )
    )
    with running(config, tmp / "daemon.log") as daemon:
        yield daemon, port


def create_sessions(daemon: Daemon, jokes: int) -> tuple[list[str], str, str]:
    """``jokes`` joke sessions, a conversation and a persona in it (cooldown 0, quick replies)."""
    settings = daemon.settings

    async def conversation() -> str:
        store = await Store.open(settings.storage.uri, settings.storage.num_shards)
        record = ConversationRecord(conversation_id=new_id("c"), title="tea time", created_at=utcnow())
        await insert_conversation(store.conversations, record)
        return record.conversation_id

    cid = asyncio.run(conversation())
    sids = [f"joke-{i:02d}" for i in range(jokes)]
    persona = "ada-1"
    actions: list[tuple[str, str, dict[str, Any]]] = [
        ("create", sid, {"agent_type": "joke", "agent_id": "joker", "config": {"interval": 0.3}}) for sid in sids
    ]
    actions.append(
        (
            "create",
            persona,
            {
                "agent_type": "persona",
                "agent_id": "ada",
                "config": {"conversation_id": cid, "name": "Ada", "tone": "dry", "cooldown": 0, "interval": 0.3},
            },
        )
    )
    done = enqueue_and_wait(settings, actions, timeout=30)
    assert all(d.status == "done" for d in done), [d.error for d in done]
    return sids, cid, persona


def artifacts_dir() -> Path:
    """Where screenshots go: ``artifacts/console`` (or $CONSOLE_ARTIFACTS), kept out of git."""
    path = Path(os.environ.get("CONSOLE_ARTIFACTS", ARTIFACTS))
    path.mkdir(parents=True, exist_ok=True)
    ignore = path.parent / ".gitignore"
    if path == ARTIFACTS and not ignore.exists():
        ignore.write_text("# test artifacts (screenshots); written by tests/console\n*\n")
    return path
