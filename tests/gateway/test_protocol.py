"""Protocol models, room names and the bind rule, without IO."""

from __future__ import annotations

import json

import pytest

from agentd.config import GatewayConfig
from agentd.gateway.auth import GatewayConfigError, check_bind, is_loopback
from agentd.gateway.protocol import (
    ErrorEvent,
    PingOp,
    SnapshotEvent,
    StepEvent,
    SubscribeOp,
    parse_client_frame,
    step_body_json,
    step_frame,
)
from agentd.gateway.rooms import AgentRoom, ConvRoom, RoomError, RunRoom, parse_room
from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow


def test_step_frame_validates_against_the_model_and_hides_private_columns() -> None:
    record = StepRecord(session_id="s1", agent_id="a1", shard=3, seq=5, ts=utcnow(), state={"context": {"x": 1}})
    frame = json.loads(step_frame("run::a1::*", step_body_json(record)))
    event = StepEvent.model_validate(frame)  # extra="forbid": no private column leaks out
    assert (event.type, event.room, event.seq, event.state) == ("step", "run::a1::*", 5, {"context": {"x": 1}})
    assert "shard" not in frame and "epoch" not in frame
    body = {k: v for k, v in frame.items() if k not in ("type", "room")}
    SnapshotEvent.model_validate({"type": "snapshot", "room": "run::a1::s1", "state": None, "steps": [body]})


def test_parse_client_frame() -> None:
    op = parse_client_frame('{"op":"subscribe","room":"run::a::s","since":3}')
    assert op == SubscribeOp(op="subscribe", room="run::a::s", since=3)
    assert parse_client_frame(b'{"op":"ping","id":"x"}') == PingOp(op="ping", id="x")
    agent = parse_client_frame('{"op":"subscribe","room":"run::a::*","since":{"s1":4}}')
    assert isinstance(agent, SubscribeOp) and agent.since == {"s1": 4}
    cases = {
        "{": "bad_json",
        "null": "bad_frame",
        '{"op":"nope"}': "unknown_op",
        '{"op":"subscribe"}': "invalid",
        '{"op":"subscribe","room":"r","since":1.5}': "invalid",
    }
    for text, code in cases.items():
        err = parse_client_frame(text)
        assert isinstance(err, ErrorEvent) and err.code == code, (text, err)


def test_rooms() -> None:
    assert parse_room("run::a1::s1") == RunRoom("a1", "s1")
    assert parse_room("run::a1::*") == AgentRoom("a1")
    assert parse_room("conv::c-1") == ConvRoom("c-1")
    for bad in ("", "run::a1", "run::::s", "conv::", "run::a'1::s", "chat::x", "run::a::b::c", "conv::a::b"):
        with pytest.raises(RoomError):
            parse_room(bad)


def test_loopback_rule() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_bind(GatewayConfig(host=host))
    for host in ("0.0.0.0", "::", "", "10.0.0.5", "example.org"):
        assert not is_loopback(host), host
        with pytest.raises(GatewayConfigError, match="token"):
            check_bind(GatewayConfig(host=host))
        check_bind(GatewayConfig(host=host, token="t"))
