"""What each old table version kept costs every operation (why ``[maintenance] keep_versions``).

The store opens tables with strong consistency, so every operation finds the latest version
first (on a local directory, by listing ``_versions``) and a commit lists it again. This bench
grows the real ``actions`` table of a scratch database to N versions (compacting every 50
commits, so the fragment count stays small and only the versions grow), then times, each over
``--samples`` runs:

- an append of one action (``ActionQueue.append_many``, the daemon's group commit),
- a read of one action by id (``ActionQueue.get``, what every claim and status read does),
- one ``optimize()`` (compaction plus the prune, what maintenance runs),

with N versions kept, and, after the largest N, again once they are pruned to a few, on the
same table with the same rows: that is the raw baseline of the same run. The prune is what
``agentd.store.version_window`` does to a busy table.

Usage::

    python bench/versions_bench.py                  # 100, 1000, 5000 versions
    python bench/versions_bench.py --versions 100 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agentd.queue import ActionQueue  # noqa: E402
from agentd.store import Store  # noqa: E402


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _measure(queue: ActionQueue, samples: int) -> tuple[list[float], list[float], float]:
    appends, reads = [], []
    for i in range(samples):
        if i % 10 == 0:  # outside the timings: keep the fragments few, so only the versions grow
            await queue.table.optimize(cleanup_older_than=timedelta(days=7))
        row = queue.new_action("pause", f"s-{i % 50}")
        started = time.perf_counter()
        await queue.append_many([row])
        appends.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await queue.get(row.action_id)
        reads.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    await queue.table.optimize(cleanup_older_than=timedelta(days=7))
    return appends, reads, (time.perf_counter() - started) * 1000


async def main(targets: list[int], samples: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="versions-bench-"))
    try:
        store = await Store.open(str(tmp / "db"), 64)
        queue = ActionQueue(store.actions, 64)
        manifests = tmp / "db" / "actions.lance" / "_versions"
        print("| versions kept | append p50 | append p99 | read by id p50 | read p99 | optimize |")
        print("|---:|---:|---:|---:|---:|---:|")

        def row(label: str, appends: list[float], reads: list[float], optimize: float) -> None:
            print(
                f"| {label} | {pct(appends, 50):.1f} ms | {pct(appends, 99):.1f} ms | {pct(reads, 50):.1f} ms "
                f"| {pct(reads, 99):.1f} ms | {optimize:.0f} ms |",
                flush=True,
            )

        for _ in range(30):  # warm up (the first commits of a process are slower), not measured
            await queue.append_many([queue.new_action("pause", "warm-up")])
        for target in sorted(targets):
            built = time.perf_counter()
            while len(os.listdir(manifests)) < target:
                await queue.append_many([queue.new_action("pause", "grow")])
                if len(os.listdir(manifests)) % 50 == 0:
                    await store.actions.optimize(cleanup_older_than=timedelta(days=7))
            kept = len(os.listdir(manifests))
            sys.stderr.write(f"{kept} versions built in {time.perf_counter() - built:.0f}s\n")
            row(f"{kept:,}", *await _measure(queue, samples))
        await asyncio.sleep(1.1)
        await store.actions.optimize(cleanup_older_than=timedelta(seconds=1))
        row(f"{len(os.listdir(manifests))} (baseline: pruned)", *await _measure(queue, samples))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--versions", type=int, nargs="+", default=[100, 1000, 5000], help="versions kept to measure at"
    )
    parser.add_argument("--samples", type=int, default=100, help="appends and reads per measurement")
    args = parser.parse_args()
    asyncio.run(main(args.versions, args.samples))
