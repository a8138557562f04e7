"""The LLM fallback for free-text guidance: the real BAML runtime against a loopback server.

``InterpretGuidance`` (baml_src/guidance.baml) runs for real (prompt rendering, HTTP, output
parsing); only the model is replaced by ``LoopbackLLMServer`` with a responder that answers
like a model would. What comes back is validated like any other guidance, and a slow or
failing model rejects the guidance with a clear error while the session keeps going.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, TypeVar

import pytest
from llm_helpers import KEY_ENV, SECRET, adapter
from runtime.harness import fast_settings, hosted

from agentd.agents.base import Agent, AgentServices, GuidanceError, GuidanceNotUnderstood, GuidanceSpec
from agentd.agents.guidance import Operation
from agentd.agents.registry import agent_type
from agentd.llm.loopback import LoopbackLLMServer, default_responder
from agentd.llm.offline import OfflineLLM

T = TypeVar("T")

pytestmark = pytest.mark.timeout(60)

# What the fake model answers, by instruction (anything else: an empty list).
READINGS: dict[str, list[dict[str, Any]]] = {
    "channel a hard-boiled detective from the forties": [{"type": "set_tone", "tone": "hard-boiled detective"}],
    "go quiet for a minute, then pipe up": [
        {"type": "set_cooldown", "seconds": 60},
        {"type": "speak_now", "tone": None},
    ],
    "give me the dark stuff": [{"type": "set_style", "style": "dark"}],
    "make waiting negative": [{"type": "set_cooldown", "seconds": -5}],
    "invent something": [{"type": "fly", "altitude": 3}],
    "count a bit faster": [{"type": "bump", "by": 4, "note": "faster"}],
}
_INSTRUCTION = re.compile(r"Instruction:\s*(.+)")


def responder(body: dict[str, Any]) -> str:
    prompt = "\n".join(str(m.get("content")) for m in body.get("messages", []))
    match = _INSTRUCTION.search(prompt)
    if match is None:
        return default_responder(body)
    return json.dumps(READINGS.get(match.group(1).strip(), []))


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def with_server(body: Callable[[LoopbackLLMServer], Awaitable[T]]) -> T:
    async def main() -> T:
        async with LoopbackLLMServer(responder) as srv:
            return await body(srv)

    return asyncio.run(main())


def agent(type_name: str, llm: Any) -> Any:
    cls = agent_type(type_name)
    config = {"conversation_id": "c", "name": "Ada"} if type_name == "persona" else {}
    return cls(cls.parse_config(config), AgentServices(llm=llm, store=None, session_id="s", agent_id="a"))


def test_unreadable_text_goes_to_the_model_and_comes_back_typed() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        llm = adapter(srv)
        persona = agent("persona", llm)
        normalized, by = await persona.understand_guidance("channel a hard-boiled detective from the forties")
        assert by == "llm"
        assert normalized.model_dump() == [{"type": "set_tone", "tone": "hard-boiled detective"}]
        prompt = "\n".join(str(m["content"]) for m in srv.bodies[-1]["messages"])
        assert '"persona" agent session' in prompt and '{"type": "set_cooldown", "seconds": 0.5}' in prompt
        # Null fields a model sends are dropped, the rest validated: two operations, in order.
        normalized, by = await persona.understand_guidance("go quiet for a minute, then pipe up")
        assert by == "llm" and normalized.model_dump() == [
            {"type": "set_cooldown", "seconds": 60.0},
            {"type": "speak_now"},
        ]
        joke = agent("joke", llm)
        normalized, by = await joke.understand_guidance("give me the dark stuff")
        assert by == "llm" and normalized.model_dump() == [{"type": "set_style", "style": "dark"}]
        # What the parser reads never costs a call.
        calls = srv.requests
        assert (await joke.understand_guidance("tell me about penguins"))[1] == "parser"
        assert (await joke.understand_guidance({"subject": "owls"}))[1] == "structured"
        assert srv.requests == calls

    with_server(body)


def test_what_the_model_returns_is_validated_like_any_input() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        persona = agent("persona", adapter(srv))
        for text, names in (
            ("make waiting negative", "seconds: Input should be greater than or equal to 0"),
            ("invent something", "type: unknown operation 'fly'"),
            ("hum a little tune", "the LLM found no operation in it"),
        ):
            with pytest.raises(GuidanceError) as info:
                await persona.understand_guidance(text)
            message = str(info.value)
            assert names in message, message
            assert '{"type": "set_tone", "tone": "noir"}' in message, "the rejection still teaches"

    with_server(body)


def test_a_failing_model_rejects_the_guidance_with_both_reasons() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        srv.fail_next = -1
        persona = agent("persona", adapter(srv, retries=1))
        with pytest.raises(GuidanceError) as info:
            await persona.understand_guidance("channel a hard-boiled detective from the forties")
        message = str(info.value)
        assert "cannot understand guidance" in message and "asking the LLM failed (http: " in message
        assert SECRET not in message

    with_server(body)


def test_offline_keeps_the_parsers_error() -> None:
    async def main() -> None:
        with pytest.raises(GuidanceNotUnderstood):
            await agent("persona", OfflineLLM()).understand_guidance("channel a hard-boiled detective")

    asyncio.run(main())


def test_in_a_session_the_step_records_the_llm_and_a_slow_model_never_wedges_it(db_uri: str) -> None:
    """Through the real host: ``data.interpreted_by``; a model slower than the tick timeout gets
    the guidance rejected, the session keeps ticking, and another session is not held up."""

    async def body(srv: LoopbackLLMServer) -> None:
        llm = adapter(srv, timeout=10.0, retries=0)
        async with hosted(fast_settings(db_uri, runtime={"tick_timeout": 1.0}), llm=llm) as h:
            await h.create("j1", subject="cats")
            await h.create("j2", subject="owls")
            done = await h.act("interrupt", "j1", {"guidance": "give me the dark stuff"})
            assert done.status == "done", done.error
            assert done.result is not None and done.result["operations"] == [{"type": "set_style", "style": "dark"}]
            [step] = await h.steps("j1", "guidance")
            assert step.data == {"interpreted_by": "llm"}
            assert step.guidance == {
                "raw": "give me the dark stuff",
                "normalized": [{"type": "set_style", "style": "dark"}],
            }
            assert (await h.session("j1")).context["style"] == "dark"

            srv.delay = 3.0
            slow = await h.queue.enqueue(
                "interrupt", "j1", {"guidance": "channel a hard-boiled detective from the forties"}
            )
            h.host.hint()
            other = await h.act("interrupt", "j2", {"guidance": "about moths"})  # answered meanwhile
            assert other.status == "done"
            failed = await h.queue.wait(slow.action_id, timeout=15)
            assert failed is not None and failed.status == "failed"
            assert "not understood within 1s" in (failed.error or "") and "session j1" in (failed.error or "")
            assert (await h.session("j1")).context["style"] == "dark", "nothing changed"
            assert len(await h.steps("j1", "guidance")) == 1
            srv.delay = 0.0
            ticks = len(await h.steps("j1", "tick"))
            await h.wait_steps("j1", ticks + 1, timeout=15)  # still ticking

    with_server(body)


class Bump(Operation):
    """Add this much at every tick."""

    type: Literal["bump"]
    by: int
    note: str | None = None
    example: ClassVar[dict[str, Any]] = {"type": "bump", "by": 2}


class Counter(Agent):
    type_name = "test-llm-counter"
    guidance_spec = GuidanceSpec(operations=(Bump,))


def test_a_plugin_types_own_fields_reach_the_model_and_come_back() -> None:
    """``GuidanceOperation`` is ``@@dynamic``: the adapter adds a plug-in's fields for the call."""

    async def body(srv: LoopbackLLMServer) -> None:
        counter = Counter(
            Counter.parse_config({}), AgentServices(llm=adapter(srv), store=None, session_id="s", agent_id="a")
        )
        with pytest.raises(GuidanceError):  # no phrases: text is refused by the parser...
            counter.normalize_guidance("count a bit faster")
        normalized, by = await counter.understand_guidance("count a bit faster")  # ...and read by the model
        assert by == "llm" and normalized.model_dump(exclude_none=True) == [{"type": "bump", "by": 4, "note": "faster"}]
        prompt = "\n".join(str(m["content"]) for m in srv.bodies[-1]["messages"])
        assert re.search(r"\bby\b", prompt) and "note" in prompt, "the output format names the plug-in's fields"

    with_server(body)
