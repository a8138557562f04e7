"""Does the maintenance pass make the process that runs it grow? (issue 11, supervisor RSS)

The 30-minute soak showed the supervisor's RSS climbing in ~250 MB steps at maintenance passes
while every other process stayed flat. The supervisor does little else than maintenance, so
this bench isolates it: a writer subprocess appends steps and upserts session snapshots the way
the workers' batching writer does (N sessions at a 1 s heartbeat, one ``steps`` append and one
``sessions`` merge per flush, some sessions stopped as they would be by ``destroy``), while this
process runs ``maintenance_loop`` exactly as the supervisor does, with retention on, and
samples its own RSS (psutil) every second and after each pass.

Why not the full soak: a 1,000-session daemon needs both cores and 15+ minutes before storage
settles; the maintenance process's memory shows its trend within a few minutes here.

Usage::

    python bench/maintenance_rss.py                          # 1,000 sessions, 6 minutes
    python bench/maintenance_rss.py --sessions 1000 --minutes 6 --inline   # the pass in-process

It prints one line per pass (RSS before/after, pass seconds, rows deleted) and a summary: RSS
after warm-up (the first third), at the end, the largest jump at a pass, and the growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402

from agentd.config import RetentionConfig  # noqa: E402
from agentd.store import Store  # noqa: E402
from agentd.store.maintenance import MaintenanceReport, maintenance_loop  # noqa: E402
from agentd.store.sessions import SessionRecord  # noqa: E402
from agentd.store.steps import StepRecord  # noqa: E402

WORDS = [
    "why",
    "did",
    "the",
    "cat",
    "sit",
    "on",
    "the",
    "keyboard",
    "because",
    "it",
    "wanted",
    "to",
    "keep",
    "an",
    "eye",
    "on",
    "the",
    "mouse",
    "again",
]


def _now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)


def step_rows(ids: list[str], seqs: dict[str, int], rng: random.Random) -> pa.Table:
    """One flush worth of tick steps, in the steps schema, text and state like a JokeAgent's."""
    now = _now_us()
    columns: dict[str, list[Any]] = {name: [] for name in StepRecord.SCHEMA.names}
    for sid in ids:
        seqs[sid] += 1
        text = " ".join(rng.choice(WORDS) for _ in range(25))
        row = {
            "session_id": sid,
            "agent_id": "bench",
            "shard": hash(sid) % 64,
            "seq": seqs[sid],
            "ts": now,
            "status": "ok",
            "kind": "tick",
            "text": text,
            "data": '{"joke": "' + text + '"}',
            "state": json.dumps({"status": "running", "iteration": seqs[sid], "context": {"subject": "cats"}}),
            "guidance": None,
            "notes": None,
            "latency_ms": 0.1,
            "error": None,
            "epoch": 1,
            "action_id": None,
        }
        for name in columns:
            columns[name].append(row[name])
    return StepRecord.arrow_from_columns([columns[name] for name in StepRecord.SCHEMA.names])


def session_rows(ids: list[str], seqs: dict[str, int], stopped: set[str]) -> pa.Table:
    now = datetime.now(UTC)
    records = [
        SessionRecord(
            session_id=sid,
            agent_id="bench",
            agent_type="joke",
            shard=hash(sid) % 64,
            status="stopped" if sid in stopped else "running",
            context={"subject": "cats", "iteration": seqs[sid]},
            iteration=seqs[sid],
            last_seq=seqs[sid],
            created_at=now,
            updated_at=now,
        )
        for sid in ids
    ]
    return SessionRecord.to_arrow(records)


async def writer(db: str, sessions: int, flush: float, churn_every: float) -> None:
    """The workers' write pattern: per flush one steps append and one sessions merge."""
    store = await Store.open(db, 64)
    rng = random.Random(7)
    live = [f"s{i:05d}" for i in range(sessions)]
    seqs = dict.fromkeys(live, 0)
    stopped: set[str] = set()
    next_id = sessions
    per_flush = max(1, int(sessions * flush))
    cursor = 0
    last_churn = time.monotonic()
    while True:
        started = time.monotonic()
        batch = [live[(cursor + i) % len(live)] for i in range(min(per_flush, len(live)))]
        cursor = (cursor + len(batch)) % len(live)
        await store.steps.add(step_rows(batch, seqs, rng))
        await (
            store.sessions.merge_insert("session_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(session_rows(batch, seqs, stopped))
        )
        if time.monotonic() - last_churn >= churn_every:
            # destroy one session and create another, as the soak's churn does
            last_churn = time.monotonic()
            gone = live.pop(rng.randrange(len(live)))
            stopped.add(gone)
            await (
                store.sessions.merge_insert("session_id")
                .when_matched_update_all()
                .execute(session_rows([gone], seqs, stopped))
            )
            new = f"s{next_id:05d}"
            next_id += 1
            live.append(new)
            seqs[new] = 0
        await asyncio.sleep(max(0.0, flush - (time.monotonic() - started)))


def rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / 1e6


def child_rss_mb(me: psutil.Process, writer_pid: int) -> tuple[float, set[int]]:
    """RSS of this process's children other than the writer (the maintenance child), and their pids."""
    total, pids = 0.0, set()
    for proc in me.children(recursive=True):
        if proc.pid == writer_pid:
            continue
        with contextlib.suppress(psutil.Error):
            total += rss_mb(proc)
            pids.add(proc.pid)
    return total, pids


async def measure(args: argparse.Namespace, db: str) -> int:
    store = await Store.open(db, 64)
    me = psutil.Process()
    writer_proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--writer", db, "--sessions", str(args.sessions), "--flush", str(args.flush)
    )
    stop = asyncio.Event()
    samples: list[tuple[float, float, float]] = []
    passes: list[tuple[float, float, float, MaintenanceReport]] = []
    children: set[int] = set()
    started = time.monotonic()
    before = [rss_mb(me)]

    def on_report(report: MaintenanceReport) -> None:
        after = rss_mb(me)
        passes.append((time.monotonic() - started, before[0], after, report))
        kid, _pids = child_rss_mb(me, writer_proc.pid)
        r = report.retention
        deleted = "" if r is None else f" steps_deleted={r.steps_deleted} purged={r.sessions_purged}"
        print(
            f"t={time.monotonic() - started:6.0f}s pass {report.seconds:5.2f}s rss {before[0]:7.0f} -> {after:7.0f} MB"
            f" (maintenance child {kid:4.0f} MB){deleted}",
            flush=True,
        )

    retention = RetentionConfig(
        steps_per_session=args.keep_steps, step_max_age=600, stopped_session_max_age=60, message_max_age=300
    )
    loop_task = asyncio.create_task(
        maintenance_loop(
            store,
            interval=args.interval,
            cleanup_older_than=args.cleanup,
            action_retention=300.0,
            stop=stop,
            on_report=on_report,
            retention=retention,
            isolate=not args.inline,
        )
    )
    try:
        deadline = started + args.minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            before[0] = rss_mb(me)
            kid, pids = child_rss_mb(me, writer_proc.pid)
            children |= pids
            samples.append((time.monotonic() - started, before[0], kid))
            if writer_proc.returncode is not None:
                print("writer exited", writer_proc.returncode, file=sys.stderr)
                return 1
    finally:
        stop.set()
        await loop_task
        writer_proc.terminate()
        await writer_proc.wait()
    report_summary(args, samples, passes, len(children))
    return 0


def report_summary(
    args: argparse.Namespace,
    samples: list[tuple[float, float, float]],
    passes: list[tuple[float, float, float, MaintenanceReport]],
    children: int,
) -> None:
    warm = [v for t, v, _k in samples if t >= args.minutes * 60 / 3]
    jumps = [after - before_ for _t, before_, after, _r in passes]
    pass_s = sorted(r.seconds for *_x, r in passes)
    mode = "in-process (--inline)" if args.inline else "in a child process"
    print(
        f"\nsummary: maintenance {mode}, {args.sessions} sessions, {args.minutes:g} min, {len(passes)} passes\n"
        f"  this process (the supervisor's part): RSS at start {samples[0][1]:.0f} MB, after warm-up "
        f"{warm[0]:.0f} MB, at end {samples[-1][1]:.0f} MB, max {max(v for _t, v, _k in samples):.0f} MB; "
        f"growth after warm-up {samples[-1][1] - warm[0]:+.0f} MB; largest jump at a pass "
        f"{max(jumps, default=0):+.0f} MB\n"
        f"  maintenance children started: {children}, largest child RSS {max(k for *_x, k in samples):.0f} MB\n"
        f"  pass seconds p50 {pass_s[len(pass_s) // 2] if pass_s else 0:.2f}, max {max(pass_s, default=0):.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--interval", type=float, default=20.0, help="[maintenance] interval")
    parser.add_argument("--cleanup", type=float, default=120.0, help="cleanup_older_than (short, to reach it)")
    parser.add_argument("--keep-steps", type=int, default=30, help="[retention] steps_per_session")
    parser.add_argument("--flush", type=float, default=0.25, help="writer flush interval")
    parser.add_argument("--inline", action="store_true", help="run the pass in this process (the old way)")
    parser.add_argument("--writer", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        asyncio.run(writer(args.writer, args.sessions, args.flush, churn_every=2.0))
        return
    scratch = Path(tempfile.mkdtemp(prefix="agentd-mrss-"))
    try:
        code = asyncio.run(measure(args, str(scratch / "db")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
