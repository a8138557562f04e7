"""Gateway benchmark: commit-to-receive latency and messages/s, against a raw websockets baseline.

Scenarios (each run twice in the same run: through the gateway, then raw):
  one-room   1 room x N subscribers (run::a1::s1), steps of one session
  many-rooms N rooms x 1 subscriber (run::a1::s<i>), one step per session per commit

Processes: the gateway (``run_gateway`` on uvloop) and a writer are fresh interpreters started by
this script; the N clients run in this process on uvloop. The raw baseline is a websockets
server (its own process) that ``broadcast()``s frames of the same size, so the ratio shows what
tailing LanceDB, pacing and bounded queues cost on top of plain fan-out.

  latency  gateway: client receipt - writer's commit return;   raw: receipt - send
  msg/s    burst phase: deliveries / (last receipt - first commit (or send) of the burst)

Usage: python bench/gateway_bench.py [--subscribers 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SEQ = re.compile(rb'"seq":(\d+)')


# -- child processes -------------------------------------------------------------------------


async def writer_main(db: str, mode: str, sessions: int, paced: int, interval: float, burst: int) -> None:
    """Append steps; print {"seq": n, "t": commit-return time} per commit (n = seq of every session)."""
    from agentd.ids import shard_for
    from agentd.store import Store
    from agentd.store.steps import StepRecord
    from agentd.timeutil import utcnow

    store = await Store.open(db, 4)
    agent = "a1" if mode == "one" else "a2"
    names = ["s1"] if mode == "one" else [f"m{i}" for i in range(sessions)]

    async def commit(seq: int) -> None:
        rows = [
            StepRecord(
                session_id=sid,
                agent_id=agent,
                shard=shard_for(sid, 4),
                seq=seq,
                ts=utcnow(),
                text=f"step {seq}",
                state={"iteration": seq, "context": {"subject": "cats", "paused": False}},
            )
            for sid in names
        ]
        await store.steps.add(StepRecord.to_arrow(rows))
        print(json.dumps({"seq": seq, "t": time.time()}), flush=True)

    for seq in range(1, paced + 1):
        await commit(seq)
        await asyncio.sleep(interval)
    print(json.dumps({"burst_start": time.time()}), flush=True)
    for seq in range(paced + 1, paced + burst + 1):
        await commit(seq)


async def baseline_main() -> None:
    """Raw websockets: clients connect to /, a control connection on /control drives broadcasts."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: list[ServerConnection] = []

    async def run(ctl: ServerConnection, cmd: dict[str, Any]) -> None:
        pad = "x" * int(cmd["pad"])
        one = cmd["mode"] == "one"

        def tick(seq: int) -> None:
            t = time.time()
            if one:
                broadcast(clients, json.dumps({"type": "step", "room": "r", "seq": seq, "t": t, "pad": pad}))
            else:
                for i, conn in enumerate(clients):
                    broadcast([conn], json.dumps({"type": "step", "room": f"r{i}", "seq": seq, "t": t, "pad": pad}))

        for seq in range(1, cmd["paced"] + 1):
            tick(seq)
            await asyncio.sleep(cmd["interval"])
        await ctl.send(json.dumps({"burst_start": time.time()}))
        for seq in range(cmd["paced"] + 1, cmd["paced"] + cmd["burst"] + 1):
            tick(seq)
            await asyncio.sleep(0)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/control":
            async for message in ws:
                await run(ws, json.loads(message))
            return
        clients.append(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.remove(ws)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=4) as server:
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.Future()


# -- measurement -----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    burst_messages: int = 0
    burst_seconds: float = 0.0
    missing: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99(self) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")

    @property
    def rate(self) -> float:
        return self.burst_messages / self.burst_seconds if self.burst_seconds > 0 else float("nan")

    def row(self) -> str:
        p50, p99, rate = self.p50, self.p99, self.rate
        return f"{self.name:<36} {p50:>9.1f} {p99:>9.1f} {rate:>12,.0f} {self.missing:>8}"


class Clients:
    """N websockets clients in this process recording (seq, receipt, send time) per frame.

    Gateway frames are matched by a regex on ``"seq":`` (no JSON parse: the client process is
    the bottleneck on this machine); raw frames carry their send time ``t``.
    """

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.got: list[list[tuple[int, float, float]]] = []
        self.conns: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        # Frames recorded so far, and an event set once they reach ``target``.
        self.total = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def open(self, url: str, n: int, rooms: list[str] | None) -> None:
        from websockets.asyncio.client import connect

        async def one(i: int) -> None:
            ws = await connect(url, max_size=2**24, max_queue=64, compression=None)
            self.conns.append(ws)
            sink: list[tuple[int, float, float]] = []
            self.got.append(sink)
            if rooms is not None:
                await ws.send(json.dumps({"op": "subscribe", "room": rooms[i], "since": 0}))
            self.tasks.append(asyncio.create_task(self._read(ws, sink)))

        for start in range(0, n, 100):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))

    async def _read(self, ws: Any, sink: list[tuple[int, float, float]]) -> None:
        try:
            async for message in ws:
                t = time.time()
                if self.raw:
                    frame = json.loads(message)
                    sink.append((frame["seq"], t, frame["t"]))
                elif message.startswith('{"type":"step"'):
                    found = SEQ.search(message.encode())
                    if not found:
                        continue
                    sink.append((int(found.group(1)), t, 0.0))
                else:
                    continue
                self.total += 1
                if self.target and self.total >= self.target:
                    self.reached.set()
        except Exception:
            return

    def count(self) -> int:
        return self.total

    async def wait_for(self, want: int, timeout: float) -> None:
        self.target = want
        if self.total < want:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.reached.wait()

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.conns), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def plan(args: argparse.Namespace, mode: str) -> tuple[int, float, int]:
    if mode == "one":
        return args.paced, args.interval, args.burst
    return args.paced_many, args.interval_many, args.burst_many


def summarise(
    name: str, clients: Clients, paced: int, total: int, burst_start: float, sent: dict[int, float]
) -> Result:
    """Latency over the paced phase; messages/s over the burst phase."""
    result = Result(name)
    last_burst = burst_start
    for sink in clients.got:
        for seq, received, t_sent in sink:
            if seq <= paced:
                result.latencies.append(received - (t_sent if clients.raw else sent[seq]))
            else:
                result.burst_messages += 1
                last_burst = max(last_burst, received)
    result.burst_seconds = last_burst - burst_start
    result.missing = total - clients.count()
    return result


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """A fresh interpreter via Popen (no fork-time hooks run: this process has imported lancedb)."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def lines(stream: Any) -> AsyncIterator[bytes]:
    while True:
        line = await asyncio.to_thread(stream.readline)
        if not line:
            return
        yield line


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def label(kind: str, mode: str, n: int) -> str:
    return f"{kind} {'1 room x ' + str(n) + ' subs' if mode == 'one' else str(n) + ' rooms x 1 sub'}"


async def gateway_run(args: argparse.Namespace, db: str, port: int, mode: str) -> Result:
    n = args.subscribers
    rooms = ["run::a1::s1"] * n if mode == "one" else [f"run::a2::m{i}" for i in range(n)]
    clients = Clients(raw=False)
    await clients.open(f"ws://127.0.0.1:{port}/", n, rooms)
    await asyncio.sleep(1.0)  # let every snapshot arrive
    paced, interval, burst = plan(args, mode)
    writer = spawn(__file__, "--writer", db, mode, str(n), str(paced), str(interval), str(burst))
    commits: dict[int, float] = {}
    burst_start = 0.0
    try:
        async for line in lines(writer.stdout):
            item = json.loads(line)
            if "burst_start" in item:
                burst_start = item["burst_start"]
            else:
                commits[item["seq"]] = item["t"]
        if await asyncio.to_thread(writer.wait, 60) != 0:
            assert writer.stderr is not None
            raise RuntimeError(writer.stderr.read().decode()[-2000:])
    finally:
        kill(writer)
    total = n * (paced + burst)
    await clients.wait_for(total, 60)
    result = summarise(label("gateway", mode, n), clients, paced, total, burst_start, commits)
    await clients.close()
    return result


async def baseline_run(args: argparse.Namespace, port: int, mode: str, pad: int) -> Result:
    from websockets.asyncio.client import connect

    n = args.subscribers
    clients = Clients(raw=True)
    await clients.open(f"ws://127.0.0.1:{port}/", n, None)
    await asyncio.sleep(0.5)
    paced, interval, burst = plan(args, mode)
    async with connect(f"ws://127.0.0.1:{port}/control") as ctl:
        cmd = {"mode": mode, "paced": paced, "burst": burst, "interval": interval, "pad": pad}
        await ctl.send(json.dumps(cmd))
        burst_start = json.loads(await ctl.recv())["burst_start"]
        total = n * (paced + burst)
        await clients.wait_for(total, 60)
    result = summarise(label("raw broadcast", mode, n), clients, paced, total, burst_start, {})
    await clients.close()
    return result


def step_frame_size() -> int:
    from agentd.gateway.protocol import step_body_json, step_frame
    from agentd.store.steps import StepRecord
    from agentd.timeutil import utcnow

    record = StepRecord(
        session_id="s1",
        agent_id="a1",
        shard=1,
        seq=100,
        ts=utcnow(),
        text="step 100",
        state={"iteration": 100, "context": {"subject": "cats", "paused": False}},
    )
    return len(step_frame("run::a1::s1", step_body_json(record)))


async def first_match(stream: Any, pattern: str) -> int:
    async for line in lines(stream):
        found = re.search(pattern, line.decode())
        if found:
            return int(found.group(1))
    raise RuntimeError(f"child exited before printing {pattern!r}")


async def healthz(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    return dict(json.loads(raw.partition(b"\r\n\r\n")[2]))


async def bench(args: argparse.Namespace) -> None:
    from agentd.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    db = str(tmp / "db")
    store = await Store.open(db, 4)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        code = (
            "import sys; from agentd.config import Settings; from agentd.gateway import run_gateway; "
            f"sys.exit(run_gateway(Settings(storage={{'uri': {db!r}, 'num_shards': 4}}, "
            f"gateway={{'port': 0, 'poll_interval': {args.poll_interval}, 'max_queue': 1000}})))"
        )
        gateway = spawn("-c", code)
        procs.append(gateway)
        gw_port = await first_match(gateway.stderr, r"gateway listening on ws://[^:]+:(\d+)")
        # Keep draining the gateway's log so that it never blocks on a full pipe.
        drain = asyncio.create_task(asyncio.to_thread(gateway.stderr.read))  # type: ignore[union-attr]
        baseline = spawn(__file__, "--baseline-server")
        procs.append(baseline)
        raw_port = await first_match(baseline.stdout, r'"port": (\d+)')
        bare = json.dumps({"type": "step", "room": "r", "seq": 100, "t": 0.0, "pad": ""})
        pad = max(0, step_frame_size() - len(bare))
        results = []
        reads = []
        for mode in ("one", "many"):
            results.append(await gateway_run(args, db, gw_port, mode))
            reads.append((await healthz(gw_port))["tail"]["steps"]["last_read_ms"])
            results.append(await baseline_run(args, raw_port, mode, pad))
            # What the daemon's maintenance does: keep the tail's range scan cheap.
            await store.steps.optimize()
        print(
            f"\ngateway benchmark: {args.subscribers} subscribers, frame ~{step_frame_size()} B, "
            f"poll_interval={args.poll_interval}s, {os.cpu_count()} CPUs shared by clients, gateway, writer"
        )
        print(f"one-room: {args.paced} paced steps every {args.interval}s, then a burst of {args.burst}")
        print(
            f"many-rooms: {args.paced_many} paced commits of {args.subscribers} steps every "
            f"{args.interval_many}s, then a burst of {args.burst_many} commits"
        )
        print(f"\n{'scenario':<36} {'p50 ms':>9} {'p99 ms':>9} {'burst msg/s':>12} {'missing':>8}")
        for result in results:
            print(result.row())
        for (gw, raw), read_ms in zip(zip(results[::2], results[1::2], strict=True), reads, strict=True):
            print(
                f"{gw.name}: p50 {gw.p50 / raw.p50:.1f}x raw, burst msg/s {gw.rate / raw.rate:.2f}x raw; "
                f"last tail read {read_ms} ms"
            )
        drain.cancel()
    finally:
        for proc in procs:
            kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--paced", type=int, default=40, help="one-room: paced steps")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--burst", type=int, default=200, help="one-room: burst steps")
    parser.add_argument("--paced-many", type=int, default=20, help="many-rooms: paced commits")
    parser.add_argument("--interval-many", type=float, default=0.2)
    parser.add_argument("--burst-many", type=int, default=20, help="many-rooms: burst commits")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="gateway poll_interval (default config)")
    parser.add_argument("--quick", action="store_true", help="100 subscribers, fewer steps")
    parser.add_argument("--writer", nargs=6, metavar=("DB", "MODE", "N", "PACED", "INTERVAL", "BURST"))
    parser.add_argument("--baseline-server", action="store_true")
    args = parser.parse_args()
    import uvloop

    if args.writer:
        db, mode, n, paced, interval, burst = args.writer
        uvloop.run(writer_main(db, mode, int(n), int(paced), float(interval), int(burst)))
        return
    if args.baseline_server:
        uvloop.run(baseline_main())
        return
    if args.quick:
        args.subscribers, args.paced, args.burst, args.paced_many, args.burst_many = 100, 50, 100, 10, 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.subscribers + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
