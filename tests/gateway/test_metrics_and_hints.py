"""The gateway's Prometheus metrics move as steps flow; a commit hint is read at once.

``/metrics`` is scraped over HTTP and parsed with ``prometheus_client.parser`` (what Prometheus
does), never read from our own objects. The hint test runs the tail with a 30 s poll, so a
step that arrives within a second can only have been read because of the hint.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentd.protocol import CommitHint, dump_line
from agentd.store import Store

from .gwtools import (
    SHARDS,
    Recorder,
    gateway_settings,
    hinted_gateway,
    http_get,
    procs,
    running_gateway,
    until,
    wait_exit,
)

pytestmark = pytest.mark.timeout(60)


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = await http_get(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_counters_move_as_sessions_tick(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with running_gateway(gateway_settings(db_uri)) as gw:
            before = await _scrape(gw.port)
            assert before[("agentd_gateway_events_sent_total", (("type", "step"),))] == 0
            assert before[("agentd_gateway_open_connections", ())] == 0
            client = await Recorder.open(gw.port)
            await client.subscribe("run::a1::*")
            with procs(tmp_path) as p:
                writer = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1,s2", "--upto", "30", "--batch", "3")
                assert await wait_exit(writer, 30) == 0, p.stderr("w")
            await until(lambda: client.count("run::a1::*") == 60, 15, "60 steps")
            after = await _scrape(gw.port)
            step = ("type", "step")
            assert after[("agentd_gateway_events_sent_total", (step,))] == 60  # all live: subscribed before
            assert after[("agentd_gateway_connections_total", ())] == 1
            assert after[("agentd_gateway_open_connections", ())] == 1
            assert after[("agentd_gateway_subscriptions", ())] == 1
            assert after[("agentd_gateway_snapshots_total", ())] == 1
            table = (("table", "steps"),)
            polls = "agentd_gateway_tail_polls_total"
            assert after[(polls, table)] > before[(polls, table)]
            assert after[("agentd_gateway_tail_rows_total", table)] >= 1
            assert after[("agentd_gateway_tail_read_seconds_count", table)] >= 1
            assert after[("agentd_gateway_tail_batch_age_seconds_count", table)] >= 1
            assert after[("agentd_gateway_tail_lag_versions", table)] == 0
            assert after[("agentd_gateway_overflow_disconnects_total", ())] == 0
            # Every sample name follows the conventions: prefix, counters end in _total.
            names = {name for name, _ in after}
            assert all(n.startswith("agentd_gateway_") for n in names), names
            await client.close()

    asyncio.run(scenario())


def test_commit_hint_from_the_supervisor_channel_reads_at_once(db_uri: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        await Store.open(db_uri, SHARDS)
        async with hinted_gateway(db_uri) as (gw, supervisor):
            client = await Recorder.open(gw.port)
            await client.subscribe("run::a1::s1")
            await until(lambda: client.of_type("snapshot"), 10, "snapshot")
            await asyncio.sleep(0.2)  # the tail is now in its 30 s wait
            with procs(tmp_path) as p:
                writer = p.writer(db_uri, "w", "--agent", "a1", "--sessions", "s1", "--upto", "5", "--batch", "5")
                assert await wait_exit(writer, 30) == 0, p.stderr("w")
            assert client.count("run::a1::s1") == 0, "read without a hint: the poll was not 30 s"
            supervisor.sendall(b"not json\n")  # a bad line is skipped, never fatal
            supervisor.sendall(json.dumps({"type": "wake"}).encode() + b"\n")  # other messages: ignored
            sent = time.monotonic()
            supervisor.sendall(dump_line(CommitHint(sessions=["s1"])))
            # Read on the hint, not at the tail's next poll (30 s away); a loaded machine is slow.
            await until(lambda: client.count("run::a1::s1") == 5, 15, "5 steps after the hint")
            assert time.monotonic() - sent < 15
            assert gw.hints_received == 1
            _, _, body = await http_get(gw.port, "/metrics")
            assert b"agentd_gateway_commit_hints_total 1.0" in body
            await client.close()

    asyncio.run(scenario())
