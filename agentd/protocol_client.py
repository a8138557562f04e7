"""The control socket's messages for a client that must start fast: standard library only.

Why not the pydantic models of ``agentd.protocol``: importing pydantic costs about 60 ms here,
three bare interpreter starts, on every ``agentctl`` command, whose whole budget is eight. The
messages are still defined once, by those models: this module checks what a client sends and
reads against the JSON Schema generated from them (``protocol_schema.json``, written by
``agentd.protocol_schema``; a test fails when it is stale, and property tests hold this checker
to pydantic's verdicts). The daemon validates everything it receives with the models themselves.

A message is a ``Message``: the validated JSON object, with its fields as attributes (nested
objects too) and every missing optional field set to its default, as the model would.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = ["MAX_LINE", "PROTOCOL_VERSION", "Message", "SchemaError", "parse_reply", "request_line"]

_SCHEMA: dict[str, Any] = json.loads(Path(__file__).with_name("protocol_schema.json").read_text())
PROTOCOL_VERSION: int = _SCHEMA["version"]
MAX_LINE: int = _SCHEMA["max_line"]

# Keywords that only describe; anything else not handled below is a SchemaError (a model grew
# a constraint this checker does not know: extend it, never skip it).
_ANNOTATIONS = frozenset({"title", "description", "default", "$defs"})
_KEYWORDS = frozenset(
    {
        "$ref",
        "anyOf",
        "const",
        "enum",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
    }
)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


class SchemaError(Exception):
    """The schema uses a keyword this checker does not implement (a bug, not bad input)."""


def _known_keywords(schema: dict[str, Any], where: str) -> None:
    """Every keyword in ``schema`` and the schemas inside it is one ``_check`` implements."""
    unknown = set(schema) - _ANNOTATIONS - _KEYWORDS
    if unknown:
        raise SchemaError(f"{where}: unsupported schema keywords {sorted(unknown)}")
    for group in ("properties", "$defs"):
        for name, inner in schema.get(group, {}).items():
            _known_keywords(inner, f"{where}.{name}")
    for inner in schema.get("anyOf", ()):
        _known_keywords(inner, where)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _known_keywords(schema[key], f"{where}.{key}")


# Once, at import: a message is then only checked against what the schema says.
for _group in ("requests", "replies"):
    for _name, _schema in _SCHEMA[_group].items():
        _known_keywords(_schema, f"{_group}.{_name}")


class Message:
    """A validated message: its fields as attributes (``reply.action_id``); ``dump()`` the JSON object."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def dump(self) -> dict[str, Any]:
        return {k: v.dump() if isinstance(v, Message) else _dump_list(v) for k, v in self._fields.items()}

    def __repr__(self) -> str:
        return f"Message({self.dump()!r})"


def _dump_list(value: Any) -> Any:
    return [v.dump() if isinstance(v, Message) else v for v in value] if isinstance(value, list) else value


def parse_reply(line: bytes | str) -> Message:
    """One reply line; ValueError with a readable reason for anything the daemon would not send."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("a reply is a JSON object")
    kind = data.get("type")
    schema = _SCHEMA["replies"].get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise ValueError(f"type: unknown reply type {data.get('type')!r}")
    return Message(_object(schema, data, schema.get("$defs", {}), "reply"))


def request_line(op: str, **fields: Any) -> bytes:
    """A request (``op`` and its fields) checked against its schema, as one protocol line."""
    schema = _SCHEMA["requests"][op]
    data = _object(schema, {"v": PROTOCOL_VERSION, "op": op, **fields}, schema.get("$defs", {}), op)
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def _object(schema: dict[str, Any], data: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    value = _check(schema, data, defs, where)
    assert isinstance(value, dict)
    return value


def _check(schema: dict[str, Any], value: Any, defs: dict[str, Any], where: str) -> Any:
    """``value`` if it matches ``schema`` (defaults filled in, nested objects as Messages)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return Message(_object(defs[name], value, defs, where))
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _check(option, value, defs, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: {_short(value)} is not any of the allowed forms")
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        raise ValueError(f"{where}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{where}: must be one of {', '.join(map(repr, schema['enum']))}")
    kind = schema.get("type")
    if kind is not None:
        if not isinstance(value, _TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
            raise ValueError(f"{where}: {_short(value)} is not of type {kind}")
        if isinstance(value, dict):
            return _fields(schema, value, defs, where)
        if isinstance(value, list):
            return _items(schema, value, defs, where)
        _bounds(schema, value, where)
    return value


def _fields(schema: dict[str, Any], value: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name, field in properties.items():
        if name in value:
            out[name] = _check(field, value[name], defs, f"{where}.{name}")
        elif name in schema.get("required", ()):
            raise ValueError(f"{where}.{name}: field required")
        elif "default" in field:
            out[name] = copy.deepcopy(field["default"])
    extra = schema.get("additionalProperties", True)
    for name in value.keys() - properties.keys():
        if extra is False:
            raise ValueError(f"{where}.{name}: extra inputs are not permitted")
        out[name] = value[name] if extra is True else _check(extra, value[name], defs, f"{where}.{name}")
    return out


def _items(schema: dict[str, Any], value: list[Any], defs: dict[str, Any], where: str) -> list[Any]:
    if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
        raise ValueError(f"{where}: {len(value)} items, outside {schema.get('minItems', 0)}..{schema.get('maxItems')}")
    items = schema.get("items")
    return [_check(items, v, defs, f"{where}.{i}") for i, v in enumerate(value)] if items is not None else value


def _bounds(schema: dict[str, Any], value: Any, where: str) -> None:
    if isinstance(value, str) and not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
        raise ValueError(f"{where}: length {len(value)} out of bounds")
    if "minimum" in schema and value < schema["minimum"]:
        raise ValueError(f"{where}: must be >= {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        raise ValueError(f"{where}: must be <= {schema['maximum']}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, Message) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
