"""The BAML adapter against a real OpenAI-compatible HTTP server on 127.0.0.1 (no mocks).

Every test runs the real generated client and the real BAML runtime (Rust HTTP client, prompt
rendering, output parsing); only the model is replaced, by ``LoopbackLLMServer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from llm_helpers import KEY_ENV, MODEL, SECRET, adapter, loopback_config

from agentd.config import ConfigError, LLMConfig
from agentd.llm.baml_adapter import BamlLLM
from agentd.llm.base import LLMError, TranscriptLine
from agentd.llm.factory import make_llm
from agentd.llm.loopback import LoopbackLLMServer
from agentd.llm.offline import OfflineLLM

T = TypeVar("T")

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def with_server(body: Callable[[LoopbackLLMServer], Awaitable[T]]) -> T:
    async def main() -> T:
        async with LoopbackLLMServer() as srv:
            return await body(srv)

    return asyncio.run(main())


def _prompt(srv: LoopbackLLMServer) -> str:
    return "\n".join(str(m["content"]) for m in srv.bodies[-1]["messages"])


def test_joke_request_carries_model_inputs_and_key() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        llm = make_llm(loopback_config(srv))
        assert isinstance(llm, BamlLLM)
        joke = await llm.tell_joke("quantum cats", "deadpan")
        assert joke.text == "Loopback joke about quantum cats."
        assert joke.subject == "quantum cats"
        assert joke.source == f"baml:openai-generic/{MODEL}"
        assert srv.requests == 1
        assert srv.bodies[-1]["model"] == MODEL
        prompt = _prompt(srv)
        assert "Write one joke about: quantum cats" in prompt
        assert "Style: deadpan" in prompt
        assert srv.headers[-1]["authorization"] == f"Bearer {SECRET}"
        await llm.aclose()

    with_server(body)


def test_persona_reply_is_typed_and_prompt_has_transcript() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        llm = adapter(srv)
        transcript = [
            TranscriptLine(author="user", text="Has anyone seen my umbrella?"),
            TranscriptLine(author="Ada", text="Check the hallway closet."),
        ]
        reply = await llm.persona_reply("Sam", "hard-boiled noir", transcript, "Ada")
        assert reply.text == "Sam says hello from loopback."
        assert reply.should_speak is True
        prompt = _prompt(srv)
        assert "You are Sam" in prompt and "hard-boiled noir" in prompt
        assert "user: Has anyone seen my umbrella?" in prompt
        assert "Ada: Check the hallway closet." in prompt
        assert "The last message is from Ada." in prompt

        # The model may decline: should_speak false comes through as such.
        srv.responder = lambda _b: '{"text": "", "should_speak": false}'
        reply = await llm.persona_reply("Sam", "noir", transcript, "Ada")
        assert reply.should_speak is False

    with_server(body)


def test_slow_server_times_out_then_retries() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        srv.delay = 3.0
        llm = adapter(srv, timeout=0.3, retries=1)
        start = time.monotonic()
        with pytest.raises(LLMError) as info:
            await llm.tell_joke("slowness")
        elapsed = time.monotonic() - start
        assert info.value.reason == "timeout"
        assert info.value.attempts == 2
        assert srv.requests == 2
        assert elapsed < 2.0

    with_server(body)


def test_server_errors_are_retried_then_reported_as_http() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        srv.fail_next = -1
        llm = adapter(srv, retries=2)
        with pytest.raises(LLMError) as info:
            await llm.tell_joke("outages")
        assert info.value.reason == "http"
        assert info.value.status == 500
        assert info.value.attempts == 3
        assert srv.requests == 3

        # Two failures then a success: the caller sees only the joke.
        srv.reset()
        srv.fail_next = 2
        joke = await llm.tell_joke("resilience")
        assert joke.subject == "resilience"
        assert srv.requests == 3

    with_server(body)


def test_client_errors_are_not_retried() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        srv.fail_next, srv.fail_status = -1, 401
        llm = adapter(srv, retries=3)
        with pytest.raises(LLMError) as info:
            await llm.tell_joke("auth")
        assert (info.value.reason, info.value.status, srv.requests) == ("http", 401, 1)

    with_server(body)


def test_malformed_content_is_a_parse_error() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        srv.malformed = True
        llm = adapter(srv, retries=2)
        with pytest.raises(LLMError) as info:
            await llm.tell_joke("gibberish")
        assert info.value.reason == "parse"
        assert "can't help" in info.value.message
        assert srv.requests == 1  # a parse failure is not retried

        srv.malformed = False
        srv.responder = lambda _b: '{"text": "yes", "should_speak": "perhaps?"}'
        with pytest.raises(LLMError) as info:
            await llm.persona_reply("Sam", "noir", [], "user")
        assert info.value.reason == "parse"

    with_server(body)


def test_refused_connection_is_http_and_retried() -> None:
    cfg = LLMConfig(provider="openai-generic", model="m", base_url="http://127.0.0.1:9/v1", retries=1)

    async def body() -> None:
        llm = BamlLLM(cfg, retry_backoff=0.01)
        with pytest.raises(LLMError) as info:
            await llm.tell_joke("nobody home")
        assert info.value.reason == "http"
        assert info.value.attempts == 2

    asyncio.run(body())


def test_hundred_concurrent_calls_respect_the_limit() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        srv.delay = 0.05
        llm = adapter(srv, concurrency=5)
        jokes = await asyncio.gather(*(llm.tell_joke(f"subject {i}") for i in range(100)))
        assert [j.subject for j in jokes] == [f"subject {i}" for i in range(100)]
        assert srv.requests == 100
        assert srv.max_in_flight == 5  # saturated, never exceeded

    with_server(body)


def test_cancelled_calls_free_their_slots() -> None:
    """A tick timeout cancels the call from outside: slots come back and the adapter works on."""

    async def body(srv: LoopbackLLMServer) -> None:
        srv.delay = 5.0
        llm = adapter(srv, concurrency=2)
        calls = [asyncio.ensure_future(llm.tell_joke(f"slow {i}")) for i in range(6)]
        await asyncio.sleep(0.2)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        assert srv.requests == 2  # the other four never got a slot
        srv.delay = 0.0
        joke = await asyncio.wait_for(llm.tell_joke("after"), 2.0)
        assert joke.subject == "after"

    with_server(body)


def test_logging_is_routed_quiet_and_never_shows_the_key(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BAML_LOG", "info")  # BAML would print prompts to stdout at this level

    async def body(srv: LoopbackLLMServer) -> None:
        llm = adapter(srv, retries=0, log_level="DEBUG")
        from agentd.llm.baml_logging import configure_llm_logging

        configure_llm_logging("DEBUG")
        with caplog.at_level(logging.DEBUG, logger="agentd.llm"):
            await llm.tell_joke("secrets")
            srv.fail_next = -1
            with pytest.raises(LLMError):
                await llm.tell_joke("more secrets")
        configure_llm_logging("WARNING")

    with_server(body)
    out, err = capfd.readouterr()
    assert "Write one joke about" not in out + err
    assert "[BAML" not in out + err
    assert "Write one joke about: secrets" in caplog.text  # the prompt went to agentd.llm
    assert "Loopback joke about secrets." in caplog.text  # and the raw reply
    assert SECRET not in caplog.text + out + err


def test_config_errors_fail_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"model": "m", "base_url": "http://127.0.0.1:9/v1"}
    monkeypatch.delenv(KEY_ENV)
    cases = [
        LLMConfig(provider="openai-generic", api_key_env=KEY_ENV, **base),
        LLMConfig(provider="no-such-provider", **base),
        LLMConfig(provider="openai-generic", base_url="http://127.0.0.1:9/v1"),
    ]
    for cfg in cases:
        with pytest.raises(ConfigError) as info:  # what a worker catches at boot
            make_llm(cfg)
        assert isinstance(info.value, LLMError) and info.value.reason == "config", cfg
        assert "Stack backtrace" not in info.value.message
    with pytest.raises(LLMError) as info:
        BamlLLM(LLMConfig(provider="openai-generic", **base), options={"http": {"bogus_ms": 1}})
    assert info.value.reason == "config"


def test_other_providers_by_name_and_extra_options() -> None:
    async def body(srv: LoopbackLLMServer) -> None:
        # "ollama" is a BAML provider name speaking the OpenAI protocol; options pass through.
        llm = BamlLLM(
            LLMConfig(provider="ollama", model="llama3.2", base_url=srv.base_url),
            options={"temperature": 0.25, "headers": {"X-Agentd": "1"}},
        )
        await llm.tell_joke("llamas")
        assert srv.bodies[-1]["model"] == "llama3.2"
        assert srv.bodies[-1]["temperature"] == 0.25
        assert srv.headers[-1]["x-agentd"] == "1"
        assert "authorization" not in srv.headers[-1]

    with_server(body)
    # Anthropic builds its own request shape; constructing it validates the options offline.
    assert BamlLLM(LLMConfig(provider="anthropic", model="claude-x", base_url="http://127.0.0.1:9"))


def test_factory_defaults_to_offline() -> None:
    assert isinstance(make_llm(LLMConfig()), OfflineLLM)
