"""Issue 12 end to end: every guidance form through the real daemon (`agentd run`) and `agentctl`.

Each accepted form (the specification's typed operations, arrays, the older objects, every
sentence of the example tables) is applied at once: the acknowledged action's result carries
``applied`` and ``operations``, and the persisted session row shows the change, also while
paused. Each invalid form fails the action (agentctl exits 1) with a message naming the field,
and leaves the session and its stored steps as they were. With a real provider configured (a
loopback OpenAI-compatible server, real BAML), text the parser cannot read is interpreted by
the model and the step records ``data.interpreted_by = "llm"``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO

from agentd.agents.operations import JOKE_GUIDANCE, PERSONA_GUIDANCE
from agentd.control import DaemonUnreachable, request_sync
from agentd.llm.loopback import LoopbackLLMServer, default_responder
from agentd.queue import ActionQueue
from agentd.store import Store
from agentd.store.actions import ActionRecord
from agentd.store.conversations import ConversationRecord, insert_conversation
from agentd.store.sessions import get_session
from agentd.store.steps import StepRecord, read_steps
from agentd.timeutil import utcnow

from .daemon import running, write_config

pytestmark = pytest.mark.timeout(240)

# Context key each operation sets (the speak_now flag is cleared by the tick it causes, so it is
# checked on the guidance step's own snapshot instead of the session row).
_FIELD_KEY = {"set_subject": ("subject", "subject"), "set_style": ("style", "style"), "set_tone": ("tone", "tone")}
_FIELD_KEY["set_cooldown"] = ("seconds", "cooldown")


def expected_delta(ops: list[dict[str, Any]]) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    for op in ops:
        if op["type"] == "speak_now":
            delta["speak_now"] = True
        else:
            field, key = _FIELD_KEY[op["type"]]
            delta[key] = op[field]
    return delta


class Driver:
    """One store and queue for a whole test; each action is enqueued, the daemon woken, and awaited."""

    def __init__(self, settings: Any, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.queue = ActionQueue(store.actions, store.num_shards)

    async def act(self, kind: str, session_id: str, payload: dict[str, Any]) -> ActionRecord:
        action = await self.queue.enqueue(kind, session_id, payload)
        try:
            request_sync(self.settings.control_socket_path, {"op": "wake"}, timeout=1)
        except DaemonUnreachable:
            pass
        done = await self.queue.wait(action.action_id, timeout=30)
        assert done is not None, f"{kind} {session_id} {payload} not acknowledged"
        return done

    async def context(self, session_id: str) -> dict[str, Any]:
        record = await get_session(self.store.sessions, session_id)
        assert record is not None
        return dict(record.context)

    async def steps(self, session_id: str, kind: str | None = None) -> list[StepRecord]:
        return [s for s in await read_steps(self.store.steps, session_id) if kind is None or s.kind == kind]

    async def guide(self, session_id: str, guidance: Any, ops: list[dict[str, Any]]) -> StepRecord:
        """Send guidance that must be accepted as ``ops``; check the result, the row and the step."""
        done = await self.act("interrupt", session_id, {"guidance": guidance})
        assert done.status == "done", (guidance, done.error)
        assert done.result is not None
        assert done.result["operations"] == ops, guidance
        delta = expected_delta(ops)
        assert done.result["applied"] == delta, guidance
        context = await self.context(session_id)  # durable before the acknowledgement
        for key, value in delta.items():
            if key != "speak_now":
                assert context[key] == value, (guidance, key, context)
        [step] = [s for s in await self.steps(session_id, "guidance") if s.action_id == done.action_id]
        assert step.guidance == {"raw": guidance, "normalized": ops}
        assert step.state["context"].items() >= delta.items()
        return step


async def _setup(settings: Any) -> Driver:
    store = await Store.open(settings.storage.uri, settings.storage.num_shards)
    await insert_conversation(store.conversations, ConversationRecord(conversation_id="c1", created_at=utcnow()))
    driver = Driver(settings, store)
    for sid, payload in (
        ("joke-1", {"agent_type": "joke", "config": {"subject": "cats", "interval": 30}}),
        ("persona-1", {"agent_type": "persona", "config": {"conversation_id": "c1", "name": "Ann", "interval": 30}}),
    ):
        done = await driver.act("create", sid, payload)
        assert done.status == "done", done.error
    return driver


STRUCTURED: list[tuple[str, Any, list[dict[str, Any]]]] = [
    ("persona-1", {"type": "set_tone", "tone": "noir"}, [{"type": "set_tone", "tone": "noir"}]),
    ("persona-1", {"type": "set_cooldown", "seconds": 0.5}, [{"type": "set_cooldown", "seconds": 0.5}]),
    ("persona-1", {"type": "speak_now"}, [{"type": "speak_now"}]),
    (
        "persona-1",
        {"set_tone": "grumpy", "set_cooldown": 3},
        [{"type": "set_tone", "tone": "grumpy"}, {"type": "set_cooldown", "seconds": 3.0}],
    ),
    ("persona-1", {"tone": "dry"}, [{"type": "set_tone", "tone": "dry"}]),
    ("persona-1", {"speak_now": True}, [{"type": "speak_now"}]),
    (
        "persona-1",
        [{"type": "set_tone", "tone": "wistful"}, {"type": "set_cooldown", "seconds": 1}, {"type": "speak_now"}],
        [{"type": "set_tone", "tone": "wistful"}, {"type": "set_cooldown", "seconds": 1.0}, {"type": "speak_now"}],
    ),
    ("joke-1", {"subject": "owls"}, [{"type": "set_subject", "subject": "owls"}]),
    ("joke-1", {"type": "set_subject", "subject": "lighthouses"}, [{"type": "set_subject", "subject": "lighthouses"}]),
    ("joke-1", {"type": "set_style", "style": "deadpan"}, [{"type": "set_style", "style": "deadpan"}]),
    (
        "joke-1",
        [{"type": "set_subject", "subject": "moths"}, {"type": "set_style", "style": "pun"}],
        [{"type": "set_subject", "subject": "moths"}, {"type": "set_style", "style": "pun"}],
    ),
]
TABLE = [("joke-1", text, list(ops)) for text, ops in JOKE_GUIDANCE.examples] + [
    ("persona-1", text, list(ops)) for text, ops in PERSONA_GUIDANCE.examples
]
INVALID: list[tuple[str, Any, str]] = [
    ("persona-1", {"type": "dance"}, "type: unknown operation 'dance'"),
    ("persona-1", {"type": "set_cooldown", "seconds": "fast"}, "seconds: Input should be a valid number"),
    ("persona-1", {"type": "set_tone", "tone": 7}, "tone: Input should be a valid string"),
    ("persona-1", {"type": "set_cooldown", "seconds": -1}, "seconds: Input should be greater than or equal to 0"),
    ("joke-1", {"type": "set_subject", "subject": ""}, "subject: String should have at least 1 character"),
    ("joke-1", {"subject": "x" * 100_000}, "subject: String should have at most 200 characters"),
    ("persona-1", {"type": "set_tone", "tone": "y" * 100_000}, "tone: String should have at most 80 characters"),
    (
        "persona-1",
        [{"type": "set_tone", "tone": "sly"}, {"type": "set_cooldown", "seconds": -2}],
        "operation 2 (set_cooldown): seconds:",
    ),
    ("joke-1", "make it better", "cannot understand guidance 'make it better' for a joke session"),
    ("joke-1", 42, "guidance must be a JSON object, a non-empty JSON array of operations, or text"),
    ("persona-1", [], "guidance must be a JSON object, a non-empty JSON array of operations, or text"),
]


def test_every_form_and_sentence_is_applied_at_once_and_every_invalid_one_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, workers=1, warm_spare="false")
    with running(config, tmp_path / "daemon.log") as daemon:

        async def scenario() -> None:
            driver = await _setup(daemon.settings)
            for sid, guidance, ops in [*STRUCTURED, *TABLE]:
                await driver.guide(sid, guidance, ops)
            # While paused: applied and persisted at once, and the snapshot says paused.
            for sid in ("joke-1", "persona-1"):
                assert (await driver.act("pause", sid, {})).status == "done"
            step = await driver.guide(
                "persona-1", "use a cheerful tone and wait 2 seconds between replies", TABLE[-1][2]
            )
            assert step.state["context"]["paused"] is True and step.data == {"interpreted_by": "parser"}
            step = await driver.guide(
                "joke-1",
                [{"type": "set_subject", "subject": "penguins"}],
                [{"type": "set_subject", "subject": "penguins"}],
            )
            assert step.state["context"]["paused"] is True and step.data == {"interpreted_by": "structured"}
            # Invalid: refused naming the field, the teaching list attached, nothing stored.
            before = {sid: (await driver.context(sid), len(await driver.steps(sid))) for sid in ("joke-1", "persona-1")}
            for sid, guidance, names in INVALID:
                failed = await driver.act("interrupt", sid, {"guidance": guidance})
                assert failed.status == "failed", guidance
                error = failed.error or ""
                assert names in error and f"session {sid}" in error, error[:300]
                assert '{"type": "set_' in error, "the rejection lists the accepted operations"
                assert len(error) < 2000
            after = {sid: (await driver.context(sid), len(await driver.steps(sid))) for sid in ("joke-1", "persona-1")}
            assert after == before

        asyncio.run(scenario())
        agentctl_forms(config)


def _agentctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentctl", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def agentctl_forms(config: Path) -> None:
    """The object, array and text forms through ``agentctl interrupt``: exit 0 with operations, or exit 1."""
    for sid, guidance, ops in (
        ("persona-1", '{"type": "set_tone", "tone": "noir"}', [{"type": "set_tone", "tone": "noir"}]),
        ("persona-1", '{"type": "set_cooldown", "seconds": 0.5}', [{"type": "set_cooldown", "seconds": 0.5}]),
        (
            "persona-1",
            "be more noir and say something now",
            [{"type": "set_tone", "tone": "noir"}, {"type": "speak_now"}],
        ),
        ("joke-1", "tell me about penguins", [{"type": "set_subject", "subject": "penguins"}]),
        ("joke-1", "can you switch to otters?", [{"type": "set_subject", "subject": "otters"}]),
        (
            "persona-1",
            '[{"type": "set_tone", "tone": "dry"}, {"type": "speak_now"}]',
            [{"type": "set_tone", "tone": "dry"}, {"type": "speak_now"}],
        ),
    ):
        proc = _agentctl(config, "--json", "interrupt", sid, guidance)
        assert proc.returncode == 0, (guidance, proc.stdout, proc.stderr)
        result = json.loads(proc.stdout)
        assert result["operations"] == ops and result["applied"] == expected_delta(ops)
        status = json.loads(_agentctl(config, "--json", "status", sid).stdout)
        for key, value in expected_delta(ops).items():
            if key != "speak_now":
                assert status["context"][key] == value
    for sid, guidance, names in (
        ("persona-1", '{"type": "set_cooldown", "seconds": -1}', "seconds: Input should be greater than or equal to 0"),
        ("persona-1", '{"type": "fly"}', "unknown operation 'fly'"),
        ("joke-1", '{"subject": ""}', "subject: String should have at least 1 character"),
    ):
        proc = _agentctl(config, "interrupt", sid, guidance)
        assert proc.returncode == 1, (guidance, proc.stdout, proc.stderr)
        taught = '{"type": "set_tone", "tone": "noir"}' if sid == "persona-1" else '{"type": "set_subject"'
        assert names in proc.stderr and taught in proc.stderr, proc.stderr


# -- the LLM fallback ------------------------------------------------------------------------

_INSTRUCTION = re.compile(r"Instruction:\s*(.+)")
READINGS = {
    "channel a hard-boiled detective from the forties": [{"type": "set_tone", "tone": "hard-boiled detective"}],
    "lately I only want the dark stuff": [{"type": "set_style", "style": "dark"}],
}


def _responder(body: dict[str, Any]) -> str:
    prompt = "\n".join(str(m.get("content")) for m in body.get("messages", []))
    match = _INSTRUCTION.search(prompt)
    return json.dumps(READINGS.get(match.group(1).strip(), [])) if match else default_responder(body)


@contextmanager
def loopback_in_thread() -> Iterator[LoopbackLLMServer]:
    """The loopback model on its own event loop in a thread, with this test's responder."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = LoopbackLLMServer(_responder)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_text_the_parser_cannot_read_is_interpreted_by_the_configured_llm(tmp_path: Path) -> None:
    with loopback_in_thread() as server:
        config = write_config(tmp_path, workers=1, warm_spare="false")
        config.write_text(
            config.read_text() + f'[llm]\nprovider = "openai-generic"\nbase_url = "{server.base_url}"\n'
            'model = "loopback-model"\napi_key_env = "E2E_LLM_KEY"\ntimeout = 5\nretries = 0\n'
        )
        with running(config, tmp_path / "daemon.log", env={"E2E_LLM_KEY": "sk-test"}) as daemon:

            async def scenario() -> None:
                driver = await _setup(daemon.settings)
                step = await driver.guide(
                    "persona-1",
                    "channel a hard-boiled detective from the forties",
                    [{"type": "set_tone", "tone": "hard-boiled detective"}],
                )
                assert step.data == {"interpreted_by": "llm"}
                step = await driver.guide(
                    "joke-1", "lately I only want the dark stuff", [{"type": "set_style", "style": "dark"}]
                )
                assert step.data == {"interpreted_by": "llm"}
                step = await driver.guide("joke-1", "about cats", [{"type": "set_subject", "subject": "cats"}])
                assert step.data == {"interpreted_by": "parser"}
                # The model found nothing: refused with both reasons, nothing changed.
                before = await driver.context("joke-1")
                failed = await driver.act("interrupt", "joke-1", {"guidance": "hum a tune"})
                assert failed.status == "failed" and "the LLM found no operation" in (failed.error or "")
                assert await driver.context("joke-1") == before

            asyncio.run(scenario())
