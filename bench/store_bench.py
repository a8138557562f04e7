"""Benchmark of agentd's LanceDB store: write batching, queue claims, reads vs. fragment count.

Everything goes through our own code (``Store``, ``BatchingWriter``, ``ActionQueue``,
``run_maintenance``, the ``read_*`` helpers) on the async LanceDB API, with raw LanceDB calls
measured in the same run as baselines:

1. writes   rows/s and commit latency for batches of 1/10/100/1000 step rows: raw
               ``steps.add`` of prebuilt Arrow tables, the BatchingWriter with
               ``flush_max_rows`` = batch size (steps only), and the writer with the session
               snapshots a real flush also upserts.
2. claims   actions claimed + completed per second from 2,000 pending actions over 64 shards,
               by 1/2/4 claimer processes (fresh interpreters, never forked after importing
               lancedb) each owning the shards ``s % N == i`` as workers do, and a contended
               variant where every process claims all shards; each variant runs for a fixed
               window and checks that no action was completed twice.
3. reads    filtered-read latency on ``steps`` and the queue's pending query at >= 2,000
               fragments (2,000 small appends per table), then one ``run_maintenance`` pass
               (timed), then the same reads again.

Usage::

    python bench/store_bench.py            # full run (~3-4 minutes on 2 cores)
    python bench/store_bench.py --quick    # smaller sizes (< 1 minute)

Prints one table per part and a final JSON blob (also written to ``<out-dir>/results.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lancedb  # noqa: E402
import pyarrow as pa  # noqa: E402

from agentd.ids import new_id, shard_for, shards_of_worker  # noqa: E402
from agentd.queue import ActionQueue, ClaimLost  # noqa: E402
from agentd.store import Store  # noqa: E402
from agentd.store.actions import ActionRecord  # noqa: E402
from agentd.store.maintenance import run_maintenance  # noqa: E402
from agentd.store.sessions import SessionRecord  # noqa: E402
from agentd.store.steps import StepRecord, read_steps, read_steps_between_versions  # noqa: E402
from agentd.store.writer import BatchingWriter  # noqa: E402
from agentd.timeutil import utcnow  # noqa: E402

NUM_SHARDS = 64
BATCH_SIZES = (1, 10, 100, 1000)

# commits per batch size; pending actions and measuring window per claim variant; appends per
# table before the reads; repeats of each read
FULL = {
    "commits": {1: 300, 10: 300, 100: 150, 1000: 40},
    "actions": 2000,
    "claim_window": 15.0,
    "procs": (1, 2, 4),
    "fragments": 2000,
    "reads_before": 7,
    "reads_after": 25,
}
QUICK = {
    "commits": {1: 60, 10: 60, 100: 30, 1000: 8},
    "actions": 2000,
    "claim_window": 2.5,
    "procs": (1, 2, 4),
    "fragments": 300,
    "reads_before": 5,
    "reads_after": 10,
}

_WORDS = [
    *("agent", "step", "tool", "call", "result", "plan", "observe", "reply", "user", "gateway", "shard"),
    *("lease", "ticket", "summary", "search", "page", "context", "token", "model", "answer", "check"),
    *("retry", "queue", "batch", "commit", "fragment", "index", "table", "session"),
]


# -- helpers ----------------------------------------------------------------------------------


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def lat(samples_s: list[float]) -> dict[str, Any]:
    """p50/p99/max in milliseconds from samples in seconds."""
    ms = [s * 1000 for s in samples_s]
    if not ms:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p99_ms": round(pct(ms, 99), 2), "max_ms": round(max(ms), 2)}


def prose(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def step_rows(rng: random.Random, sessions: list[str], count: int, seqs: dict[str, int]) -> list[StepRecord]:
    """Realistic step rows: ~200-byte text, ~150-byte state JSON, round-robin over ``sessions``."""
    rows = []
    for i in range(count):
        sid = sessions[i % len(sessions)]
        seqs[sid] = seq = seqs.get(sid, 0) + 1
        rows.append(
            StepRecord(
                session_id=sid,
                agent_id="bench-agent",
                shard=shard_for(sid, NUM_SHARDS),
                seq=seq,
                ts=utcnow(),
                text=prose(rng, 200),
                data={"tool": "search", "ok": True},
                state={
                    "status": "running",
                    "iteration": seq,
                    "context": {"goal": prose(rng, 48), "paused": False, "turn": seq, "last_tool": "search"},
                },
                latency_ms=rng.uniform(50, 900),
            )
        )
    return rows


def snapshot(step: StepRecord) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        session_id=step.session_id,
        agent_id=step.agent_id,
        agent_type="bench",
        shard=step.shard,
        status="running",
        context=step.state.get("context", {}),
        iteration=step.seq,
        last_seq=step.seq,
        created_at=now,
        updated_at=now,
    )


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  ".join(padded))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


async def fragments(tbl: Any) -> int:
    return int((await tbl.stats())["fragment_stats"]["num_fragments"])


# -- 1. writes --------------------------------------------------------------------------------


async def bench_writes(root: Path, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    sessions = [f"s-write-{i:03d}" for i in range(50)]
    for batch in BATCH_SIZES:
        commits = cfg["commits"][batch]
        rng = random.Random(batch)
        seqs: dict[str, int] = {}
        batches = [step_rows(rng, sessions, batch, seqs) for _ in range(commits)]
        arrow = [StepRecord.to_arrow(b) for b in batches]
        snaps = [list({r.session_id: snapshot(r) for r in b}.values()) for b in batches]

        # raw baseline: one AsyncTable.add per batch, Arrow prebuilt
        store = await Store.open(str(root / f"writes-raw-{batch}"), NUM_SHARDS)
        samples = []
        started = time.perf_counter()
        for data in arrow:
            t = time.perf_counter()
            await store.steps.add(data)
            samples.append(time.perf_counter() - t)
        wall = time.perf_counter() - started
        results.append(_write_result("raw steps.add", batch, commits, wall, samples, samples))

        for mode, with_snaps in (("BatchingWriter", False), ("BatchingWriter+sessions", True)):
            store = await Store.open(str(root / f"writes-{'ws' if with_snaps else 'w'}-{batch}"), NUM_SHARDS)
            writer = BatchingWriter(store, flush_interval=1.0, flush_max_rows=batch)
            writer.start()
            acks = []
            started = time.perf_counter()
            for steps, snap_list in zip(batches, snaps, strict=True):
                t = time.perf_counter()
                generation = await writer.submit(steps)
                if with_snaps:
                    for snap in snap_list:
                        await writer.submit(snapshot=snap)
                await writer.wait_durable(generation)
                acks.append(time.perf_counter() - t)
            wall = time.perf_counter() - started
            await writer.close()
            commit_s = [ms / 1000 for ms in writer.stats.commit_ms]
            result = _write_result(mode, batch, commits, wall, commit_s, acks)
            result["flushes"] = writer.stats.flushes
            result["failures"] = writer.stats.failures
            results.append(result)
    return results


def _write_result(
    mode: str, batch: int, commits: int, wall: float, commit_s: list[float], ack_s: list[float]
) -> dict[str, Any]:
    return {
        "mode": mode,
        "batch": batch,
        "commits": commits,
        "rows": batch * commits,
        "seconds": round(wall, 3),
        "rows_per_s": round(batch * commits / wall, 1),
        "commit": lat(commit_s),
        "ack": lat(ack_s),
    }


# -- 2. claims --------------------------------------------------------------------------------


async def seed_actions(uri: str, count: int) -> tuple[Store, set[str]]:
    """``count`` pending actions over all shards in one commit, then one maintenance pass."""
    store = await Store.open(uri, NUM_SHARDS)
    now = utcnow()
    records = []
    for i in range(count):
        sid = f"s-claim-{i:05d}"
        records.append(
            ActionRecord(
                action_id=new_id("a"),
                session_id=sid,
                shard=shard_for(sid, NUM_SHARDS),
                kind="pause" if i % 3 else "resume",
                payload={"reason": "bench", "n": i},
                created_at=now + timedelta(microseconds=i),
            )
        )
    await store.actions.add(ActionRecord.to_arrow(records))
    # Steady state of a running daemon: maintenance has compacted and indexed the table.
    await run_maintenance(store, action_retention=None)
    return store, {r.action_id for r in records}


def run_claimers(root: Path, uri: str, procs: int, contended: bool, batch: int, window: float) -> list[dict[str, Any]]:
    """Start ``procs`` claimer interpreters, release them together, collect their reports."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    tag = f"{procs}-{'all' if contended else 'own'}"
    children = []
    try:
        for i in range(procs):
            shards = list(range(NUM_SHARDS)) if contended else shards_of_worker(i, procs, NUM_SHARDS)
            spec: dict[str, Any] = {
                "uri": uri,
                "shards": shards,
                "batch": batch,
                "window": window,
                "out": str(root / f"claimer-{tag}-{i}.json"),
                "name": f"bench-claimer-{i}",
            }
            err = open(root / f"claimer-{tag}-{i}.stderr", "wb")  # noqa: SIM115 - closed in finally
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--claim-worker", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
            children.append((proc, spec, err))
        for proc, _, _ in children:  # every child has opened the store and polled once
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"claimer {proc.pid} did not start (stderr in {root})")
        for proc, _, _ in children:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        outputs = []
        for proc, spec, _ in children:
            code = proc.wait(timeout=window + 300)
            if code != 0:
                raise RuntimeError(f"claimer {proc.pid} exited with {code} (stderr in {root})")
            outputs.append(json.loads(Path(spec["out"]).read_text()))
        return outputs
    finally:
        for proc, _, err in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()


async def claim_worker(spec: dict[str, Any]) -> None:
    """Child process: claim and complete actions of ``shards`` for ``window`` seconds (or until none is left)."""
    store = await Store.open(spec["uri"], NUM_SHARDS)
    queue = ActionQueue(store.actions, NUM_SHARDS, lease=600.0, claim_batch=spec["batch"], claimer=spec["name"])
    shards = spec["shards"]
    await queue.pending(shards, limit=1)  # warm: a running worker has polled before
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    claim_s: list[float] = []
    complete_s: list[float] = []
    done: list[str] = []
    errors: list[str] = []
    lost_races = 0
    claim_lost = 0
    start = time.time()
    deadline = time.perf_counter() + spec["window"]
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        try:
            won = await queue.claim(shards)
        except Exception as exc:
            errors.append(repr(exc)[:200])
            await asyncio.sleep(0.05)
            continue
        claim_s.append(time.perf_counter() - t)
        if not won:
            if not await queue.pending(shards, limit=1):
                break  # drained
            lost_races += 1  # candidates were there, another claimer took them first
            await asyncio.sleep(random.uniform(0, 0.01))
            continue
        for action in won:
            if time.perf_counter() >= deadline:
                break  # the rest stays claimed; its lease would hand it to another worker
            t = time.perf_counter()
            try:
                await queue.complete(action, {"by": spec["name"]})
            except ClaimLost:
                claim_lost += 1
                continue
            except Exception as exc:
                errors.append(repr(exc)[:200])
                continue
            complete_s.append(time.perf_counter() - t)
            done.append(action.action_id)
    end = time.time()
    report = {
        "start": start,
        "end": end,
        "done": done,
        "claim_s": claim_s,
        "complete_s": complete_s,
        "lost_races": lost_races,
        "claim_lost": claim_lost,
        "errors": errors,
    }
    await asyncio.to_thread(Path(spec["out"]).write_text, json.dumps(report))


async def bench_claims(root: Path, cfg: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    results = []
    variants = [(n, False) for n in cfg["procs"]] + [(n, True) for n in cfg["procs"] if n > 1]
    for procs, contended in variants:
        uri = str(root / f"claims-{procs}-{'all' if contended else 'own'}")
        store, expected = await seed_actions(uri, cfg["actions"])
        outs = await asyncio.to_thread(run_claimers, root, uri, procs, contended, batch, cfg["claim_window"])
        done = [a for o in outs for a in o["done"]]
        wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
        errors = [e for o in outs for e in o["errors"]]
        stored_done = int(await store.actions.count_rows("status = 'done'"))
        results.append(
            {
                "procs": procs,
                "shards": "all (contended)" if contended else "own (s % N)",
                "pending_at_start": len(expected),
                "seconds": round(wall, 3),
                "completed": len(done),
                "claims_per_s": round(len(done) / wall, 1),
                "claim": lat([s for o in outs for s in o["claim_s"]]),
                "complete": lat([s for o in outs for s in o["complete_s"]]),
                "lost_races": sum(o["lost_races"] for o in outs),
                "claim_lost": sum(o["claim_lost"] for o in outs),
                "errors": len(errors),
                "error_samples": errors[:3],
                # each completion reported once, by one process, and matching the table
                "exactly_once": len(done) == len(set(done)) == stored_done and set(done) <= expected,
                "actions_fragments_after": await fragments(store.actions),
            }
        )
    return results


# -- 3. reads vs fragments --------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]], repeats: int) -> tuple[list[float], Any]:
    result = await call()  # warm-up, not counted
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = await call()
        samples.append(time.perf_counter() - t)
    return samples, result


async def bench_reads(root: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    store = await Store.open(str(root / "fragments"), NUM_SHARDS)
    queue = ActionQueue(store.actions, NUM_SHARDS)
    count = cfg["fragments"]
    rng = random.Random(7)
    sessions = [f"s-frag-{i:03d}" for i in range(40)]
    seqs: dict[str, int] = {}
    step_batches = [StepRecord.to_arrow(step_rows(rng, [sessions[i % 40]], 5, seqs)) for i in range(count)]
    now = utcnow()
    action_rows = []
    for i in range(count):
        sid = sessions[i % 40]
        pending = i % 20 == 0  # a queue mostly holds finished actions
        action_rows.append(
            ActionRecord.to_arrow(
                [
                    ActionRecord(
                        action_id=new_id("a"),
                        session_id=sid,
                        shard=shard_for(sid, NUM_SHARDS),
                        kind="pause",
                        payload={"n": i},
                        status="pending" if pending else "done",
                        version=0 if pending else 2,
                        result=None if pending else {"ok": True},
                        created_at=now + timedelta(microseconds=i),
                        done_at=None if pending else now,
                    )
                ]
            )
        )

    async def append_all(tbl: Any, batches: list[pa.Table]) -> list[float]:
        samples = []
        for data in batches:
            t = time.perf_counter()
            await tbl.add(data)
            samples.append(time.perf_counter() - t)
        return samples

    started = time.perf_counter()
    steps_add, actions_add = await asyncio.gather(
        append_all(store.steps, step_batches), append_all(store.actions, action_rows)
    )
    fill_s = time.perf_counter() - started
    probe = sessions[3]
    since = seqs[probe] - 20  # the last 20 steps of one session
    worker0 = shards_of_worker(0, 2, NUM_SHARDS)
    step_filter = f"session_id = '{probe}' AND seq > {since}"

    async def tail() -> Any:
        version = await store.steps.version()
        return await read_steps_between_versions(store.steps, version - 20, version)

    queries: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (f"steps: read_steps ({step_filter})", lambda: read_steps(store.steps, probe, since=since)),
        ("steps: raw query, same filter", lambda: store.steps.query().where(step_filter).to_arrow()),
        ("steps: tail, last 20 versions", tail),
        ("actions: queue.pending(32 shards)", lambda: queue.pending(worker0)),
        (
            "actions: raw query, same filter",
            lambda: store.actions.query().where(queue._claimable_clause(worker0)).to_arrow(),
        ),
    ]

    async def measure(repeats: int) -> dict[str, Any]:
        out = {}
        for name, call in queries:
            samples, result = await timed(call, repeats)
            rows = result.num_rows if isinstance(result, pa.Table) else len(result)
            out[name] = {**lat(samples), "rows": rows}
        return out

    before_frags = {"steps": await fragments(store.steps), "actions": await fragments(store.actions)}
    before = await measure(cfg["reads_before"])
    report = await run_maintenance(store)
    after_frags = {"steps": await fragments(store.steps), "actions": await fragments(store.actions)}
    after = await measure(cfg["reads_after"])
    extra = [StepRecord.to_arrow(step_rows(rng, [sessions[0]], 5, seqs)) for _ in range(50)]
    steps_add_after = await append_all(store.steps, extra)

    return {
        "appends_per_table": count,
        "fill_seconds": round(fill_s, 2),
        "fragments_before": before_frags,
        "fragments_after": after_frags,
        "append_first_100": {"steps": lat(steps_add[:100]), "actions": lat(actions_add[:100])},
        "append_last_100": {"steps": lat(steps_add[-100:]), "actions": lat(actions_add[-100:])},
        "append_after_maintenance": {"steps": lat(steps_add_after)},
        "reads_before": before,
        "reads_after": after,
        "maintenance_seconds": round(report.seconds, 2),
        "maintenance_tables": {
            t.table: {
                "seconds": round(t.seconds, 2),
                "fragments_removed": t.fragments_removed,
                "fragments_added": t.fragments_added,
                "indexes_created": t.indexes_created,
                "skipped": t.skipped,
            }
            for t in report.tables
        },
    }


# -- report -----------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    if "writes" in results:
        table(
            "1. Step writes (commit = the add/flush commit; ack = submit -> durable)",
            ["mode", "batch", "commits", "rows/s", "commit p50 ms", "commit p99 ms", "ack p50 ms", "ack p99 ms"],
            [
                [
                    r["mode"],
                    r["batch"],
                    r["commits"],
                    r["rows_per_s"],
                    r["commit"]["p50_ms"],
                    r["commit"]["p99_ms"],
                    r["ack"]["p50_ms"],
                    r["ack"]["p99_ms"],
                ]
                for r in results["writes"]
            ],
        )
    if "claims" in results:
        table(
            f"2. Queue: actions claimed + completed per second ({results['config']['claim_window']:.0f} s window "
            f"per row, {results['config']['actions']:,} pending over {NUM_SHARDS} shards, "
            f"claim_batch {results['config']['claim_batch']})",
            [
                "procs",
                "shards",
                "claims/s",
                "claim p50 ms",
                "claim p99 ms",
                "complete p50 ms",
                "complete p99 ms",
                "lost races",
                "errors",
                "exactly once",
            ],
            [
                [
                    r["procs"],
                    r["shards"],
                    r["claims_per_s"],
                    r["claim"]["p50_ms"],
                    r["claim"]["p99_ms"],
                    r["complete"]["p50_ms"],
                    r["complete"]["p99_ms"],
                    r["lost_races"],
                    r["errors"],
                    "yes" if r["exactly_once"] else "NO",
                ]
                for r in results["claims"]
            ],
        )
    if "reads" in results:
        r = results["reads"]
        fb, fa = r["fragments_before"], r["fragments_after"]
        rows = []
        for name, before in r["reads_before"].items():
            after = r["reads_after"][name]
            rows.append([name, before["rows"], before["p50_ms"], before["p99_ms"], after["p50_ms"], after["p99_ms"]])
        last, later = r["append_last_100"]["steps"], r["append_after_maintenance"]["steps"]
        rows.append(["steps: append of 5 rows", 5, last["p50_ms"], last["p99_ms"], later["p50_ms"], later["p99_ms"]])
        table(
            f"3. Reads before/after run_maintenance (fragments steps {fb['steps']:,} -> {fa['steps']:,}, "
            f"actions {fb['actions']:,} -> {fa['actions']:,})",
            ["query", "rows", "before p50 ms", "before p99 ms", "after p50 ms", "after p99 ms"],
            rows,
        )
        print(
            f"\nrun_maintenance: {r['maintenance_seconds']:.2f} s ("
            + ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in r["maintenance_tables"].items() if v["seconds"] >= 0.05)
            + f"); {r['appends_per_table']:,} appends per table took {r['fill_seconds']:.1f} s "
            f"(steps append p50 {r['append_first_100']['steps']['p50_ms']:.1f} ms for the first 100, "
            f"{r['append_last_100']['steps']['p50_ms']:.1f} ms for the last 100)"
        )


async def main_async(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    cfg = QUICK if args.quick else FULL
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {
        "config": {
            "quick": args.quick,
            "num_shards": NUM_SHARDS,
            "claim_batch": args.claim_batch,
            "actions": cfg["actions"],
            "claim_window": cfg["claim_window"],
            "fragments": cfg["fragments"],
            "commits": cfg["commits"],
        },
        "env": {
            "python": platform.python_version(),
            "lancedb": lancedb.__version__,
            "pyarrow": pa.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    started = time.perf_counter()
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("writes", lambda: bench_writes(root, cfg)),
        ("claims", lambda: bench_claims(root, cfg, args.claim_batch)),
        ("reads", lambda: bench_reads(root, cfg)),
    ]
    results["part_seconds"] = {}
    for name, run in steps:
        if name not in parts:
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        results[name] = await run()
        results["part_seconds"][name] = round(time.perf_counter() - t, 1)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--out-dir", help="where the databases go (default: a temporary directory, removed after)")
    parser.add_argument("--parts", default="writes,claims,reads", help="comma-separated subset of writes,claims,reads")
    parser.add_argument(
        "--claim-batch",
        type=int,
        default=20,
        help="ActionQueue claim_batch (default 20: the config's 200 gives only a few claims per window)",
    )
    parser.add_argument("--claim-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.claim_worker:
        asyncio.run(claim_worker(json.loads(args.claim_worker)))
        return
    root = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="agentd-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = asyncio.run(main_async(args, root))
        print_report(results)
        print(f"\ntotal {results['total_seconds']} s ({'quick' if args.quick else 'full'} run, {os.cpu_count()} cpus)")
        blob = json.dumps(results, indent=1)
        (root / "results.json").write_text(blob)
        print("\nJSON:")
        print(blob)
    finally:
        if not args.out_dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
