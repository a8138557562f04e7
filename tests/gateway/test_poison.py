"""Issue 11, finding 10 (gateway part): one undecodable step row never stalls the tail."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pyarrow as pa
import pytest

from agentd.gateway.step_tail import GAP_HOLD_SECONDS
from agentd.ids import shard_for
from agentd.store import Store
from agentd.timeutil import utcnow

from .gwtools import SHARDS, Recorder, gateway_settings, running_gateway, until


def _row(agent: str, session: str, seq: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session_id": session,
        "agent_id": agent,
        "shard": shard_for(session, SHARDS),
        "seq": seq,
        "ts": utcnow(),
        "status": "ok",
        "kind": "tick",
        "text": f"step {seq}",
        "data": None,
        "state": json.dumps({"iteration": seq}),
        "guidance": None,
        "notes": None,
        "latency_ms": 1.0,
        "error": None,
        "epoch": 0,
    }
    row.update(overrides)
    return row


async def _append(store: Any, rows: list[dict[str, Any]]) -> None:
    """Straight into the table with its own schema: no model on the way, as a foreign writer."""
    schema: pa.Schema = await store.steps.schema()
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    await store.steps.add(pa.Table.from_pylist(full, schema=schema))


@pytest.mark.timeout(60)
def test_an_undecodable_row_is_skipped_and_every_other_row_delivered(
    db_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentd.gateway")

    async def scenario() -> None:
        store = await Store.open(db_uri, SHARDS)
        await _append(store, [_row("a1", "s1", n) for n in (1, 2, 3)])
        async with running_gateway(gateway_settings(db_uri)) as gw:
            live = await Recorder.open(gw.port)
            for room in ("run::a1::*", "run::a1::s1", "run::a2::s9"):
                await live.subscribe(room)
            await until(lambda: len(live.of_type("snapshot")) == 3, 10, "snapshots")
            started = time.monotonic()
            # One commit: a bad JSON column, a status the model refuses, and good rows around them.
            await _append(
                store,
                [
                    _row("a1", "s1", 4, state="{not json"),
                    _row("a1", "s1", 5),
                    _row("a1", "s2", 1, status="bogus"),
                    _row("a1", "s2", 2),
                    *[_row("a2", "s9", n) for n in (1, 2, 3)],
                ],
            )
            await _append(store, [_row("a1", "s1", 6), _row("a1", "s2", 3), _row("a2", "s9", 4)])
            await until(lambda: live.count("run::a2::s9") == 4, 10, "the other agent's room")
            await until(lambda: live.count("run::a1::*") == 7, 10, "the good rows of a1")
            elapsed = time.monotonic() - started
            assert elapsed < GAP_HOLD_SECONDS, f"later steps were held back for a gap: {elapsed:.2f}s"
            assert live.steps("run::a1::*") == {"s1": [1, 2, 3, 5, 6], "s2": [2, 3]}
            assert live.steps("run::a1::s1") == {"s1": [1, 2, 3, 5, 6]}
            assert live.steps("run::a2::s9") == {"s9": [1, 2, 3, 4]}
            # A new subscriber's snapshot reads the same bad rows from history.
            late = await Recorder.open(gw.port)
            await late.subscribe("run::a1::*")
            await until(lambda: late.count("run::a1::*") == 7, 10, "late snapshot")
            assert late.steps("run::a1::*") == {"s1": [1, 2, 3, 5, 6], "s2": [2, 3]}
            await asyncio.sleep(0.2)
            assert not live.of_type("error") and not late.of_type("error")
            assert live.closed is None and late.closed is None
            assert gw.stats.steps.quarantined == 2 and gw.stats.steps.errors == 0
            assert gw.stats.steps.gaps_unfilled == 0 and gw.stats.delivery.gaps_seen == 0
            await live.close()
            await late.close()

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once per bad row, though the tail and a snapshot read it
    assert any("session s1 seq 4" in w for w in warnings) and any("session s2 seq 1" in w for w in warnings)
