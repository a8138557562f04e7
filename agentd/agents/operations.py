"""The guidance operations of the built-in agent types, their phrase rules and example tables.

Why here and not in joke.py/persona.py: ``agentctl interrupt --help`` lists these without
loading the runtime (persona.py imports the store, hence pyarrow), so this module imports only
pydantic and agentd.agents.guidance/phrases. The agent classes declare them as
``guidance_spec = JOKE_GUIDANCE`` / ``PERSONA_GUIDANCE``, and their creation configs use the
same field types, so a subject or tone is limited the same way wherever it comes from.

The example tables are the contract of the free-text parser: ``tests/agents`` runs every row,
the end-to-end test sends every row through the daemon, and the README shows them (a test
checks the README table equals ``agentd.agents.catalog.examples_markdown()``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from agentd.agents.guidance import GuidanceSpec, Operation
from agentd.agents.phrases import Phrase

__all__ = [
    "BUILTIN_GUIDANCE",
    "JOKE_GUIDANCE",
    "PERSONA_GUIDANCE",
    "Cooldown",
    "SetCooldown",
    "SetStyle",
    "SetSubject",
    "SetTone",
    "SpeakNow",
    "Style",
    "Subject",
    "Tone",
]

# Trimmed, non-empty, bounded text: an empty subject or a 100 KB tone is refused by name.
Subject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, strict=True)]
Style = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50, strict=True)]
Tone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80, strict=True)]
# Seconds between a persona's replies: a finite number from 0 to one day (strict: no "5", no true).
Cooldown = Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False, strict=True)]


# -- joke ------------------------------------------------------------------------------------


class SetSubject(Operation):
    """Tell jokes about this subject from now on."""

    type: Literal["set_subject"]
    subject: Subject
    example: ClassVar[dict[str, Any]] = {"type": "set_subject", "subject": "penguins"}


class SetStyle(Operation):
    """Tell the jokes in this style (pun, deadpan, dad, dark, silly, ...)."""

    type: Literal["set_style"]
    style: Style
    example: ClassVar[dict[str, Any]] = {"type": "set_style", "style": "deadpan"}


_JOKE_PHRASES = (
    Phrase("(in|with|use|try) [a|an|the] {style} (style|humor|humour)", "set_style"),
    Phrase("style [is|to|of] {style}", "set_style"),
    Phrase("[new] (subject|topic) [is|to|of] {subject}", "set_subject"),
    Phrase("(switch|change|move|go) [over|it] to {subject}", "set_subject"),
    Phrase("(joke|jokes) (on|regarding|concerning|around) {subject}", "set_subject"),
    Phrase("about {subject}", "set_subject"),
)


def _subject(value: str) -> tuple[dict[str, Any], ...]:
    return ({"type": "set_subject", "subject": value},)


_JOKE_EXAMPLES: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = (
    ("tell me about penguins", _subject("penguins")),
    ("can you switch to penguins?", _subject("penguins")),
    ("jokes on penguins please", _subject("penguins")),
    ("new subject: penguins", _subject("penguins")),
    ("about cats", _subject("cats")),
    ("subject: cats", _subject("cats")),
    ("tell jokes about cats", _subject("cats")),
    ("Change the subject to The Moon.", _subject("The Moon")),
    ("tell me a joke about cats and dogs", _subject("cats and dogs")),
    ("in a deadpan style", ({"type": "set_style", "style": "deadpan"},)),
    (
        "about trains, in a dad style",
        ({"type": "set_subject", "subject": "trains"}, {"type": "set_style", "style": "dad"}),
    ),
)

JOKE_GUIDANCE = GuidanceSpec(
    operations=(SetSubject, SetStyle),
    phrases=_JOKE_PHRASES,
    examples=_JOKE_EXAMPLES,
    legacy={"subject": ("set_subject", "subject"), "style": ("set_style", "style")},
)


# -- persona ---------------------------------------------------------------------------------


class SetTone(Operation):
    """Reply in this tone from now on (noir, cheerful, grumpy, formal, pirate, ...)."""

    type: Literal["set_tone"]
    tone: Tone
    example: ClassVar[dict[str, Any]] = {"type": "set_tone", "tone": "noir"}


class SetCooldown(Operation):
    """Wait at least this many seconds between two replies (0 to 86400)."""

    type: Literal["set_cooldown"]
    seconds: Cooldown
    example: ClassVar[dict[str, Any]] = {"type": "set_cooldown", "seconds": 0.5}


class SpeakNow(Operation):
    """Reply at once, once, whatever the activation rule and the cooldown say."""

    type: Literal["speak_now"]
    example: ClassVar[dict[str, Any]] = {"type": "speak_now"}


_PERSONA_PHRASES = (
    Phrase("(wait|pause|leave) [for|at least] {seconds:duration}", "set_cooldown"),
    Phrase("(cool down|cooldown) [to|of|is|at|for] {seconds:duration}", "set_cooldown"),
    Phrase("(speak|talk|sound|reply|write) like [a|an] {tone}", "set_tone"),
    Phrase("(use|take|adopt|try) [a|an|the] {tone} tone", "set_tone"),
    Phrase("(in|with) [a|an|the] {tone} tone", "set_tone"),
    Phrase("tone [is|to|of] {tone}", "set_tone"),
    Phrase("say something", "speak_now"),
    Phrase("(speak|talk|reply|respond|answer|chime in) [up|now]", "speak_now"),
    Phrase(
        "(be|sound|act|feel) [more|less|very|much|really|a bit|a little|a lot|kind of|somewhat] [of] [a|an|the] {tone}",
        "set_tone",
    ),
    Phrase("(go|get) (more|less) {tone}", "set_tone"),
)


def _tone(value: str) -> dict[str, Any]:
    return {"type": "set_tone", "tone": value}


def _cooldown(seconds: float) -> dict[str, Any]:
    return {"type": "set_cooldown", "seconds": seconds}


_SPEAK: dict[str, Any] = {"type": "speak_now"}

_PERSONA_EXAMPLES: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = (
    ("be more noir", (_tone("noir"),)),
    ("use a noir tone", (_tone("noir"),)),
    ("wait 2 seconds between replies", (_cooldown(2.0),)),
    ("cool down 0.5 s", (_cooldown(0.5),)),
    ("say something now", (_SPEAK,)),
    ("be noir", (_tone("noir"),)),
    ("tone: grumpy", (_tone("grumpy"),)),
    ("cooldown 0.5", (_cooldown(0.5),)),
    ("speak now", (_SPEAK,)),
    ("Could you speak like a pirate, please?", (_tone("pirate"),)),
    ("wait 500 ms before replying", (_cooldown(0.5),)),
    ("be more noir, cool down 0.5 s and say something now", (_tone("noir"), _cooldown(0.5), _SPEAK)),
    ("Use a cheerful tone and wait 2 seconds between replies.", (_tone("cheerful"), _cooldown(2.0))),
)

PERSONA_GUIDANCE = GuidanceSpec(
    operations=(SetTone, SetCooldown, SpeakNow),
    phrases=_PERSONA_PHRASES,
    examples=_PERSONA_EXAMPLES,
    legacy={
        "set_tone": ("set_tone", "tone"),
        "tone": ("set_tone", "tone"),
        "set_cooldown": ("set_cooldown", "seconds"),
        "cooldown": ("set_cooldown", "seconds"),
        "speak_now": ("speak_now", None),
    },
)

# The built-in types' guidance by type name (agentd.agents.catalog lists them without importing
# the agent classes).
BUILTIN_GUIDANCE: dict[str, GuidanceSpec] = {"joke": JOKE_GUIDANCE, "persona": PERSONA_GUIDANCE}
