"""The gateway's direct row → JSON path gives what the model's path gives, for any row.

``rows.decode_steps`` writes a row straight into its step body when its columns already have
the types ``StepRecord`` accepts, and sends every other row through the model (which accepts
it or quarantines it). Here random rows, from well-formed to hostile, go through both paths:
each must be accepted or quarantined alike, with equal JSON (byte for byte for a typical tick;
a float may print as ``1e+16`` on one path and ``1e16`` on the other).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.gateway.protocol import step_body_json
from agentd.gateway.rows import HINTED_COLUMN, Quarantine, decode_steps
from agentd.store.records import encode_json
from agentd.store.steps import SCHEMA, StepRecord

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
encoded_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(encode_json)
hostile_json = st.sampled_from(["{broken", "", "[1, 2]", '"text"', "null", "{} extra", '{"a": NaN}', " {}", "{}"])
json_column = st.none() | encoded_objects | hostile_json
strings = st.none() | st.text(max_size=20)


@st.composite
def step_rows(draw: st.DrawFn, json_column: st.SearchStrategy[str | None] = json_column) -> dict[str, Any]:
    return {
        "session_id": draw(st.text(min_size=1, max_size=8)),
        "agent_id": draw(st.text(min_size=1, max_size=8)),
        "shard": draw(st.integers(0, 64)),
        "seq": draw(st.integers(1, 10**12)),
        "ts": EPOCH + timedelta(seconds=draw(st.integers(0, 10**9)), microseconds=draw(st.sampled_from([0, 1, 92258]))),
        "status": draw(st.sampled_from(["ok", "error", "info", "weird"])),
        "kind": draw(st.none() | st.sampled_from(["tick", "guidance", "lifecycle"]) | st.text(max_size=5)),
        "text": draw(strings),
        "data": draw(json_column),
        "state": draw(json_column),
        "guidance": draw(json_column),
        "notes": draw(strings),
        "latency_ms": draw(st.none() | st.floats()),
        "error": draw(strings),
        "epoch": draw(st.none() | st.integers(0, 2**40)),
        "action_id": draw(strings),
    }


def _by_model(row: dict[str, Any]) -> str:
    """The body the model's path gives, or "" when it refuses the row."""
    try:
        return step_body_json(StepRecord.from_row(row))
    except (ValueError, TypeError, RecursionError):
        return ""


def _table(rows: list[dict[str, Any]], *, hinted: bool = False) -> pa.Table:
    # Written around the schema's NOT NULLs, as a hand-written table may be.
    fields = [pa.field(f.name, f.type, nullable=True) for f in SCHEMA]
    table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
    if hinted:  # as hints.HintedRows keeps the rows of a commit hint
        table = table.append_column(HINTED_COLUMN, pa.array([True] * len(rows), pa.bool_()))
    return table


def _check_against_the_model(rows: list[dict[str, Any]], *, hinted: bool) -> None:
    decoded, _ = decode_steps(_table(rows, hinted=hinted), Quarantine())
    assert [(r.session_id, r.seq) for r in decoded] == [(r["session_id"], r["seq"]) for r in rows]
    for got, row in zip(decoded, rows, strict=True):
        expected = _by_model(row)
        assert bool(got.body) == bool(expected), (row, got.body, expected)
        if not expected:
            continue
        assert json.loads(got.body) == json.loads(expected)
        assert got.ts_us == int(row["ts"].timestamp() * 1_000_000)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_rows(), min_size=1, max_size=8))
def test_direct_bodies_equal_the_models_for_any_row(rows: list[dict[str, Any]]) -> None:
    _check_against_the_model(rows, hinted=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_rows(st.none() | encoded_objects), min_size=1, max_size=8))
def test_hinted_rows_spliced_unparsed_equal_the_models(rows: list[dict[str, Any]]) -> None:
    """Rows of a commit hint: JSON columns as our encoder wrote them (NaN and all) are not parsed."""
    _check_against_the_model(rows, hinted=True)


def test_a_typical_tick_takes_the_direct_path_and_a_poisoned_row_is_quarantined_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = {
        "session_id": "s1",
        "agent_id": "a1",
        "shard": 3,
        "seq": 7,
        "ts": datetime(2026, 12, 1, 3, 32, 32, tzinfo=UTC),
        "status": "ok",
        "kind": "tick",
        "text": 'a "joke"\nabout é',
        "data": encode_json({"joke": "x"}),
        "state": encode_json({"iteration": 7, "context": {"subject": "cats", "paused": False}}),
        "guidance": None,
        "notes": None,
        "latency_ms": 1.5,
        "error": None,
        "epoch": 2,
        "action_id": None,
    }
    bad = {**good, "seq": 8, "state": "{not json"}
    expected = step_body_json(StepRecord.from_row(good))
    modelled: list[Any] = []
    real = StepRecord.from_row.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(StepRecord, "from_row", classmethod(lambda cls, row: modelled.append(row) or real(cls, row)))
    quarantine = Quarantine()
    decoded, new = decode_steps(_table([good, bad]), quarantine)
    assert [row["seq"] for row in modelled] == [8], "only the bad row goes through the model"
    assert decoded[0].body == expected
    assert '"ts":"2026-12-01T03:32:32Z"' in decoded[0].body
    assert decoded[1].body == "" and (decoded[1].session_id, decoded[1].seq) == ("s1", 8)
    assert new == 1
    assert decode_steps(_table([bad]), quarantine)[1] == 0, "logged and counted once"
