"""End to end: the daemon on the openai-generic provider against a loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from helpers import reaped

from agentd.store import Store
from agentd.store.conversations import (
    ConversationRecord,
    MessageRecord,
    insert_conversation,
    insert_messages,
    read_messages,
)
from agentd.timeutil import utcnow

from .daemon import all_steps, enqueue_and_wait, running, write_config


def test_daemon_uses_the_configured_llm_server(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "agentd.llm.loopback"], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    with reaped(server):  # type: ignore[arg-type]
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        config = write_config(tmp_path)
        config.write_text(
            config.read_text() + f'[llm]\nprovider = "openai-generic"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
            'model = "loopback-model"\napi_key_env = "E2E_LLM_KEY"\ntimeout = 5\n'
        )
        with running(config, tmp_path / "daemon.log", env={"E2E_LLM_KEY": "sk-test"}) as daemon:
            settings = daemon.settings

            async def conversation() -> None:
                store = await Store.open(settings.storage.uri, settings.storage.num_shards)
                await insert_conversation(
                    store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow())
                )

            asyncio.run(conversation())
            enqueue_and_wait(
                settings,
                [
                    ("create", "joker", {"agent_type": "joke", "config": {"subject": "lighthouses"}}),
                    (
                        "create",
                        "ann",
                        {"agent_type": "persona", "config": {"conversation_id": "c1", "name": "Ann", "cooldown": 0}},
                    ),
                ],
            )

            async def post() -> None:
                store = await Store.open(settings.storage.uri, settings.storage.num_shards)
                await insert_messages(
                    store.messages,
                    [
                        MessageRecord(
                            message_id="u1",
                            conversation_id="c1",
                            author_id="user",
                            role="user",
                            text="Hello?",
                            created_at=utcnow(),
                        )
                    ],
                )

            asyncio.run(post())
            deadline = time.monotonic() + 20
            jokes: list[str] = []
            replies: list[str] = []
            while time.monotonic() < deadline and not (jokes and replies):
                jokes = [
                    s.text or ""
                    for s in all_steps(settings)
                    if s.session_id == "joker" and s.kind == "tick" and s.status == "ok"
                ]

                async def agent_messages() -> list[str]:
                    store = await Store.open(settings.storage.uri, settings.storage.num_shards)
                    return [m.text for m in await read_messages(store.messages, "c1") if m.role == "agent"]

                replies = asyncio.run(agent_messages())
                time.sleep(0.3)
            assert jokes and all(j == "Loopback joke about lighthouses." for j in jokes), (jokes, daemon.tail())
            assert replies and replies[0] == "Ann says hello from loopback.", (replies, daemon.tail())
            assert "sk-test" not in daemon.tail(100_000), "the API key never reaches the logs"
