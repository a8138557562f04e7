"""Misbehaving plug-ins, hostile WebSocket frames and a damaged database (issue 11, the fuzz suite).

Each case checks the stored data afterwards: the offending session records the problem, every
other session goes on, and nothing stored is lost or silently replaced.
"""

from __future__ import annotations

import asyncio
import glob
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from agentctl.cli import cli
from agentd.agents.base import StepOutcome, Tick
from agentd.agents.joke import JokeAgent
from agentd.agents.registry import register
from agentd.store import Store, StoreError
from tests.gateway.gwtools import gateway_settings, running_gateway
from tests.runtime.harness import assert_contiguous, fast_settings, hosted

# What a buggy plug-in's do_tick may return instead of a proper StepOutcome.
MALFORMED: list[Any] = [
    None,
    42,
    {"text": "a dict, not a StepOutcome"},
    StepOutcome.model_construct(text=5, status="ok", data=None, notes=None, error=None, context_delta={}, quiet=False),
    StepOutcome.model_construct(
        text="x", status="weird", data={"k": object()}, notes=None, error=None, context_delta={}, quiet=False
    ),
    StepOutcome.model_construct(
        text="x", status="ok", data=None, notes=None, error=None, context_delta={"n": float("nan")}, quiet=False
    ),
]


class MalformedAgent(JokeAgent):
    """Returns each malformed outcome in turn, then good ones."""

    type_name = "malformed"

    async def do_tick(self, tick: Tick) -> Any:
        if tick.iteration < len(MALFORMED):
            return MALFORMED[tick.iteration]
        return await super().do_tick(tick)


register(MalformedAgent)


def test_a_plugin_returning_malformed_outcomes_hurts_nobody(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("bad", agent_type="malformed")
            await h.create("good")
            await h.wait_steps("bad", len(MALFORMED) + 2, timeout=20)
            await h.wait_steps("good", len(MALFORMED) + 2, timeout=20)
            bad = await h.steps("bad", "tick")
            assert all(s.status == "error" for s in bad[:3]), [(s.status, s.error) for s in bad[:3]]
            assert "not a StepOutcome" in (bad[0].error or "")
            assert bad[-1].status == "ok", "the session keeps going after the plug-in recovers"
            assert_contiguous(await h.steps("bad"))
            assert_contiguous(await h.steps("good"))
            assert (await h.session("good")).status == "running"

    asyncio.run(scenario())


frames = (
    st.text(max_size=300)
    | st.builds(json.dumps, st.dictionaries(st.sampled_from(["op", "room", "since", "x"]), st.text(max_size=20)))
    | st.builds(
        lambda op, room, since: json.dumps({"op": op, "room": room, "since": since}),
        st.sampled_from(["subscribe", "unsubscribe", "ping", "nope"]),
        st.sampled_from(["run::a::s", "conv::c", "agent::a", "", "run::", "x" * 200]),
        st.none() | st.integers(-5, 10**20) | st.text(max_size=5) | st.dictionaries(st.text(max_size=5), st.integers()),
    )
)


def test_any_websocket_frame_gets_an_answer_and_the_connection_stays_usable(tmp_path: Path) -> None:
    examples: list[str] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frame=frames)
    def collect(frame: str) -> None:
        examples.append(frame)

    collect()

    async def scenario() -> None:
        await Store.open(str(tmp_path / "db"), 4)
        async with running_gateway(gateway_settings(str(tmp_path / "db"))) as gateway:
            url = f"ws://127.0.0.1:{gateway.port}/"
            async with connect(url) as ws:
                for frame in [*examples, "[" * 50_000, '{"op": "subscribe", "room": "run::a::s", "since": 1e999}']:
                    await ws.send(frame)
                async with asyncio.timeout(30):
                    while True:  # drain: every frame was answered and the connection is alive
                        await ws.send(json.dumps({"op": "ping"}))
                        reply = json.loads(await ws.recv())
                        if reply.get("type") == "pong" or reply.get("op") == "pong":
                            break

    asyncio.run(scenario())


def _make_db(db_uri: str) -> None:
    async def scenario() -> None:
        async with hosted(fast_settings(db_uri)) as h:
            await h.create("a")
            await h.wait_steps("a", 2)

    asyncio.run(scenario())


def test_a_missing_table_is_reported_not_silently_recreated(db_uri: str) -> None:
    _make_db(db_uri)
    shutil.rmtree(Path(db_uri) / "steps.lance")
    with pytest.raises(StoreError, match="has no table 'steps': restore it from a backup"):
        asyncio.run(Store.open(db_uri, 4))
    assert not (Path(db_uri) / "steps.lance").exists(), "nothing was created in its place"
    result = CliRunner().invoke(cli, ["--db", db_uri, "list"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "steps" in result.output, result.output


def test_a_corrupted_data_file_gives_a_clear_error(db_uri: str) -> None:
    _make_db(db_uri)
    files = sorted(glob.glob(f"{db_uri}/steps.lance/data/*.lance"))
    assert files
    with open(files[0], "r+b") as handle:
        handle.truncate(10)
    result = CliRunner().invoke(cli, ["--db", db_uri, "steps", "a"])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    # Nothing else was touched: the sessions table still reads.
    store = asyncio.run(Store.open(db_uri, 4))
    assert asyncio.run(store.sessions.count_rows()) == 1
