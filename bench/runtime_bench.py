"""Benchmark of the session runtime: N JokeAgent sessions in one worker process vs. bare uvloop tasks.

For each size N (default 1k, 5k, 10k) three fresh interpreters run one after the other, each
started with ``sys.executable`` so that RSS and CPU time belong to that run alone:

baseline  N bare uvloop tasks, each ``while True: await asyncio.sleep(1)``, phases spread
             uniformly over one second; lateness = wake time - (sleep start + 1 s).
runtime   a real ``SessionHost`` (the worker's object: claim loop, conversation watcher,
             ``BatchingWriter`` with the default settings: flush every 0.25 s) on a fresh
             LanceDB directory, hosting N JokeAgent sessions at a 1 s heartbeat on the offline
             LLM; every tick persists a step and the session snapshot. Sessions are created by
             writing their ``sessions`` rows directly, then starting the host, which resumes them
             (the steady state is what is measured, not the creation path).
idle      the same with every session paused: the memory a parked session costs.

After a warm-up, each run measures over ``--duration`` seconds: tick lateness p50/p99/max
(the runtime's own ``host.lateness``), process CPU % of one core (psutil ``cpu_times`` delta
over wall time, native LanceDB threads included; in brackets the event-loop thread alone),
RSS per session ((RSS - RSS with 0 sessions) / N; the 0-session RSS is taken in the same
process after imports, store open, a host started and stopped with no sessions, and the N
session rows written, i.e. just before the host that resumes them starts), steps/s committed
(writer stats) and the writer's flush commit p50/p99 (steps append + sessions merge_insert).
The JSON also has the garbage collector's activity in the window and the 1-minute load
average: on a shared machine, a load above the core count makes lateness meaningless.

Caveats: the running RSS includes LanceDB's metadata cache, which grows with every commit
(~1 MB/s at 10k steps/s with the default, effectively unbounded, cache size) and is not a
per-session cost; the idle figure is the per-session one. Lateness has the loop's 1 ms timer
resolution.

Usage::

    python bench/runtime_bench.py                 # 1k, 5k, 10k; 20 s windows (~3.5 minutes)
    python bench/runtime_bench.py --quick         # 1k and 5k, 5 s windows (< 1 minute)
    python bench/runtime_bench.py --sizes 10000 --duration 30
    python bench/runtime_bench.py --box           # also 2 x 10k processes at once (~35 s more)

Prints a table and a final JSON blob (also written to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

SUBJECTS = ("cats", "databases", "coffee", "compilers", "mondays", "trains", "gardening", "rust", "jazz", "tax")
NUM_SHARDS = 64


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _loop_cpu() -> float:
    """CPU seconds of the main thread (the event loop; on Linux its thread id is the pid)."""
    pid = os.getpid()
    for thread in psutil.Process().threads():
        if thread.id == pid:
            return float(thread.user_time + thread.system_time)
    return math.nan


class GcWatch:
    """Collections of the cyclic garbage collector and their pauses, per generation (diagnostics)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()

    def summary(self) -> dict[str, Any]:
        full = self.pauses[2]
        young = self.pauses[0] + self.pauses[1]
        return {
            "gen2_count": len(full),
            "gen2_max_ms": round(max(full) * 1000, 1) if full else 0.0,
            "gen01_count": len(young),
            "gc_total_ms": round(sum(full + young) * 1000, 1),
            "tracked_objects": len(gc.get_objects()),
        }


def _pct(samples: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of samples in seconds, in milliseconds."""
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000, 2)


# -- children ---------------------------------------------------------------------------------


async def _baseline(n: int, warmup: float, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    measuring = False
    rss0 = _rss()

    async def sleeper(offset: float) -> None:
        await asyncio.sleep(offset)
        while True:
            started = loop.time()
            await asyncio.sleep(1.0)
            if measuring:
                samples.append(loop.time() - started - 1.0)

    rng = random.Random(1)
    tasks = [asyncio.create_task(sleeper(rng.random())) for _ in range(n)]
    await asyncio.sleep(warmup)
    measuring = True
    watch = GcWatch()
    cpu0, loop0, t0 = _cpu(), _loop_cpu(), time.perf_counter()
    await asyncio.sleep(duration)
    measuring = False
    cpu1, loop1, t1 = _cpu(), _loop_cpu(), time.perf_counter()
    gcs = watch.summary()
    rss1 = _rss()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = t1 - t0
    return {
        "kind": "baseline",
        "n": n,
        "wall_s": round(wall, 2),
        "ticks": len(samples),
        "ticks_per_s": round(len(samples) / wall, 1),
        "lateness_p50_ms": _pct(samples, 50),
        "lateness_p99_ms": _pct(samples, 99),
        "lateness_max_ms": round(max(samples) * 1000, 2) if samples else None,
        "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "cpu_loop_pct": round(100 * (loop1 - loop0) / wall, 1),
        "rss0_mb": round(rss0 / 2**20, 1),
        "rss_mb": round(rss1 / 2**20, 1),
        "rss_per_session_kb": round((rss1 - rss0) / n / 1024, 2),
        "gc": gcs,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _session_rows(n: int, paused: bool) -> Any:
    from agentd.ids import shard_for
    from agentd.store.sessions import SessionRecord
    from agentd.timeutil import utcnow

    now = utcnow()
    records = []
    for i in range(n):
        sid = f"s-bench-{i:06d}"
        subject = SUBJECTS[i % len(SUBJECTS)]
        records.append(
            SessionRecord(
                session_id=sid,
                agent_id=f"a-bench-{i:06d}",
                agent_type="joke",
                shard=shard_for(sid, NUM_SHARDS),
                status="paused" if paused else "running",
                config={"subject": subject},
                context={"subject": subject, "style": None, "jokes": 0, "paused": paused},
                created_at=now,
                updated_at=now,
            )
        )
    return SessionRecord.to_arrow(records)


async def _runtime(n: int, warmup: float, duration: float, paused: bool) -> dict[str, Any]:
    from agentd.config import load_settings
    from agentd.llm.offline import OfflineLLM
    from agentd.runtime.host import SessionHost
    from agentd.store import Store

    root = Path(tempfile.mkdtemp(prefix="agentd-runtime-bench-"))
    try:
        settings = load_settings(
            db=str(root / "db"),
            overrides={"storage": {"num_shards": NUM_SHARDS}, "runtime": {"heartbeat_interval": 1.0}},
        )
        store = await Store.open(settings.storage.uri, NUM_SHARDS)
        shards = list(range(NUM_SHARDS))
        llm = OfflineLLM(seed=1)

        # RSS with 0 sessions: everything imported, the store open, a host run briefly and stopped.
        empty = SessionHost(store, settings, shards, llm, name="bench-empty")
        await empty.start()
        claim = asyncio.create_task(empty.run())
        await asyncio.sleep(1.0)
        await empty.stop()
        await claim
        del empty, claim

        t = time.perf_counter()
        rows = _session_rows(n, paused)
        await store.sessions.add(rows)
        del rows
        write_s = time.perf_counter() - t
        rss0 = _rss()  # the rows are stored, nothing is hosted yet

        t = time.perf_counter()
        host = SessionHost(store, settings, shards, llm, name="bench")
        resumed = await host.start()
        claim = asyncio.create_task(host.run())
        start_s = time.perf_counter() - t
        assert resumed == n, f"resumed {resumed} of {n} sessions"

        await asyncio.sleep(warmup)
        writer = host.writer
        stats = writer.stats
        host.lateness.reset()
        steps0, flushes0 = stats.steps, stats.flushes
        rss_samples: list[int] = []
        watch = GcWatch()
        cpu0, loop0, t0 = _cpu(), _loop_cpu(), time.perf_counter()
        end = t0 + duration
        while (left := end - time.perf_counter()) > 0:
            await asyncio.sleep(min(1.0, left))
            rss_samples.append(int(psutil.Process().memory_info().rss))
        cpu1, loop1, t1 = _cpu(), _loop_cpu(), time.perf_counter()
        steps1, flushes1 = stats.steps, stats.flushes
        late = host.lateness.summary()
        commits = list(stats.commit_ms)[-(flushes1 - flushes0) :] if flushes1 > flushes0 else []
        gcs = watch.summary()
        rss1 = _rss()
        counters = host.counters()

        t = time.perf_counter()
        await host.stop(timeout=30)
        claim.cancel()
        await asyncio.gather(claim, return_exceptions=True)
        stop_s = time.perf_counter() - t
        wall = t1 - t0
        return {
            "kind": "idle" if paused else "runtime",
            "n": n,
            "wall_s": round(wall, 2),
            "ticks": late["count"],
            "ticks_per_s": round(late["count"] / wall, 1),
            "lateness_p50_ms": late["p50"] if late["count"] else None,
            "lateness_p99_ms": late["p99"] if late["count"] else None,
            "lateness_max_ms": late["max"] if late["count"] else None,
            "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "cpu_loop_pct": round(100 * (loop1 - loop0) / wall, 1),
            "rss0_mb": round(rss0 / 2**20, 1),
            "rss_mb": round(rss1 / 2**20, 1),
            "rss_max_mb": round(max(rss_samples) / 2**20, 1) if rss_samples else None,
            "rss_per_session_kb": round((rss1 - rss0) / n / 1024, 2),
            "steps_per_s": round((steps1 - steps0) / wall, 1),
            "flushes": flushes1 - flushes0,
            "commit_p50_ms": _pct([c / 1000 for c in commits], 50),
            "commit_p99_ms": _pct([c / 1000 for c in commits], 99),
            "write_rows_s": round(write_s, 2),
            "start_s": round(start_s, 2),
            "stop_s": round(stop_s, 2),
            "gc": gcs,
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "writer": counters["writer"],
            "statuses": counters["statuses"],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def child_main(kind: str, n: int, warmup: float, duration: float) -> None:
    import uvloop

    if kind == "baseline":
        result = uvloop.run(_baseline(n, warmup, duration))
    else:
        result = uvloop.run(_runtime(n, warmup, duration, paused=kind == "idle"))
    print(json.dumps(result), flush=True)


# -- parent -----------------------------------------------------------------------------------


def _child_args(kind: str, n: int, warmup: float, duration: float) -> list[str]:
    script = str(Path(__file__).resolve())
    timing = ["--warmup", str(warmup), "--duration", str(duration)]
    return [sys.executable, script, "--child", kind, "--n", str(n), *timing]


def _child_result(kind: str, n: int, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{kind} run with n={n} failed (exit {proc.returncode})")
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr[-2000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_child(kind: str, n: int, warmup: float, duration: float) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:  # no ./config.toml is picked up
        args = _child_args(kind, n, warmup, duration)
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    result = _child_result(kind, n, proc)
    result["run_s"] = round(time.perf_counter() - started, 1)
    return result


def run_box(n: int, warmup: float, duration: float, workers: int = 2) -> list[dict[str, Any]]:
    """``workers`` runtime processes of ``n`` sessions at once (each its own database): one box."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:
        procs = [
            subprocess.Popen(
                _child_args("runtime", n, warmup, duration),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        outputs = [(proc, *proc.communicate()) for proc in procs]
    results = []
    for i, (proc, out, err) in enumerate(outputs):
        completed = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        result = _child_result("runtime", n, completed)
        result["kind"] = f"box {i + 1}/{workers}"
        result["run_s"] = round(time.perf_counter() - started, 1)
        results.append(result)
    return results


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


COLUMNS = (
    ("sessions", "n"),
    ("run", "kind"),
    ("lateness p50 ms", "lateness_p50_ms"),
    ("p99 ms", "lateness_p99_ms"),
    ("max ms", "lateness_max_ms"),
    ("CPU % (loop thread)", "cpu"),
    ("RSS/session KB", "rss_per_session_kb"),
    ("steps/s committed", "steps_per_s"),
    ("commit p50/p99 ms", "commit"),
    ("vs baseline: CPU / RSS", "ratio"),
)


def _cell(result: dict[str, Any], key: str, base: dict[str, Any] | None) -> str:
    if key == "cpu":
        return f"{fmt(result['cpu_pct'])} ({fmt(result.get('cpu_loop_pct'))})"
    if key == "commit":
        if result.get("commit_p50_ms") is None:
            return "-"
        return f"{fmt(result['commit_p50_ms'])} / {fmt(result['commit_p99_ms'])}"
    if key == "ratio":
        if base is None or result is base or not base["cpu_pct"] or not base["rss_per_session_kb"]:
            return "-"
        cpu = "-" if result["kind"] == "idle" else f"{result['cpu_pct'] / base['cpu_pct']:.1f}x"
        return f"{cpu} / {result['rss_per_session_kb'] / base['rss_per_session_kb']:.1f}x"
    return fmt(result.get(key))


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (README-ready)."""
    lines = [
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    for result in results:
        base = next((r for r in results if r["n"] == result["n"] and r["kind"] == "baseline"), None)
        lines.append("| " + " | ".join(_cell(result, key, base) for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n in sorted({r["n"] for r in results}):
        base = next((r for r in results if r["n"] == n and r["kind"] == "baseline"), None)
        run = next((r for r in results if r["n"] == n and r["kind"] == "runtime"), None)
        if base is None or run is None:
            continue

        def ratio(key: str, b: dict[str, Any] = base, r: dict[str, Any] = run) -> float | None:
            if b.get(key) is None or r.get(key) is None or not b[key]:
                return None
            return round(float(r[key]) / float(b[key]), 1)

        out.append(
            {
                "n": n,
                "cpu_x": ratio("cpu_pct"),
                "rss_per_session_x": ratio("rss_per_session_kb"),
                "lateness_p99_x": ratio("lateness_p99_ms"),
            }
        )
    return out


def _progress(result: dict[str, Any]) -> None:
    print(
        f"{result['kind']:>8} n={result['n']:>6}: p99 {fmt(result.get('lateness_p99_ms'))} ms, "
        f"CPU {fmt(result['cpu_pct'])} %, RSS/session {fmt(result['rss_per_session_kb'])} KB "
        f"({result['run_s']} s, load {result['loadavg_1m']})",
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="comma-separated session counts (default 1000,5000,10000)")
    parser.add_argument("--duration", type=float, default=None, help="measuring window per run, seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default 5)")
    parser.add_argument("--quick", action="store_true", help="1k and 5k, 5 s windows")
    parser.add_argument("--no-idle", action="store_true", help="skip the paused-sessions runs")
    parser.add_argument(
        "--box", action="store_true", help="also run 2 runtime processes of the largest size at once (one 2-core box)"
    )
    parser.add_argument("--out", help="also write the JSON result here")
    parser.add_argument("--child", choices=("baseline", "runtime", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child_main(args.child, args.n, args.warmup or 0.0, args.duration or 0.0)
        return

    sizes = [int(s) for s in (args.sizes or ("1000,5000" if args.quick else "1000,5000,10000")).split(",")]
    duration = args.duration or (5.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for n in sizes:
        runs = ["baseline", "runtime"] + ([] if args.no_idle else ["idle"])
        for kind in runs:
            # Paused sessions do nothing: a short window is enough for their memory and CPU.
            idle = kind == "idle"
            result = run_child(kind, n, min(warmup, 3.0) if idle else warmup, min(duration, 3.0) if idle else duration)
            results.append(result)
            _progress(result)
    if args.box:
        for result in run_box(max(sizes), warmup, duration):
            results.append(result)
            _progress(result)
    print()
    print(markdown_table(results))
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "duration_s": duration,
        "warmup_s": warmup,
        "results": results,
        "ratios_vs_baseline": ratios(results),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print()
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
