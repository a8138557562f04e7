"""Generates ``agentd/protocol_schema.json``: the JSON Schema of what a control client sends and reads.

The control socket's messages are defined once, as the pydantic models of ``agentd.protocol``.
``agentctl`` checks its requests and the daemon's replies against this schema
(``agentd.protocol_client``) instead of importing pydantic, whose import alone costs about three
bare interpreter starts. The file is generated from the models, never written by hand:
``python -m agentd.protocol_schema`` rewrites it, ``--check`` fails when it is stale, and a test
runs the check (``tests/test_protocol_client.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentd import protocol
from agentd.protocol import (
    MAX_LINE,
    PROTOCOL_VERSION,
    Accepted,
    AckReply,
    CancelRequest,
    End,
    ErrorReply,
    ReadRequest,
    ResultReply,
    StatusRequest,
    SubmitRequest,
)

__all__ = ["CLIENT_REPLIES", "CLIENT_REQUESTS", "SCHEMA_PATH", "client_schema", "main"]

SCHEMA_PATH = Path(__file__).with_name("protocol_schema.json")
CLIENT_REQUESTS: tuple[type[BaseModel], ...] = (SubmitRequest, ReadRequest, CancelRequest, StatusRequest)
CLIENT_REPLIES: tuple[type[BaseModel], ...] = (Accepted, AckReply, End, ResultReply, ErrorReply)


def _with_defaults(model: type[BaseModel], schema: dict[str, Any]) -> dict[str, Any]:
    """Write the default of every field that has one, ``default_factory`` ones included (JSON
    Schema leaves those out, and a client filling a missing field needs them)."""
    properties = schema.get("properties", {})
    for name, info in model.model_fields.items():
        if not info.is_required() and name in properties:
            properties[name]["default"] = info.get_default(call_default_factory=True)
    return schema


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _with_defaults(model, model.model_json_schema())
    for name, nested in schema.get("$defs", {}).items():
        _with_defaults(getattr(protocol, name), nested)
    return schema


def _discriminator(model: type[BaseModel], field: str) -> str:
    value = model.model_fields[field].default
    assert isinstance(value, str), f"{model.__name__}.{field} has no literal default"
    return value


def client_schema() -> dict[str, Any]:
    """Requests by ``op``, replies by ``type``, and the constants a client needs."""
    return {
        "version": PROTOCOL_VERSION,
        "max_line": MAX_LINE,
        "requests": {_discriminator(m, "op"): _model_schema(m) for m in CLIENT_REQUESTS},
        "replies": {_discriminator(m, "type"): _model_schema(m) for m in CLIENT_REPLIES},
    }


def render() -> str:
    return json.dumps(client_schema(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
        if current != text:
            sys.stderr.write(f"{SCHEMA_PATH} is stale: run python -m agentd.protocol_schema\n")
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
