"""Benchmark of recovery: a killed worker's sessions ticking again, with 1,000 joke sessions running.

The target (README, supervisor design): after a worker dies, every session it hosted ticks again
within 2 s; the warm spare (a worker interpreter started ahead, everything imported, waiting)
takes the dead worker's slot so that no interpreter start or import is paid on that path. This
script measures it on the shipped defaults, beside raw baselines taken in the same run
(DESIGN.md §10), because performance is measured by bench scripts, never by timed tests:

- baselines: a bare interpreter start (``python -c pass``) and a cold worker's import
  (``python -c "import agentd.worker"``): what a worker restarted without the warm spare pays
  before it even opens the database; p50 over 10 runs each;
- the daemon on the shipped defaults (2 workers, warm spare on, 1 s ticks, the gateway and the
  metrics endpoint on free ports) on a temporary database under the system's temp directory,
  with ``agentctl create joke --count N`` sessions running;
- K kills with SIGKILL, alternating worker 0 and worker 1. Before each one the daemon's status
  must show both workers ready and a ready spare (if no spare comes within a minute, the kill
  happens anyway and its row says so: that is the cold path). Then the ``steps`` table is read
  (read-only, from this process) until every session the victim hosted (by ``shard_for`` and
  the victim's shards in the status) has a tick written by a newer epoch with a timestamp after
  the kill, or 20 s pass. The figure of a kill is taken from the steps' own timestamps: the last
  of those sessions' first ticks after the kill, minus the time of the kill (not when this
  script noticed, which would add its own polling). The first read is made only 2 s after the
  kill, so that the script's scans of the table do not compete with the recovery for the CPU
  inside the window being measured; the status then says whether the spare took the slot.
  A resumed session's first tick comes at a random phase within a window of 100 us per resumed
  session (``RESUME_TICK_COST`` in agentd.runtime.host; 50 ms for 500 sessions), so the first
  and the last of those ticks are close together.
- the restart backoff of each kill, from the daemon's log: the first death of a slot in
  ``[daemon] crash_loop_window`` (60 s) is replaced at once, each further one waits
  ``restart_backoff_initial`` (0.2 s) doubled per death, by design (a worker that keeps dying
  must not spin). Kills of the same slot here come about 6 s apart, so the later kills pay it;
  the last column shows the figure without it.

Usage::

    python bench/recovery_bench.py             # 1,000 sessions, 6 kills
    python bench/recovery_bench.py --quick     # 200 sessions, 3 kills
    python bench/recovery_bench.py --sessions 500 --kills 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for entry in (str(REPO), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from control_bench import CONFIG, Daemon, create_count, free_port, pct, timed_runs  # noqa: E402

from agentctl.transport import DaemonLost, NoDaemon, status  # noqa: E402
from agentd.config import load_settings  # noqa: E402
from agentd.ids import shard_for  # noqa: E402
from agentd.store import Store  # noqa: E402
from agentd.store.filesystem import filesystem_of  # noqa: E402
from agentd.store.sql import sql_in, sql_ts  # noqa: E402

TARGET_S = 2.0
RESUME_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 60.0
FIRST_READ_S = 2.0  # the first read of the steps table after a kill: outside the measured window
READ_EVERY_S = 0.5
SETTLE_S = 2.0  # after the slot and the spare are ready again, before the next kill


@dataclass
class Kill:
    """One kill and what followed it."""

    index: int
    victim_pid: int
    hosted_status: int | None  # the victim's "sessions" counter just before the kill
    moved: int  # the bench's sessions on the victim's shards
    spare_ready: bool  # a ready spare was there just before the kill
    spare_took: bool  # the slot's new pid is the spare seen before the kill (ready or not)
    new_pid: int | None
    new_hosts: int | None  # the new worker's "sessions" counter once the sessions ticked
    resumed_s: float | None  # the last first tick after the kill - the kill; None: not all in time
    first_s: float | None  # the first such tick - the kill
    missing: int  # victim sessions with no tick after the kill by the timeout
    reads: int  # reads of the steps table this kill took
    read_ms: float  # their mean duration
    backoff_s: float  # the restart delay the supervisor logged for this death (0 for the first)


def daemon_status(daemon: Daemon) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = status(daemon.socket, timeout=3)["status"]
    except (NoDaemon, DaemonLost, OSError, ValueError, KeyError):
        return None
    return found


def slots(found: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """The worker slots by index and the spare (None when there is none) of a status reply."""
    workers = {int(c["index"]): c for c in found["children"] if c["role"] == "worker" and c["index"] is not None}
    spare = next((c for c in found["children"] if c["role"] == "spare"), None)
    return workers, spare


def wait_slots(daemon: Daemon, workers: int, timeout: float) -> tuple[dict[str, Any] | None, bool]:
    """Wait for every worker slot ready and a ready spare: (the last status, whether the spare came).

    Without a spare by ``timeout``, returns the last status in which every worker was ready
    (None if even that never happened)."""
    deadline = time.monotonic() + timeout
    workers_ready: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise SystemExit(f"daemon exited:\n{daemon.log.read_text(errors='replace')[-3000:]}")
        found = daemon_status(daemon)
        if found is not None:
            slot, spare = slots(found)
            if len(slot) == workers and all(c["alive"] and c["ready"] for c in slot.values()):
                workers_ready = found
                if spare is not None and spare["alive"] and spare["ready"]:
                    return found, True
        time.sleep(0.2)
    return workers_ready, False


async def first_ticks(
    store: Store, shards: list[int], session_ids: set[str], after: datetime, epoch: int
) -> dict[str, float]:
    """Per session of ``session_ids``, the first tick written by a newer epoch than ``epoch`` and
    stamped after ``after`` (epoch seconds). A filtered read of two columns."""
    where = f"{sql_in('shard', shards)} AND kind = 'tick' AND ts > {sql_ts(after)} AND epoch > {int(epoch)}"
    rows = (await store.steps.query().where(where).select(["session_id", "ts"]).to_arrow()).to_pylist()
    first: dict[str, float] = {}
    for row in rows:
        sid = row["session_id"]
        if sid in session_ids:
            ts = row["ts"].timestamp()
            if sid not in first or ts < first[sid]:
                first[sid] = ts
    return first


def one_kill(
    daemon: Daemon,
    runner: asyncio.Runner,
    store: Store,
    ids: list[str],
    num_shards: int,
    index: int,
    before: dict[str, Any],
    spare_ready: bool,
) -> Kill:
    workers, spare = slots(before)
    victim = workers[index]
    shards = [int(s) for s in victim["shards"]]
    hosted = {sid for sid in ids if shard_for(sid, num_shards) in set(shards)}
    spare_pid = int(spare["pid"]) if spare is not None and spare["alive"] else None
    killed_at = time.time()
    os.kill(int(victim["pid"]), signal.SIGKILL)
    after = datetime.fromtimestamp(killed_at, UTC)
    time.sleep(FIRST_READ_S)
    first: dict[str, float] = {}
    reads: list[float] = []
    deadline = killed_at + RESUME_TIMEOUT_S
    while True:
        started = time.perf_counter()
        first = runner.run(first_ticks(store, shards, hosted, after, int(victim["epoch"] or 0)))
        reads.append((time.perf_counter() - started) * 1000)
        if len(first) == len(hosted) or time.time() > deadline:
            break
        time.sleep(READ_EVERY_S)
    found = daemon_status(daemon)
    new = slots(found)[0].get(index) if found is not None else None
    logged = re.findall(rf"restarting worker-{index} in ([0-9.]+)s", daemon.log.read_text(errors="replace"))
    new_pid = int(new["pid"]) if new is not None else None
    done = len(first) == len(hosted)
    return Kill(
        index=index,
        victim_pid=int(victim["pid"]),
        hosted_status=victim.get("sessions"),
        moved=len(hosted),
        spare_ready=spare_ready,
        spare_took=spare_pid is not None and new_pid == spare_pid,
        new_pid=new_pid,
        new_hosts=new.get("sessions") if new is not None else None,
        resumed_s=max(first.values()) - killed_at if done and first else None,
        first_s=min(first.values()) - killed_at if first else None,
        missing=len(hosted) - len(first),
        reads=len(reads),
        read_ms=sum(reads) / len(reads),
        backoff_s=float(logged[-1]) if logged else 0.0,
    )


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 sessions, 3 kills")
    parser.add_argument("--sessions", type=int, help="joke sessions running (default 1,000; --quick 200)")
    parser.add_argument("--kills", type=int, help="workers killed, alternating 0 and 1 (default 6; --quick 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (daemon log)")
    args = parser.parse_args()
    sessions = args.sessions or (200 if args.quick else 1000)
    kills = args.kills or (3 if args.quick else 6)
    signal.signal(signal.SIGTERM, _interrupted)
    load_before = os.getloadavg()

    bare = timed_runs([sys.executable, "-c", "pass"], 10)
    cold = timed_runs([sys.executable, "-c", "import agentd.worker"], 10)
    tmp = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    config = tmp / "config.toml"
    config.write_text(CONFIG.format(db=tmp / "db", gateway_port=free_port(), metrics_port=free_port()))
    settings = load_settings(config)
    workers = settings.daemon.workers
    num_shards = settings.storage.num_shards
    fs = filesystem_of(tmp.parent).describe()
    results: list[Kill] = []
    notes: list[str] = []
    create_s = 0.0
    ids: list[str] = []
    started_ready = time.perf_counter()
    daemon = Daemon(config, tmp / "daemon.log")
    interrupted = False
    try:
        daemon.wait_ready()
        ready_s = time.perf_counter() - started_ready
        print(f"daemon ready in {ready_s:.1f}s; creating {sessions} sessions", flush=True)
        create_s, ids, code = create_count(config, sessions)
        print(f"created {len(ids)} sessions in {create_s:.1f}s (exit {code})", flush=True)
        if not ids:
            raise SystemExit(f"no session created:\n{daemon.log.read_text(errors='replace')[-3000:]}")
        with asyncio.Runner() as runner:
            store = runner.run(Store.open(settings.storage.uri, num_shards, create=False))
            for k in range(kills):
                index = k % workers
                waited = time.monotonic()
                before, spare_ready = wait_slots(daemon, workers, READY_TIMEOUT_S)
                if before is None:
                    notes.append(f"kill {k + 1}: the workers were not all ready within {READY_TIMEOUT_S:.0f}s; stopped")
                    break
                if not spare_ready:
                    notes.append(f"kill {k + 1}: no ready spare within {READY_TIMEOUT_S:.0f}s; killed without one")
                wait_s = time.monotonic() - waited
                time.sleep(SETTLE_S)
                before = daemon_status(daemon) or before
                spare_ready = spare_ready and (slots(before)[1] or {}).get("ready") is True
                kill = one_kill(daemon, runner, store, ids, num_shards, index, before, spare_ready)
                results.append(kill)
                shown = f"{kill.resumed_s:.2f}s" if kill.resumed_s is not None else f"{kill.missing} missing"
                print(
                    f"kill {k + 1}/{kills}: worker-{index} (pid {kill.victim_pid}, {kill.moved} sessions) "
                    f"-> resumed {shown}, spare took the slot: {'yes' if kill.spare_took else 'no'} "
                    f"(slots and spare ready {wait_s:.1f}s after the previous read)",
                    flush=True,
                )
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; cleaning up", flush=True)
    finally:
        daemon.kill()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted and not results:
        raise SystemExit(130)
    report(bare, cold, sessions, len(ids), create_s, workers, num_shards, fs, results, notes, load_before)


def report(
    bare: list[float],
    cold: list[float],
    sessions: int,
    created: int,
    create_s: float,
    workers: int,
    num_shards: int,
    fs: str,
    results: list[Kill],
    notes: list[str],
    load_before: tuple[float, float, float],
) -> None:
    load = os.getloadavg()
    print()
    print(
        f"recovery after SIGKILL of a worker, {created} of {sessions} joke sessions running (shipped defaults: "
        f"{workers} workers, {num_shards} shards, warm spare on); {os.cpu_count()} CPUs, load avg "
        f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} at the start, "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; database on {fs}; "
        f"`agentctl create joke --count {sessions}` took {create_s:.1f}s"
    )
    print()
    print("| baseline (10 runs) | p50 | max |")
    print("|---|---:|---:|")
    print(f"| `python -c pass` | {pct(bare, 50):.0f} ms | {max(bare):.0f} ms |")
    print(
        f'| `python -c "import agentd.worker"` (a cold worker\'s import) '
        f"| {pct(cold, 50):.0f} ms | {max(cold):.0f} ms |"
    )
    print()
    print(
        "| kill | worker | sessions moved (status counter) | spare ready | spare took slot | new worker hosts "
        "| first tick after kill | resumed (last first tick) | steps reads (mean ms) | restart backoff "
        "| resumed without the backoff |"
    )
    print("|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for n, k in enumerate(results, 1):
        first = f"{k.first_s:.2f} s" if k.first_s is not None else "-"
        last = f"{k.resumed_s:.2f} s" if k.resumed_s is not None else f"not all: {k.missing} missing after 20 s"
        net = f"{k.resumed_s - k.backoff_s:.2f} s" if k.resumed_s is not None else "-"
        print(
            f"| {n} | {k.index} | {k.moved} ({k.hosted_status}) | {'yes' if k.spare_ready else 'no'} "
            f"| {'yes' if k.spare_took else 'no'} | {k.new_hosts} | {first} | {last} | {k.reads} ({k.read_ms:.0f}) "
            f"| {k.backoff_s:.2f} s | {net} |"
        )
    for note in notes:
        print(f"note: {note}")
    resumed = [k.resumed_s for k in results if k.resumed_s is not None]
    print()
    if not results:
        print("no kill measured")
        return
    if len(resumed) < len(results):
        print(f"{len(results) - len(resumed)} of {len(results)} kills did not resume every session within 20 s")
    if resumed:
        worst = max(resumed) if len(resumed) == len(results) else float("inf")
        met = "met" if worst <= TARGET_S else "not met"
        print(
            f"resumed: p50 {pct(resumed, 50):.2f} s, max {max(resumed):.2f} s over {len(resumed)} kills; "
            f"target <= {TARGET_S:.0f} s: {met} "
            f"({pct(resumed, 50) * 1000 / pct(bare, 50):.1f}x a bare interpreter start, "
            f"{pct(resumed, 50) * 1000 / pct(cold, 50):.1f}x a cold worker's import, p50)"
        )
        net = [k.resumed_s - k.backoff_s for k in results if k.resumed_s is not None]
        print(f"without the restart backoff: p50 {pct(net, 50):.2f} s, max {max(net):.2f} s")


if __name__ == "__main__":
    main()
