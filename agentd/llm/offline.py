"""The offline built-in generator: the default ``[llm] provider``, so agentd runs with no API key.

Why it exists: a new user must see sessions tell jokes and personas talk before configuring any
model, and the runtime benchmark needs an "LLM" that costs microseconds (it is called ~20k
times per second per worker). So it is pure CPU: template picks driven by ``zlib.crc32`` (stable
across processes, unlike ``hash()`` which is salted per process), no sleeps, no I/O.

Determinism: the output is a pure function of ``(seed, inputs, n)`` where ``n`` counts this
instance's joke calls, so two instances with the same seed fed the same calls produce the same
texts, and a different seed gives a different sequence. Persona replies depend on the transcript
itself (no counter), so the same conversation state always gets the same reply.
Every result carries ``source="offline"`` so a step shows it was not written by a model.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

from agentd.llm.base import Joke, Reply, TranscriptLine

__all__ = ["OFFLINE_SOURCE", "OfflineLLM"]

OFFLINE_SOURCE = "offline"

_JOKES: tuple[str, ...] = (
    "Why did {s} bring a ladder to the meeting? It heard the stakes were high.",
    "I tried to explain {s} to my cat. Now the cat gives talks and I take notes.",
    "My therapist says I think about {s} too much. I said we should discuss that in more detail.",
    "{S} walks into a bar. The bartender says: we don't serve your kind. {S}: fine, I'm self-hosted.",
    "There are two kinds of people: those who understand {s}, and those still reading the docs.",
    "I asked an expert on {s} for a short answer. The appendix had an appendix.",
    "{S} is like a good joke: if you have to explain it, someone is writing a blog post about it.",
    "Rumour has it the first draft of {s} was written on a Friday afternoon. It shows.",
    "My New Year's resolution was less {s}. It's going great, apart from every day.",
    "I told a joke about {s} at a party. Three people corrected me, and one was the host.",
    "What do you call {s} with no deadline? Finished, eventually.",
    "I'd tell you a secret about {s}, but it's eventually consistent.",
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


@lru_cache(maxsize=4096)
def _joke_text(subject: str, style: str | None, template: int, tag: int) -> str:
    """Joke template ``template`` about ``subject``, with style tag ``tag`` when there is a style."""
    text = _JOKES[template].format(s=subject, S=subject[:1].upper() + subject[1:])
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

    def joke(self, subject: str, style: str | None, n: int) -> Joke:
        """The ``n``-th joke for this seed: a pure function, for callers that track ``n`` themselves."""
        # == _h(self.seed, subject, style or "", n), without re-hashing the constant part per call.
        h = zlib.crc32(str(n).encode(), _joke_prefix(self.seed, subject, style or ""))
        tag = (h >> 8) % len(_style_tags(style)) if style else 0
        return Joke(text=_joke_text(subject, style, h % len(_JOKES), tag), subject=subject, source=OFFLINE_SOURCE)

    async def tell_joke(self, subject: str, style: str | None = None) -> Joke:
        n = self._n
        self._n += 1
        return self.joke(subject, style, n)

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
