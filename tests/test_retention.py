"""Retention on a real LanceDB directory: what a pass deletes, what it always keeps, what it costs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from helpers import run

from agentd.config import RetentionConfig
from agentd.store import Store
from agentd.store.conversations import MessageRecord, insert_messages
from agentd.store.maintenance import maintenance_loop, run_maintenance
from agentd.store.retention import apply_retention, purge_sessions, step_trim_bounds
from agentd.store.sessions import SessionRecord, upsert_sessions
from agentd.store.steps import StepRecord
from agentd.timeutil import utcnow

pytestmark = pytest.mark.timeout(120)

NOW = utcnow()


def _steps(session_id: str, seqs: range, *, age: float = 0.0) -> list[StepRecord]:
    """Steps stamped ``age`` seconds ago, the newest (highest seq) last."""
    return [
        StepRecord(
            session_id=session_id,
            agent_id="agent",
            shard=1,
            seq=seq,
            ts=NOW - timedelta(seconds=age) - timedelta(milliseconds=seqs.stop - seq),
            text=f"step {seq}",
            state={"seq": seq},
        )
        for seq in seqs
    ]


def _session(session_id: str, status: str, last_seq: int, *, age: float = 0.0) -> SessionRecord:
    when = NOW - timedelta(seconds=age)
    return SessionRecord.model_validate(
        {
            "session_id": session_id,
            "agent_id": "agent",
            "agent_type": "joke",
            "shard": 1,
            "status": status,
            "last_seq": last_seq,
            "created_at": when,
            "updated_at": when,
        }
    )


def _message(message_id: str, age: float) -> MessageRecord:
    return MessageRecord(
        message_id=message_id,
        conversation_id="c-1",
        author_id="user",
        role="user",
        text=message_id,
        created_at=NOW - timedelta(seconds=age),
    )


async def _seqs(store: Store) -> dict[str, list[int]]:
    rows = (await store.steps.query().select(["session_id", "seq"]).to_arrow()).to_pylist()
    found: dict[str, list[int]] = {}
    for row in rows:
        found.setdefault(row["session_id"], []).append(row["seq"])
    return {sid: sorted(seqs) for sid, seqs in found.items()}


async def _populate(store: Store) -> None:
    # busy: 30 fresh steps. idle: 5 steps, all a day old (its latest must stay).
    # gone: stopped two days ago. recent: stopped a minute ago. broken: error two days ago.
    await store.steps.add(
        StepRecord.to_arrow(
            _steps("busy", range(1, 31))
            + _steps("idle", range(1, 6), age=86_400)
            + _steps("gone", range(1, 4), age=172_800)
            + _steps("recent", range(1, 4), age=60)
            + _steps("broken", range(1, 3), age=172_800)
        )
    )
    await upsert_sessions(
        store.sessions,
        [
            _session("busy", "running", 30),
            _session("idle", "paused", 5, age=86_400),
            _session("gone", "stopped", 3, age=172_800),
            _session("recent", "stopped", 3, age=60),
            _session("broken", "error", 2, age=172_800),
        ],
    )
    await insert_messages(store.messages, [_message("m-old", 10_000), _message("m-new", 10)])


def test_trim_bounds_keep_the_latest_step_and_apply_whichever_limit_is_reached_first() -> None:
    ts = pa.array([NOW - timedelta(hours=h) for h in (5, 4, 3, 2, 1, 9)], type=pa.timestamp("us", tz="UTC"))
    rows = pa.table(
        {"session_id": ["a", "a", "a", "a", "a", "b"], "seq": [1, 2, 3, 4, 5, 7], "ts": ts},
    )
    # Count rule only: the last 2 of a stay; b has one (old) step, its latest: kept.
    assert step_trim_bounds(rows, keep_last=2, older_than=None) == {"a": (5, 3, 3)}
    # Age rule only: steps older than 2.5 h go, except b's latest.
    assert step_trim_bounds(rows, keep_last=0, older_than=NOW - timedelta(hours=2.5)) == {"a": (5, None, 3)}
    # Both: the age rule reaches further here (seq 1-3 by age, seq 1 by count).
    assert step_trim_bounds(rows, keep_last=4, older_than=NOW - timedelta(hours=2.5)) == {"a": (5, 1, 3)}
    # Even a zero-hour age keeps every session's latest step.
    assert step_trim_bounds(rows, keep_last=0, older_than=NOW) == {"a": (5, None, 4)}


def test_a_pass_trims_steps_purges_stopped_sessions_and_old_messages(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        limits = RetentionConfig(
            steps_per_session=10, step_max_age=3600, stopped_session_max_age=86_400, message_max_age=3600
        )
        report = await apply_retention(store, limits, now=NOW)
        assert report.skipped is None
        seqs = await _seqs(store)
        assert seqs["busy"] == list(range(21, 31))  # the last 10
        assert seqs["idle"] == [5]  # all older than an hour, but the latest snapshot stays
        assert "gone" not in seqs  # stopped two days ago: steps and row purged
        assert seqs["recent"] == [1, 2, 3]  # stopped a minute ago: kept, and within every limit
        assert seqs["broken"] == [2]  # error sessions are not purged automatically
        rows = await store.sessions.query().select(["session_id"]).to_arrow()
        sessions = set(rows.column("session_id").to_pylist())
        assert sessions == {"busy", "idle", "recent", "broken"}
        messages = [r["message_id"] for r in (await store.messages.query().to_arrow()).to_pylist()]
        assert messages == ["m-new"]
        assert (report.steps_deleted, report.sessions_purged, report.messages_deleted) == (20 + 4 + 3 + 0 + 1, 1, 1)

        # Nothing left to delete: no delete is committed, so no table gets a new version.
        before = await store.versions()
        again = await apply_retention(store, limits, now=NOW)
        assert (again.steps_deleted, again.sessions_purged, again.messages_deleted) == (0, 0, 0)
        assert await store.versions() == before

    run(scenario())


def test_each_rule_is_off_at_zero_and_one_pass_makes_one_delete_per_table(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        before = await store.versions()
        report = await apply_retention(store, RetentionConfig(steps_per_session=2), now=NOW)
        after = await store.versions()
        # One commit on steps (trimming busy, idle, gone, recent, broken at once), none elsewhere.
        assert after["steps"] == before["steps"] + 1
        assert {k: v for k, v in after.items() if k != "steps"} == {k: v for k, v in before.items() if k != "steps"}
        assert report.steps_deleted == 28 + 3 + 1 + 1 + 0
        seqs = await _seqs(store)
        assert seqs == {"busy": [29, 30], "idle": [4, 5], "gone": [2, 3], "recent": [2, 3], "broken": [1, 2]}
        assert await store.messages.count_rows() == 2

    run(scenario())


def test_purge_sessions_deletes_only_finished_rows_and_is_idempotent(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        result = await purge_sessions(store, ["gone", "broken"])
        assert (result.sessions, result.steps) == (2, 5)
        again = await purge_sessions(store, ["gone", "broken"])
        assert (again.sessions, again.steps) == (0, 0)
        # The status condition is inside the delete: a live row is never deleted by it.
        guarded = await purge_sessions(store, ["busy"])
        assert guarded.sessions == 0
        assert await store.sessions.count_rows("session_id = 'busy'") == 1

    run(scenario())


def test_maintenance_runs_retention_and_reports_it(db_uri: str) -> None:
    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        await _populate(store)
        report = await run_maintenance(
            store, cleanup_older_than=600, retention=RetentionConfig(stopped_session_max_age=3600)
        )
        assert report.retention is not None
        assert report.as_dict()["retention"]["sessions_purged"] == 1
        assert "sessions_purged=1" in report.summary()
        # Without [retention] limits nothing is deleted and the report says so with None.
        plain = await run_maintenance(store, cleanup_older_than=600, retention=RetentionConfig())
        assert plain.retention is None and plain.as_dict()["retention"] is None

        # The loop (as the supervisor runs it) passes the limits on to every pass.
        await upsert_sessions(store.sessions, [_session("later", "stopped", 0, age=7200)])
        stop = asyncio.Event()
        reports: list[Any] = []

        def on_report(r: Any) -> None:
            reports.append(r)
            stop.set()

        await asyncio.wait_for(
            maintenance_loop(
                store,
                interval=0.05,
                cleanup_older_than=600,
                action_retention=None,
                stop=stop,
                on_report=on_report,
                retention=RetentionConfig(stopped_session_max_age=3600),
            ),
            60,
        )
        assert reports[0].retention.sessions_purged == 1
        assert await store.sessions.count_rows("session_id = 'later'") == 0

    run(scenario())


def test_trim_predicate_is_one_clause_per_bound_and_deletes_exactly_the_trimmed_steps(db_uri: str) -> None:
    """Sessions that tick together share a bound: 300 sessions at 3 different latest seqs make
    3 ``IN`` clauses, not 300 OR-ed per-session clauses, and delete the same rows."""
    from agentd.store.retention import trim_predicate

    async def scenario() -> None:
        store = await Store.open(db_uri, 16)
        steps = []
        for i in range(300):
            steps += _steps(f"s{i:03d}", range(1, 8 + i % 3))  # latest seq 7, 8 or 9
        await store.steps.add(StepRecord.to_arrow(steps))
        rows = await store.steps.query().select(["session_id", "seq", "ts"]).to_arrow()
        bounds = step_trim_bounds(rows, keep_last=4, older_than=None)
        predicate = trim_predicate(bounds, None)
        assert predicate is not None and predicate.count("session_id IN") == 3
        report = await apply_retention(store, RetentionConfig(steps_per_session=4), now=NOW)
        assert report.steps_deleted == 300 * 3 + 100 * (1 + 2)  # 3, 4 or 5 steps over the limit
        seqs = await _seqs(store)
        assert all(found == list(range(found[-1] - 3, found[-1] + 1)) for found in seqs.values())
        assert trim_predicate({}, None) is None

    run(scenario())
