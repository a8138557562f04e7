"""The LLM interface the agents call. Implementations: the offline generator and BAML.

Agents depend on this protocol only, so the provider is a run-time choice (``[llm] provider``)
and a test can use a real BAML runtime against a loopback server without touching agent code.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

__all__ = ["Joke", "LLMClient", "LLMError", "Reply", "TranscriptLine"]


class LLMError(Exception):
    """An LLM call failed; ``reason`` is one of timeout | http | parse | config | other."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


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

    async def tell_joke(self, subject: str, style: str | None = None) -> Joke: ...

    async def persona_reply(
        self, name: str, tone: str, transcript: list[TranscriptLine], last_speaker: str
    ) -> Reply: ...

    async def aclose(self) -> None: ...
