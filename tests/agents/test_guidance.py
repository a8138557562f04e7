"""Guidance operations of the built-in types: every form, the example tables, rejections that teach.

In-process against the real specs and agent classes (no daemon): the daemon-level proof is
tests/supervisor/test_guidance_e2e.py, which sends the same tables through ``agentd run``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentd.agents.base import AgentServices, GuidanceError, GuidanceNotUnderstood, Operations
from agentd.agents.operations import BUILTIN_GUIDANCE, JOKE_GUIDANCE, PERSONA_GUIDANCE
from agentd.agents.registry import agent_type
from agentd.llm.offline import OfflineLLM

EXAMPLES = [(name, text, list(ops)) for name, spec in BUILTIN_GUIDANCE.items() for text, ops in spec.examples]


def agent(type_name: str) -> Any:
    cls = agent_type(type_name)
    config = {"conversation_id": "c", "name": "Ada"} if type_name == "persona" else {}
    services = AgentServices(llm=OfflineLLM(), store=None, session_id="s", agent_id="a")
    return cls(cls.parse_config(config), services)


def ops(type_name: str, raw: Any) -> list[dict[str, Any]]:
    normalized = agent(type_name).normalize_guidance(raw)
    assert isinstance(normalized, Operations)
    dumped: list[dict[str, Any]] = normalized.model_dump(mode="json", exclude_defaults=True)
    return dumped


def rejection(type_name: str, raw: Any) -> str:
    with pytest.raises(GuidanceError) as info:
        agent(type_name).normalize_guidance(raw)
    return str(info.value)


@pytest.mark.parametrize(("type_name", "text", "expected"), EXAMPLES, ids=[f"{n}:{t}" for n, t, _ in EXAMPLES])
def test_every_example_sentence_reads_as_its_operations(type_name: str, text: str, expected: list[Any]) -> None:
    assert ops(type_name, text) == expected
    # Case- and punctuation-insensitive: shouting it, or wrapping it in punctuation, means the same.
    if type_name == "persona" or all(op["type"] == "set_style" for op in expected):
        assert ops(type_name, f"...{text.upper()}!!") == [
            {k: v.upper() if isinstance(v, str) and k != "type" else v for k, v in op.items()} for op in expected
        ]


def test_the_tables_cover_every_sentence_of_the_issue() -> None:
    joke = {text for text, _ in JOKE_GUIDANCE.examples}
    persona = {text for text, _ in PERSONA_GUIDANCE.examples}
    assert {"tell me about penguins", "can you switch to penguins?", "jokes on penguins please"} <= joke
    assert {"new subject: penguins", "about cats"} <= joke
    assert {"be more noir", "use a noir tone", "wait 2 seconds between replies", "cool down 0.5 s"} <= persona
    assert "say something now" in persona
    assert any(len(o) >= 3 for t, o in PERSONA_GUIDANCE.examples if "," in t and " and " in t), "joined forms"


@pytest.mark.parametrize(
    ("type_name", "raw", "expected"),
    [
        # The specification's forms, exactly as written.
        ("persona", {"type": "set_tone", "tone": "noir"}, [{"type": "set_tone", "tone": "noir"}]),
        ("persona", {"type": "set_cooldown", "seconds": 0.5}, [{"type": "set_cooldown", "seconds": 0.5}]),
        ("persona", {"type": "speak_now"}, [{"type": "speak_now"}]),
        ("joke", {"type": "set_subject", "subject": "cats"}, [{"type": "set_subject", "subject": "cats"}]),
        ("joke", {"type": "set_style", "style": "pun"}, [{"type": "set_style", "style": "pun"}]),
        ("joke", {"subject": "cats"}, [{"type": "set_subject", "subject": "cats"}]),
        # Older forms that scripts use.
        ("persona", {"set_tone": "grumpy"}, [{"type": "set_tone", "tone": "grumpy"}]),
        (
            "persona",
            {"tone": "dry", "cooldown": 2},
            [{"type": "set_tone", "tone": "dry"}, {"type": "set_cooldown", "seconds": 2.0}],
        ),
        (
            "persona",
            {"set_cooldown": 0, "speak_now": True},
            [{"type": "set_cooldown", "seconds": 0.0}, {"type": "speak_now"}],
        ),
        (
            "persona",
            "be noir, cooldown 0.5",
            [{"type": "set_tone", "tone": "noir"}, {"type": "set_cooldown", "seconds": 0.5}],
        ),
        ("persona", "be topic-3 and speak now", [{"type": "set_tone", "tone": "topic-3"}, {"type": "speak_now"}]),
        ("persona", "set tone to wistful", [{"type": "set_tone", "tone": "wistful"}]),
        ("joke", "change the subject to owls", [{"type": "set_subject", "subject": "owls"}]),
        # An array is one guidance, in order.
        (
            "persona",
            [{"type": "set_tone", "tone": "noir"}, {"type": "set_cooldown", "seconds": 1}, {"type": "speak_now"}],
            [{"type": "set_tone", "tone": "noir"}, {"type": "set_cooldown", "seconds": 1.0}, {"type": "speak_now"}],
        ),
        ("joke", [{"type": "set_subject", "subject": "  moths "}], [{"type": "set_subject", "subject": "moths"}]),
    ],
)
def test_structured_forms(type_name: str, raw: Any, expected: list[Any]) -> None:
    assert ops(type_name, raw) == expected


def test_applying_an_array_changes_the_context_together() -> None:
    persona = agent("persona")
    normalized = persona.normalize_guidance("use a noir tone, wait 2 seconds between replies and say something now")
    effect = persona.apply_guidance(normalized, persona.initial_context())
    assert effect.delta == {"tone": "noir", "cooldown": 2.0, "speak_now": True} and effect.wake
    joke = agent("joke")
    effect = joke.apply_guidance(joke.normalize_guidance("about trains, in a dad style"), joke.initial_context())
    assert effect.delta == {"subject": "trains", "style": "dad"} and not effect.wake


@pytest.mark.parametrize(
    ("type_name", "raw", "names"),
    [
        ("persona", {"type": "dance"}, "type: unknown operation 'dance'"),
        ("persona", {"tone": "noir", "type": "set_tone", "extra": 1}, "set_tone: extra: unknown field"),
        (
            "persona",
            {"type": "set_cooldown", "seconds": "fast"},
            "set_cooldown: seconds: Input should be a valid number",
        ),
        ("persona", {"type": "set_cooldown", "seconds": True}, "seconds: Input should be a valid number"),
        ("persona", {"type": "set_tone", "tone": 42}, "set_tone: tone: Input should be a valid string"),
        ("persona", {"type": "set_cooldown", "seconds": -1}, "seconds: Input should be greater than or equal to 0"),
        ("persona", {"type": "set_cooldown", "seconds": float("nan")}, "seconds: Input should be a finite number"),
        ("persona", {"set_cooldown": -3}, "set_cooldown: Input should be greater than or equal to 0"),
        ("persona", {"speak_now": "yes"}, "speak_now: Input should be a valid boolean"),
        ("persona", {"speak_now": False}, "no operation given"),
        (
            "joke",
            {"type": "set_subject", "subject": ""},
            "set_subject: subject: String should have at least 1 character",
        ),
        ("joke", {"subject": "   "}, "subject: String should have at least 1 character"),
        (
            "joke",
            {"type": "set_subject", "subject": "x" * 100_000},
            "subject: String should have at most 200 characters",
        ),
        ("persona", {"type": "set_tone", "tone": "x" * 100_000}, "tone: String should have at most 80 characters"),
        ("joke", "about " + "x" * 100_000, "text: too long"),
        ("joke", {"colour": "red"}, "colour: unknown field"),
        ("joke", {"type": "set_tone", "tone": "noir"}, "unknown operation 'set_tone'"),
        (
            "persona",
            [{"type": "set_tone", "tone": "noir"}, {"type": "set_cooldown", "seconds": -1}],
            "operation 2 (set_cooldown): seconds: Input should be greater than or equal to 0",
        ),
        ("persona", [{"type": "speak_now"}, {"tone": "noir"}], "operation 2: missing 'type'"),
        ("persona", [{"type": "speak_now"}, "be noir"], "operation 2: expected an object, got str"),
        ("persona", [], "the array is empty"),
        ("persona", [{"type": "speak_now"}] * 33, "too many operations"),
        ("joke", 42, "expected an object, an array of operations or text, got int"),
    ],
)
def test_invalid_guidance_is_rejected_naming_the_field_and_teaching(type_name: str, raw: Any, names: str) -> None:
    message = rejection(type_name, raw)
    assert message.startswith(f"invalid {type_name} guidance: ")
    assert names in message
    spec = BUILTIN_GUIDANCE[type_name]
    for op in spec.operations:  # every accepted operation, with its example
        assert json.dumps(op.example) in message
    assert len(message) < 2000, "a 100 KB input is never echoed back"


def test_text_no_rule_reads_is_not_understood_and_teaches() -> None:
    for type_name, text in (("joke", "make it better"), ("persona", "dance"), ("persona", "speak now, dance")):
        with pytest.raises(GuidanceNotUnderstood) as info:
            agent(type_name).normalize_guidance(text)
        message = str(info.value)
        assert "cannot understand" in message and f"for a {type_name} session" in message
        assert info.value.text == text
        assert all(json.dumps(op.example) in message for op in BUILTIN_GUIDANCE[type_name].operations)
    assert "cannot understand 'dance' in guidance 'speak now, dance'" in rejection("persona", "speak now, dance")


def test_the_normalized_form_round_trips_as_typed_operations() -> None:
    persona = agent("persona")
    first = persona.normalize_guidance("be more noir and cool down 0.5 s")
    stored = json.loads(json.dumps(first.model_dump(mode="json", exclude_defaults=True)))
    assert persona.normalize_guidance(stored).model_dump() == first.model_dump()
