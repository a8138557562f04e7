"""agentctl's pydantic-free codec agrees with the pydantic models it is generated from.

``agentd.protocol_client`` checks messages against ``protocol_schema.json``; the daemon checks
them with ``agentd.protocol``'s models. These tests keep the two from drifting: the schema file
must be what the models generate, and on random messages (valid ones and mutated ones) the
codec must accept exactly what pydantic's strict JSON validation accepts, with the same fields
(defaults filled in).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from agentd import protocol_client
from agentd.protocol import ControlReply, ControlRequest, parse_request
from agentd.protocol_schema import CLIENT_REPLIES, CLIENT_REQUESTS, main, render

SCHEMA = json.loads(render())
REPLIES: TypeAdapter[Any] = TypeAdapter(ControlReply)
REQUESTS: TypeAdapter[Any] = TypeAdapter(ControlRequest)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def test_the_schema_file_is_what_the_models_generate() -> None:
    assert main(["--check"]) == 0, "run python -m agentd.protocol_schema"
    assert (SCHEMA["version"], SCHEMA["max_line"]) == (protocol_client.PROTOCOL_VERSION, protocol_client.MAX_LINE)
    assert sorted(SCHEMA["replies"]) == sorted(m.model_fields["type"].default for m in CLIENT_REPLIES)
    assert sorted(SCHEMA["requests"]) == sorted(m.model_fields["op"].default for m in CLIENT_REQUESTS)


def _valid(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema accepts (optional fields sometimes left out)."""
    if "$ref" in schema:
        return _valid(defs[schema["$ref"].removeprefix("#/$defs/")], defs)
    if "anyOf" in schema:
        return st.one_of([_valid(option, defs) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", ()))
        fields = {name: _valid(field, defs) for name, field in schema["properties"].items()}
        return st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    if kind == "object":
        return st.dictionaries(st.text(max_size=4), JSON, max_size=3)
    if kind == "array":
        low, high = schema.get("minItems", 0), min(schema.get("maxItems", 3), 3)
        return st.lists(_valid(schema.get("items", {}), defs), min_size=low, max_size=max(low, high))
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=8)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.floats(min_value=schema.get("minimum"), max_value=schema.get("maximum"), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON


@st.composite
def _message(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A valid message of a random type, then maybe mutated: a field dropped, added or retyped."""
    schema = SCHEMA[kind][draw(st.sampled_from(sorted(SCHEMA[kind])))]
    data: dict[str, Any] = draw(_valid(schema, schema.get("$defs", {})))
    if kind == "requests":
        data.setdefault("op", schema["properties"]["op"]["const"])
    else:
        data.setdefault("type", schema["properties"]["type"]["const"])
    mutation = draw(st.sampled_from(["none", "none", "drop", "add", "retype"]))
    if mutation == "drop" and data:
        data.pop(draw(st.sampled_from(sorted(data))))
    elif mutation == "add":
        data[draw(st.text(max_size=5))] = draw(JSON)
    elif mutation == "retype" and data:
        data[draw(st.sampled_from(sorted(data)))] = draw(JSON)
    return data


def _pydantic(adapter: TypeAdapter[Any], line: str) -> dict[str, Any] | None:
    try:
        return dict(adapter.validate_json(line, strict=True).model_dump(mode="json"))
    except ValidationError:
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message("replies"))
def test_replies_are_accepted_exactly_when_pydantic_accepts_them(data: dict[str, Any]) -> None:
    line = json.dumps(data)
    expected = _pydantic(REPLIES, line)
    try:
        got: dict[str, Any] | None = protocol_client.parse_reply(line).dump()
    except ValueError:
        got = None
    assert got == expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message("requests"))
def test_requests_are_refused_exactly_when_pydantic_refuses_them(data: dict[str, Any]) -> None:
    fields = dict(data)
    op = fields.pop("op", None)
    fields.pop("v", None)
    if not isinstance(op, str) or op not in SCHEMA["requests"]:
        return  # request_line always sets op: nothing to compare
    expected = _pydantic(REQUESTS, json.dumps({"v": protocol_client.PROTOCOL_VERSION, "op": op, **fields}))
    try:
        line = protocol_client.request_line(op, **fields)
    except ValueError:
        assert expected is None
        return
    assert expected is not None and json.loads(line) == expected
    assert parse_request(line).model_dump(mode="json") == expected  # what the daemon reads


def test_readable_errors_and_nested_fields() -> None:
    reply = protocol_client.parse_reply(
        b'{"type": "accepted", "actions": [{"index": 0, "action_id": "a-1", "session_id": "s-1", "kind": "pause"}]}'
    )
    assert reply.type == "accepted" and reply.actions[0].action_id == "a-1" and reply.invalid == []
    assert reply.actions[0].existing is False
    with pytest.raises(ValueError, match=r"reply\.actions\.0\.index: field required"):
        protocol_client.parse_reply(b'{"type": "accepted", "actions": [{"action_id": "a"}]}')
    with pytest.raises(ValueError, match="unknown reply type"):
        protocol_client.parse_reply(b'{"type": "surprise"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        protocol_client.parse_reply(b"{nope")
    with pytest.raises(ValueError, match=r"submit\.items: 0 items"):
        protocol_client.request_line("submit", items=[])
    # A constraint the checker does not implement is refused when the schema loads, never skipped.
    with pytest.raises(protocol_client.SchemaError, match=r"t\.name: unsupported schema keywords \['pattern'\]"):
        protocol_client._known_keywords({"properties": {"name": {"type": "string", "pattern": "^a"}}}, "t")
