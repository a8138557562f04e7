"""The offline built-in generator: the default ``[llm] provider``, so agentd runs with no API key.

Why it exists: a new user must see sessions tell jokes and personas talk before configuring any
model, and the runtime benchmark needs an "LLM" that costs microseconds (it is called ~20k
times per second per worker). So it is pure CPU: template picks driven by ``zlib.crc32`` (stable
across processes, unlike ``hash()`` which is salted per process), no sleeps, no I/O.

Determinism: the output is a pure function of ``(seed, inputs, key, n)``. ``key`` and ``n`` are
the session id and its joke count (``JokeAgent`` passes its context's ``jokes``), or ``""`` and
this instance's call count when the caller gives none, so two instances with the same seed fed
the same calls produce the same texts, and a different seed gives a different sequence.

No repeats: a session's n-th joke uses template ``(b + a * n) mod N``, where ``a`` (coprime to
``N``) and ``b`` come from ``(seed, key)``. That walks all ``N`` templates before any comes back,
so a session never repeats a template within ``N`` (more than 50) jokes, whatever its subject,
and the only state it needs is the joke count its context already holds. Persona replies depend on the transcript
itself (no counter), so the same conversation state always gets the same reply.
Every result carries ``source="offline"`` so a step shows it was not written by a model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from agentd.llm.base import Joke, Reply, TranscriptLine

__all__ = ["NO_REPEAT_WINDOW", "OFFLINE_SOURCE", "OfflineLLM"]

OFFLINE_SOURCE = "offline"

# The joke templates. ``{s}`` is the subject exactly as given, whatever it is ("cats", "the
# moon", "tax law", "Python"), so every template puts it where any noun phrase fits: after a
# preposition or a verb, never first in a sentence (no capital to fix), never after an article,
# never before a verb that would have to agree with it, never referred to by a pronoun.
_JOKES: tuple[str, ...] = (
    "I tried to explain {s} to my cat. Now the cat gives talks and I take notes.",
    "My therapist says I think about {s} too much. I said we should discuss that in more detail.",
    "There are two kinds of people: those who understand {s}, and those still reading the manual.",
    "I asked an expert on {s} for a short answer. The appendix had an appendix.",
    "My New Year's resolution was to think less about {s}. It's going great, apart from every day.",
    "I told a joke about {s} at a party. Three people corrected me, and one of them was the host.",
    "I'd tell you a secret about {s}, but it's eventually consistent.",
    "I wrote a song about {s}. The neighbours wrote a petition.",
    "I gave a talk on {s}. The questions lasted longer than the talk, and so did the applause for the exit.",
    "Why did the philosopher give up on {s}? Too many questions, not enough snacks.",
    "I put {s} on my CV. The interviewer asked for references. My cat declined to comment.",
    "I bought a book about {s}. It was so gripping I couldn't put it down. It was also glued to my hand.",
    "I started a podcast about {s}. My mum listens. Twice, to be supportive.",
    "The fastest way to end a dinner party: say 'speaking of {s}...' and wait.",
    "I asked the library for everything on {s}. They handed me a ladder.",
    "My doctor told me to cut down on {s}. I got a second opinion. It was also mine.",
    "I dreamt about {s} last night. Woke up with homework.",
    "An optimist, a pessimist and a realist walk into a seminar on {s}. The realist brought snacks.",
    "I tried meditating on {s}. I reached enlightenment, then a notification.",
    "I signed up for a course on {s}. The first lesson was how to find the classroom.",
    "My cat sat on my keyboard and wrote a better essay on {s} than I did.",
    "Never argue about {s} with a toddler. They have more energy and fewer facts slowing them down.",
    "They said I could be anything, so I became an expert on {s}. My parents are still processing.",
    "The Wi-Fi went down, so I had to talk to my family about {s}. They seem nice.",
    "I made a pie chart about {s}. It was mostly pie.",
    "Scientists have finally explained {s}. Nobody understood the explanation, which proves it's science.",
    "I wanted to write a haiku about {s}, but I ran out of syl-",
    "My horoscope promised news about {s} today. It also said to avoid ladders, so I stayed upstairs.",
    "I told my houseplant all about {s}. Best listener I know, and it only needs water.",
    "A group chat about {s}: twelve people, four opinions, one meme, and nobody read the article.",
    "I looked up {s} once. Four hours later I knew the entire history of the spoon.",
    "My dog has a lot to say about {s}. Mostly 'woof', but with conviction.",
    "Somebody once wrote a 400-page manual on {s}. Page two is still unread.",
    "I asked a magic 8-ball about {s}. It said 'ask again later'. I've been waiting since Tuesday.",
    "My uncle claims he invented {s}. He also claims he invented Tuesday.",
    "I joined a support group for people obsessed with {s}. We meet every day. Sometimes twice.",
    "The museum opened an exhibit on {s}. The gift shop is bigger than the exhibit.",
    "Every conversation about {s} ends with someone saying 'well, it's complicated'. It's complicated.",
    "I made a list of things to learn about {s}. The list is now a binder.",
    "I fell asleep reading about {s}. Best night's sleep in years. Five stars.",
    "My kid asked me to explain {s}. I said 'ask your other parent'. Turns out I'm the other parent.",
    "They say thinking about {s} burns calories. I'm in the best shape of my life.",
    "I ordered a documentary about {s}. It arrived in three parts and a sequel.",
    "The trouble with jokes about {s}: the good ones are taken, and the bad ones are mine.",
    "Teachers say there are no silly questions about {s}. They haven't met my questions.",
    "A parrot learned everything I know about {s}. Now it won't stop talking and I have nothing to say.",
    "I tried to explain {s} using only emoji. The result now hangs in a modern art gallery.",
    "I wrote the definitive guide to {s}. Chapter one: where did I put my glasses?",
    "A friend asked if I knew anything about {s}. I said 'a little'. Three hours later, so did she.",
    "Forecast for any talk about {s}: scattered opinions, with a chance of heated debate.",
    "I set an alarm to stop thinking about {s}. I snoozed it.",
    "Breaking news: local person has an opinion on {s}. More at eleven.",
    "I drew a map of everything I know about {s}. It fits on a stamp.",
    "There's a conference on {s} next week. The coffee break is the keynote.",
    "I told the barista my order and a fun fact about {s}. She wrote 'Trouble' on my cup.",
    "They asked me to keep my talk on {s} under five minutes. I'm still on the introduction.",
    "I took a personality test. Result: 'thinks about {s} too much'. Accurate, and a little rude.",
    "Some people collect stamps. I collect bad puns about {s}. This is one of them.",
    "What do experts on {s} and weather forecasters have in common? Confidence.",
    "I asked my grandfather what life was like before {s}. He said 'quieter'.",
    "My smart fridge overheard me talking about {s}. Now it won't make ice until we finish the conversation.",
    "I tried speed-reading a book on {s}. I can now confirm it had words in it.",
    "If you want to clear a room fast, offer a slideshow on {s}. Bring your own snacks.",
    "My password is a fact about {s}. Nobody has guessed it, because nobody listens when I talk about {s}.",
    "A genie offered me three wishes. I spent two of them on trivia about {s} and regret nothing.",
    "I was going to write a novel about {s}, but the footnotes took over.",
    "My mirror asked what I'd been thinking about. I said {s}. It stopped asking.",
)

_STYLE_TAGS: dict[str, tuple[str, ...]] = {
    "pun": ("Pun intended.", "I'll see myself out."),
    "deadpan": ("That's it. That's the joke.", "No, really."),
    "dad": ("Ask your dad, he'll explain it twice.", "Get it? Get it?"),
    "dark": ("Nobody laughed. Nobody ever does.", "We don't talk about the sequel."),
    "silly": ("Honk.", "Boing!"),
}

_BANKS: dict[str, tuple[str, ...]] = {
    "noir": (
        "{l} said '{w}' like it cost them something. In this town, everything does.",
        "The rain kept talking about {w}. I kept listening, {l}. It's what I do.",
        "{w}. I'd heard that word before, {l}, usually right before the trouble started.",
    ),
    "cheerful": (
        "Oh, {w}! I love that, {l}! Tell me more!",
        "What a great point about {w}, {l}. This is the best chat all day!",
        "{w} sounds wonderful, {l}. Let's keep this going!",
    ),
    "grumpy": (
        "{w}? Again, {l}? Fine. I'll allow it.",
        "Nobody asked about {w}, {l}, but here we are.",
        "In my day we didn't have {w}, {l}. We had complaints, and we liked them.",
    ),
    "formal": (
        "Thank you, {l}. Regarding {w}, I would add one further observation.",
        "With respect, {l}, the matter of {w} merits careful consideration.",
        "Noted, {l}. On the subject of {w}, I concur in principle.",
    ),
    "pirate": (
        "Arr, {l}, {w} be worth more than gold on these seas!",
        "Shiver me timbers, {l}, ye said {w}? Hoist the sails!",
        "{w}, says {l}! That be the talk of the whole crew, arr.",
    ),
    "sarcastic": (
        "Oh sure, {l}, {w}. What could possibly go wrong.",
        "Wow, {w}. Groundbreaking, {l}. Truly.",
        "Yes, {l}, because {w} has always worked out so well.",
    ),
}

_GENERIC: tuple[str, ...] = (
    "Speaking as someone {t}: {w} is worth thinking about, {l}.",
    "{l}, in my {t} way, I'd say {w} deserves a second look.",
    "Hm, {w}. Being {t}, I have opinions, {l}.",
)

_OPENERS: tuple[str, ...] = (
    "Hello all, {t} as ever. What's on our minds?",
    "Right then. Someone say something {t}.",
)

_TONE_ALIASES: dict[str, str] = {
    "detective": "noir",
    "hard-boiled": "noir",
    "happy": "cheerful",
    "upbeat": "cheerful",
    "enthusiastic": "cheerful",
    "grumpy": "grumpy",
    "cranky": "grumpy",
    "polite": "formal",
    "butler": "formal",
    "ironic": "sarcastic",
    "snarky": "sarcastic",
}


def _h(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=4096)
def _joke_prefix(seed: int, subject: str, style: str) -> int:
    """CRC of ``seed, subject, style`` and the separator before ``n``: ``_h(seed, subject, style, n)``
    is ``crc32(str(n), _joke_prefix(...))`` (CRC-32 chains), so a tick hashes only the counter."""
    return zlib.crc32(f"{seed}\x1f{subject}\x1f{style}\x1f".encode("utf-8", "surrogatepass"))


# The templates' order is a full cycle: a session sees every template once before any repeats.
NO_REPEAT_WINDOW = len(_JOKES)
_STEPS = tuple(a for a in range(1, len(_JOKES)) if math.gcd(a, len(_JOKES)) == 1)


@lru_cache(maxsize=16384)
def _cycle(seed: int, key: str) -> tuple[int, int]:
    """``(a, b)`` of a session's template order ``(b + a * n) mod N`` (see the module docstring)."""
    h = _h(seed, key, "cycle")
    return _STEPS[h % len(_STEPS)], (h >> 12) % len(_JOKES)


@lru_cache(maxsize=4096)
def _joke_text(subject: str, style: str | None, template: int, tag: int) -> str:
    """Joke template ``template`` about ``subject``, with style tag ``tag`` when there is a style."""
    text = _JOKES[template].format(s=subject)
    if style:
        text = f"{text} {_style_tags(style)[tag]}"
    return text


@lru_cache(maxsize=1024)
def _bank(tone: str) -> tuple[str, ...] | None:
    """Phrase bank for a tone, by keyword; cached because tones repeat across ticks."""
    low = tone.lower()
    for key in _BANKS:
        if key in low:
            return _BANKS[key]
    for alias, key in _TONE_ALIASES.items():
        if alias in low:
            return _BANKS[key]
    return None


@lru_cache(maxsize=1024)
def _style_tags(style: str) -> tuple[str, ...]:
    low = style.lower()
    for key, tags in _STYLE_TAGS.items():
        if key in low:
            return tags
    return (f"(Delivered {style}.)",)


def _topic(text: str) -> str:
    """The longest word of the last message: cheap, and makes replies follow the conversation."""
    best = ""
    for raw in text.split()[:64]:
        word = raw.strip(".,;:!?\"'()[]{}")
        if len(word) > len(best):
            best = word
    return best or "that"


class OfflineLLM:
    """Implements ``LLMClient`` with no network; see the module docstring for determinism."""

    def __init__(self, seed: int = 0) -> None:
        self.name = OFFLINE_SOURCE
        self.seed = seed
        self._n = 0

    def joke(self, subject: str, style: str | None, n: int, key: str = "") -> Joke:
        """The ``n``-th joke of session ``key`` for this seed: a pure function of its arguments."""
        a, b = _cycle(self.seed, key)
        template = (b + a * n) % len(_JOKES)
        tag = 0
        if style:
            # == _h(self.seed, subject, style, n), without re-hashing the constant part per call.
            h = zlib.crc32(str(n).encode(), _joke_prefix(self.seed, subject, style))
            tag = (h >> 8) % len(_style_tags(style))
        return Joke(text=_joke_text(subject, style, template, tag), subject=subject, source=OFFLINE_SOURCE)

    async def tell_joke(
        self, subject: str, style: str | None = None, *, index: int | None = None, key: str = ""
    ) -> Joke:
        """A joke; ``index``/``key`` are the session's joke count and id (this instance's count if None)."""
        if index is None:
            index = self._n
            self._n += 1
        return self.joke(subject, style, index, key)

    async def interpret_guidance(
        self, agent_type: str, text: str, operations: str, fields: Mapping[str, str]
    ) -> list[dict[str, Any]] | None:
        """None: the offline generator reads no free text (the phrase parser's error stands)."""
        return None

    async def persona_reply(self, name: str, tone: str, transcript: list[TranscriptLine], last_speaker: str) -> Reply:
        if not transcript:
            opener = _OPENERS[_h(self.seed, name, tone) % len(_OPENERS)]
            return Reply(text=opener.format(t=tone or "calm"), should_speak=True, source=OFFLINE_SOURCE)
        last = transcript[-1]
        h = _h(self.seed, name, tone, len(transcript), last.author, last.text)
        bank = _bank(tone) or _GENERIC
        text = bank[h % len(bank)].format(w=_topic(last.text), l=last_speaker, t=tone or "calm")
        text = text[:1].upper() + text[1:]
        return Reply(text=text, should_speak=True, source=OFFLINE_SOURCE)

    async def aclose(self) -> None:
        return None
