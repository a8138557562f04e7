"""The LLM interface the agents call. Implementations: the offline generator and BAML.

Agents depend on this protocol only, so the provider is a run-time choice (``[llm] provider``)
and a test can use a real BAML runtime against a loopback server without touching agent code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from agentd.config import ConfigError

__all__ = ["Joke", "LLMClient", "LLMConfigError", "LLMError", "Reply", "TranscriptLine"]


class LLMError(Exception):
    """An LLM call failed; ``reason`` is one of timeout | http | parse | config | other.

    ``status`` is the HTTP status for ``http`` (BAML reports a refused connection as 503) and
    ``attempts`` how many tries were made, so an error step can say "HTTP 500 after 3 attempts"
    without parsing the message.
    """

    def __init__(self, reason: str, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields would be lost by the default Exception pickling (worker -> parent).
        return (_rebuild_llm_error, (self.reason, self.message, self.status, self.attempts))


class LLMConfigError(LLMError, ConfigError):
    """Unusable ``[llm]`` settings found when the client is built (reason ``config``).

    Also a ``ConfigError`` so that a worker's boot-time ``except ConfigError`` reports a missing
    API-key variable or an unknown provider like any other config mistake, before any session runs.
    """

    def __init__(self, message: str) -> None:
        super().__init__("config", message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (LLMConfigError, (self.message,))


def _rebuild_llm_error(reason: str, message: str, status: int | None, attempts: int) -> LLMError:
    return LLMError(reason, message, status=status, attempts=attempts)


class Joke(BaseModel):
    text: str
    subject: str
    # Which generator produced it ("offline" marks the built-in generator in every step).
    source: str = "offline"


class Reply(BaseModel):
    text: str
    should_speak: bool = True
    source: str = "offline"


class TranscriptLine(BaseModel):
    author: str
    text: str


class LLMClient(Protocol):
    """Async LLM calls. Implementations enforce their own timeout and concurrency limit."""

    name: str

    async def tell_joke(
        self, subject: str, style: str | None = None, *, index: int | None = None, key: str = ""
    ) -> Joke:
        """One joke. ``index`` is the session's joke count and ``key`` its id: a generator with no
        memory of its own (the offline one) uses them to avoid repeating itself within a session;
        a model ignores them."""
        ...

    async def persona_reply(
        self, name: str, tone: str, transcript: list[TranscriptLine], last_speaker: str
    ) -> Reply: ...

    async def interpret_guidance(
        self, agent_type: str, text: str, operations: str, fields: Mapping[str, str]
    ) -> list[dict[str, Any]] | None:
        """Free-text guidance as operation dicts (validated by the caller), or None when this
        client cannot interpret text (the offline generator). ``operations`` lists the accepted
        operations with an example each; ``fields`` maps every operation field to its JSON kind
        (string, integer, number, boolean). Raises ``LLMError`` when the call fails."""
        ...

    async def aclose(self) -> None: ...
