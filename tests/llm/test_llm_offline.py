"""The offline generator: deterministic for a seed, varied across inputs, cheap, marked offline."""

from __future__ import annotations

import asyncio
import time

from agentd.config import LLMConfig
from agentd.llm.base import Joke, Reply, TranscriptLine
from agentd.llm.factory import make_llm
from agentd.llm.offline import OFFLINE_SOURCE, OfflineLLM

SUBJECTS = ["cats", "databases", "the moon", "tax returns", "jazz", "rust", "coffee", "trains"]
TONES = ["noir detective", "cheerful", "grumpy", "formal butler", "pirate", "sarcastic", "wistful"]


async def _jokes(llm: OfflineLLM, subjects: list[str], style: str | None = None) -> list[Joke]:
    return [await llm.tell_joke(s, style) for s in subjects]


async def _replies(llm: OfflineLLM, tones: list[str], transcript: list[TranscriptLine]) -> list[Reply]:
    return [await llm.persona_reply("Sam", t, transcript, "Ada") for t in tones]


def test_same_seed_same_outputs_different_seed_differs() -> None:
    calls = SUBJECTS * 3
    a = asyncio.run(_jokes(OfflineLLM(seed=7), calls, "pun"))
    b = asyncio.run(_jokes(OfflineLLM(seed=7), calls, "pun"))
    c = asyncio.run(_jokes(OfflineLLM(seed=8), calls, "pun"))
    assert [j.text for j in a] == [j.text for j in b]
    assert [j.text for j in a] != [j.text for j in c]
    assert OfflineLLM(seed=3).joke("cats", None, 5) == OfflineLLM(seed=3).joke("cats", None, 5)


def test_jokes_vary_and_mention_their_subject() -> None:
    jokes = asyncio.run(_jokes(OfflineLLM(), SUBJECTS))
    assert all(j.subject.lower() in j.text.lower() for j in jokes)
    assert all(j.source == OFFLINE_SOURCE for j in jokes)
    templates = {j.text.lower().replace(j.subject.lower(), "{}") for j in jokes}
    assert len(templates) >= 4  # not one template for every subject
    # Successive jokes on one subject differ too (a session does not repeat itself every tick).
    same = asyncio.run(_jokes(OfflineLLM(), ["cats"] * 6))
    assert len({j.text for j in same}) >= 3


def test_styles_change_the_joke() -> None:
    plain = OfflineLLM(seed=1).joke("cats", None, 0).text
    assert OfflineLLM(seed=1).joke("cats", "deadpan", 0).text != plain


def test_persona_replies_vary_by_tone_and_follow_the_conversation() -> None:
    transcript = [TranscriptLine(author="Ada", text="Who stole the lighthouse keeper's telescope?")]
    replies = asyncio.run(_replies(OfflineLLM(), TONES, transcript))
    assert len({r.text for r in replies}) == len(TONES)
    assert all(r.should_speak and r.source == OFFLINE_SOURCE for r in replies)
    assert any("lighthouse" in r.text for r in replies)  # its longest word
    again = asyncio.run(_replies(OfflineLLM(), TONES, transcript))
    assert [r.text for r in replies] == [r.text for r in again]
    opener = asyncio.run(OfflineLLM().persona_reply("Sam", "cheerful", [], "user"))
    assert opener.text and opener.should_speak


def test_offline_is_cheap_enough_for_20k_calls_per_second() -> None:
    llm = make_llm(LLMConfig())
    assert isinstance(llm, OfflineLLM)
    transcript = [TranscriptLine(author="u", text="hello there everyone")]

    async def burst() -> float:
        start = time.perf_counter()
        for i in range(10_000):
            await llm.tell_joke(SUBJECTS[i % 8])
            await llm.persona_reply("Sam", TONES[i % 7], transcript, "u")
        return time.perf_counter() - start

    elapsed = asyncio.run(burst())
    assert elapsed < 1.0, f"20k offline calls took {elapsed:.2f}s"


def test_a_session_does_not_repeat_a_joke_within_50() -> None:
    """Consecutive jokes of one session, as JokeAgent asks for them (its count and its id)."""
    from agentd.llm.offline import NO_REPEAT_WINDOW

    assert NO_REPEAT_WINDOW > 50
    llm = OfflineLLM(seed=3)

    async def session(key: str, subjects: list[str], start: int = 0) -> list[str]:
        return [
            (await llm.tell_joke(subjects[i % len(subjects)], index=start + i, key=key)).text.replace(
                subjects[i % len(subjects)], "{}"
            )
            for i in range(NO_REPEAT_WINDOW)
        ]

    for key in ("s-1", "s-2", "joker"):
        for start in (0, 17, 1000):
            templates = asyncio.run(session(key, ["cats"], start))
            assert len(set(templates)) == NO_REPEAT_WINDOW, (key, start)
    # A subject change in the middle does not restart the cycle.
    mixed = asyncio.run(session("s-3", ["cats", "the moon", "tax returns"]))
    assert len(set(mixed)) == NO_REPEAT_WINDOW
    # Sessions do not all tell the same sequence.
    assert asyncio.run(session("s-1", ["cats"]))[:5] != asyncio.run(session("s-2", ["cats"]))[:5]
    # The same session and count give the same joke in any process (the order is not stored).
    assert OfflineLLM(seed=3).joke("cats", None, 7, "s-1") == OfflineLLM(seed=3).joke("cats", None, 7, "s-1")


def test_jokes_fit_any_noun_grammatically() -> None:
    """The subject never starts a sentence, never follows an article, never agrees with a verb."""
    from agentd.llm.offline import _JOKES

    assert len(_JOKES) >= 60
    for template in _JOKES:
        assert template.count("{s}") >= 1, template
        assert not template.startswith("{s}") and ". {s}" not in template and "? {s}" not in template, template
        for article in ("a {s}", "an {s}", "A {s}", "An {s}", "the {s}", "The {s}"):
            assert article not in template, template
        after = [part.split()[0] for part in template.split("{s}")[1:] if part.split()]
        agreeing = {"is", "are", "was", "were", "has", "have", "does", "do", "walks", "walk", "says", "say"}
        assert not agreeing & {w.strip(".,;:!?'") for w in after}, template
    # A plural, a mass noun, a proper name: every joke reads with each.
    for subject in ("penguins", "tax law", "Python"):
        texts = [OfflineLLM().joke(subject, None, n, "k").text for n in range(len(_JOKES))]
        assert all(subject in t and not t.startswith(subject) for t in texts)
