"""``LLMClient`` through the generated async BAML client, with the provider chosen at run time.

Why a ClientRegistry built from ``[llm]`` instead of clients written in ``baml_src``: the provider,
model, URL and key are deployment choices, so switching from Ollama to OpenAI must be a config
edit and a restart, never a regenerate. The registry holds one client, ``agentd``, made primary.

Per call the adapter adds what BAML does not do the way a daemon needs:

* one ``asyncio.Semaphore`` per adapter (one adapter per worker process) caps in-flight calls at
  ``[llm] concurrency``, so 10k sessions never open 10k sockets to a local model server;
* a timeout per attempt, twice: BAML's own ``http.request_timeout_ms`` (a clean
  ``BamlTimeoutError``) and ``asyncio.wait_for`` slightly later as a backstop, which also aborts
  the request in the Rust runtime through an ``AbortController``;
* retries with exponential backoff and jitter on timeouts, 5xx, 429 and refused connections
  (BAML reports those as 503); 4xx and unparseable output fail at once (a retry rarely helps
  and costs tokens);
* every failure becomes ``LLMError`` with ``reason`` timeout | http | parse | config | other
  and a message with API keys masked, so the runtime records an error step and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import baml_py
from baml_py.errors import (
    BamlAbortError,
    BamlClientFinishReasonError,
    BamlClientHttpError,
    BamlError,
    BamlInvalidArgumentError,
    BamlTimeoutError,
    BamlValidationError,
)

from agentd.config import LLMConfig
from agentd.llm import baml_client
from agentd.llm.baml_client import types as btypes
from agentd.llm.baml_client.async_client import BamlAsyncClient
from agentd.llm.baml_client.runtime import BamlCallOptions
from agentd.llm.baml_client.sync_client import b as sync_b
from agentd.llm.baml_client.type_builder import TypeBuilder
from agentd.llm.baml_logging import BAML_NATIVE_ENV, log_collected_call, logger, redact
from agentd.llm.base import Joke, LLMConfigError, LLMError, Reply, TranscriptLine

__all__ = ["CLIENT_NAME", "MAX_TRANSCRIPT_LINES", "BamlLLM", "build_client_options"]

T = TypeVar("T")
CLIENT_NAME = "agentd"
# The prompt carries at most this many recent lines: bounded cost per call on long conversations.
MAX_TRANSCRIPT_LINES = 40
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_MAX_MESSAGE = 500


def build_client_options(
    cfg: LLMConfig, extra: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], str]:
    """BAML client options from config, and the API key (``""`` if none) for redaction.

    ``extra`` is the provider-specific ``[llm.options]`` table (temperature, headers, ...);
    the first-class keys win over it. Raises ``LLMConfigError`` for a missing key env var.
    """
    options: dict[str, Any] = {k: v for k, v in extra.items() if k != "http"}
    if cfg.model:
        options["model"] = cfg.model
    if cfg.base_url:
        options["base_url"] = cfg.base_url
    api_key = ""
    if cfg.api_key_env:
        api_key = env.get(cfg.api_key_env, "")
        if not api_key:
            raise LLMConfigError(f"[llm] api_key_env names {cfg.api_key_env!r}, which is not set")
        options["api_key"] = api_key
    if cfg.provider in ("openai-generic", "ollama") and not options.get("model"):
        raise LLMConfigError(f"[llm] model is required for provider {cfg.provider!r}")
    http = dict(extra.get("http") or {})
    http.setdefault("request_timeout_ms", max(1, int(cfg.timeout * 1000)))
    http.setdefault("connect_timeout_ms", max(1, int(min(cfg.timeout, 10.0) * 1000)))
    options["http"] = http
    return options, api_key


_STATIC_GUIDANCE_FIELDS = frozenset(btypes.GuidanceOperation.model_fields)


def _guidance_types(fields: Mapping[str, str]) -> TypeBuilder | None:
    """A TypeBuilder adding the fields ``GuidanceOperation`` lacks (None when it lacks none)."""
    extra = {name: kind for name, kind in fields.items() if name not in _STATIC_GUIDANCE_FIELDS}
    if not extra:
        return None
    builder = TypeBuilder()  # type: ignore[no-untyped-call]  # generated code, untyped __init__
    kinds = {"integer": builder.int, "number": builder.float, "boolean": builder.bool}
    for name, kind in extra.items():
        field_type = kinds.get(kind, builder.string)()  # type: ignore[no-untyped-call]
        builder.GuidanceOperation.add_property(name, field_type.optional())
    return builder


def _first_line(text: str) -> str:
    # BAML appends a Rust backtrace to some errors; the first paragraph says what went wrong.
    return text.split("\n\nStack backtrace", 1)[0].strip()


class BamlLLM:
    """``LLMClient`` backed by BAML; build one per worker process (it owns the concurrency cap)."""

    def __init__(
        self,
        cfg: LLMConfig,
        *,
        options: Mapping[str, Any] | None = None,
        retry_backoff: float | None = None,
        retry_backoff_max: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        extra = options if options is not None else getattr(cfg, "options", None) or {}
        client_options, api_key = build_client_options(cfg, extra, os.environ if env is None else env)
        self._secrets = (api_key,) if api_key else ()
        self.name = f"baml:{cfg.provider}/{client_options.get('model', '')}"
        self._timeout = cfg.timeout
        self._retries = cfg.retries
        self._backoff = retry_backoff if retry_backoff is not None else getattr(cfg, "retry_backoff", 0.5)
        self._backoff_max = (
            retry_backoff_max if retry_backoff_max is not None else getattr(cfg, "retry_backoff_max", 8.0)
        )
        self._sem = asyncio.Semaphore(cfg.concurrency)
        self._closed = False

        registry = baml_py.ClientRegistry()
        try:
            registry.add_llm_client(CLIENT_NAME, cfg.provider, client_options)
            registry.set_primary(CLIENT_NAME)
            # Builds (does not send) a request: bad provider options fail here, at startup.
            sync_b.with_options(client_registry=registry, env=BAML_NATIVE_ENV).request.TellJoke("x")
        except BamlError as exc:
            raise LLMConfigError(self._clean(exc, f"[llm] provider {cfg.provider!r}: ")) from None
        self._client: BamlAsyncClient = baml_client.b.with_options(client_registry=registry, env=BAML_NATIVE_ENV)
        logger.info("llm: %s via %s", self.name, redact(str(client_options.get("base_url", "default"))))

    @property
    def baml(self) -> BamlAsyncClient:
        """The generated client bound to this adapter's registry (no retries, cap or timeout)."""
        return self._client

    async def tell_joke(
        self, subject: str, style: str | None = None, *, index: int | None = None, key: str = ""
    ) -> Joke:
        """One joke; the requested subject is kept (a model may paraphrase it). ``index`` and
        ``key`` are for memoryless generators; a model varies by itself."""
        result = await self._call("TellJoke", lambda c, o: c.TellJoke(subject=subject, style=style, baml_options=o))
        if not result.text.strip():
            raise LLMError("parse", "the model returned an empty joke")
        return Joke(text=result.text.strip(), subject=subject, source=self.name)

    async def persona_reply(self, name: str, tone: str, transcript: list[TranscriptLine], last_speaker: str) -> Reply:
        """The persona's next line; an empty text counts as declining to speak."""
        lines = [
            btypes.TranscriptLine(author=line.author, text=line.text) for line in transcript[-MAX_TRANSCRIPT_LINES:]
        ]
        result = await self._call(
            "PersonaReply",
            lambda c, o: c.PersonaReply(
                name=name, tone=tone, transcript=lines, last_speaker=last_speaker, baml_options=o
            ),
        )
        text = result.text.strip()
        return Reply(text=text, should_speak=result.should_speak and bool(text), source=self.name)

    async def interpret_guidance(
        self, agent_type: str, text: str, operations: str, fields: Mapping[str, str]
    ) -> list[dict[str, Any]] | None:
        """Free text as operation dicts through ``InterpretGuidance``; the caller validates them.

        ``GuidanceOperation`` declares the built-in operations' fields; a plug-in type's other
        fields are added to it for this call (``@@dynamic``, a ``TypeBuilder``), so the model
        can fill them in too. Unset fields are dropped, so ``{"type": "speak_now"}`` comes back
        as such, and a field an operation does not have is refused by its model, not kept.
        """
        builder = _guidance_types(fields)
        result = await self._call(
            "InterpretGuidance",
            lambda c, o: c.InterpretGuidance(
                agent_type=agent_type,
                operations=operations,
                text=text,
                baml_options={**o, "tb": builder} if builder is not None else o,
            ),
        )
        return [op.model_dump(exclude_none=True) for op in result]

    async def aclose(self) -> None:
        # The BAML runtime is process-wide and owns its connection pool; nothing to release here.
        self._closed = True

    async def _call(self, function: str, invoke: Callable[[BamlAsyncClient, BamlCallOptions], Awaitable[T]]) -> T:
        if self._closed:
            raise LLMError("config", "the LLM client is closed")
        attempts = self._retries + 1
        for attempt in range(1, attempts + 1):
            async with self._sem:
                try:
                    return await self._attempt(function, invoke)
                except LLMError as err:
                    err.attempts = attempt
                    if attempt == attempts or not self._retryable(err):
                        logger.warning("llm %s failed after %d attempt(s): %s", function, attempt, err)
                        raise
                    delay = min(self._backoff_max, self._backoff * 2 ** (attempt - 1))
                    delay *= random.uniform(0.5, 1.0)
                    logger.info("llm %s attempt %d failed (%s); retry in %.2fs", function, attempt, err, delay)
            await asyncio.sleep(delay)  # outside the semaphore: a backing-off call holds no slot
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, function: str, invoke: Callable[[BamlAsyncClient, BamlCallOptions], Awaitable[T]]) -> T:
        abort = baml_py.AbortController()
        opts: BamlCallOptions = {"abort_controller": abort}
        collector = None
        if logger.isEnabledFor(logging.DEBUG):  # a collector to read the prompt and raw reply
            collector = baml_py.Collector("agentd")
            opts["collector"] = collector
        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(invoke(self._client, opts), self._timeout * 1.1 + 0.05)
        except TimeoutError:
            abort.abort()
            raise LLMError("timeout", f"{function}: no answer within {self._timeout:g}s") from None
        except asyncio.CancelledError:
            abort.abort()
            raise
        except BamlError as exc:
            raise self._map(function, exc) from None
        finally:
            if collector is not None:
                log_collected_call(collector, function, self._secrets)
        logger.info("llm %s ok in %.0f ms", function, (time.perf_counter() - start) * 1000)
        return result

    @staticmethod
    def _retryable(err: LLMError) -> bool:
        if err.reason == "timeout":
            return True
        return err.reason == "http" and (err.status is None or err.status >= 500 or err.status in _RETRYABLE_STATUS)

    def _clean(self, exc: BaseException, prefix: str = "") -> str:
        message = getattr(exc, "message", None) or str(exc)
        text = redact(_first_line(f"{prefix}{message}"), self._secrets)
        return text if len(text) <= _MAX_MESSAGE else f"{text[:_MAX_MESSAGE]}..."

    def _map(self, function: str, exc: BamlError) -> LLMError:
        """BAML's exception classes to ``LLMError`` reasons (the order matters: subclasses first)."""
        if isinstance(exc, BamlTimeoutError | BamlAbortError):
            return LLMError("timeout", f"{function}: {self._clean(exc)}")
        if isinstance(exc, BamlClientHttpError):
            status = int(exc.status_code)
            return LLMError("http", f"{function}: HTTP {status}: {self._clean(exc)}", status=status)
        if isinstance(exc, BamlValidationError | BamlClientFinishReasonError):
            raw = redact(str(getattr(exc, "raw_output", "")), self._secrets)[:200]
            return LLMError("parse", f"{function}: unparseable model output: {raw!r}")
        if isinstance(exc, BamlInvalidArgumentError) or "Failed to create clients" in str(exc):
            return LLMError("config", f"{function}: {self._clean(exc)}")
        return LLMError("other", f"{function}: {type(exc).__name__}: {self._clean(exc)}")
