"""Gateway benchmark: step committed -> received by a subscriber, through the real daemon.

Starts ``agentd run`` (a temp config: gateway on a free loopback port, ``[metrics] port = 0``,
shipped defaults otherwise: 2 workers, 1 s heartbeat, writer flush 0.25 s, gateway poll 0.05 s
plus the workers' commit hints), creates N joke sessions ticking in one batch (``agentctl create
joke --count N``), then measures two shapes with N WebSocket clients in this process:

  one-room   1 room x N subscribers   (run::gwbench::<one session>)
  many-rooms N rooms x 1 subscriber   (run::gwbench::<session i>)

The commit time of a step is the LanceDB commit of the table version that created its row:
after each shape the bench reads ``_row_created_at_version`` of every received (session, seq)
and the timestamps of those versions (``list_versions()``; a manifest's timestamp is taken
while the commit is made, within ~1 ms of the writer's ``add()`` returning). So
``committed -> received`` is the wall-clock time from the writer's commit to the client's
receipt, measured outside the gateway; ``tick -> received`` (from the step's own ``ts``, taken
when the tick ran, before the writer's batching) is printed beside it for context.

Raw baseline, same run and same machine load (the daemon keeps ticking, nobody is subscribed
to the gateway): a websockets server process replays the measured window's commits with plain
``broadcast()``: for each commit, frames of the same size to as many clients (one-room: all N;
many-rooms: one per session in the commit), at the commit's time shifted by whole heartbeats
(so in the same phase of the tick cycle, meeting the same CPU competition); latency = receipt -
send. The ratio is then what tailing LanceDB and the gateway's delivery add to plain fan-out.

Usage: python bench/gateway_bench.py [--sessions 1000] [--subscribers 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SEQ = re.compile(rb'"seq":(\d+)')
SESSION = re.compile(rb'"session_id":"([^"]+)"')
AGENT = "gwbench"


# -- raw baseline server (child process) -----------------------------------------------------


async def baseline_main() -> None:
    """Raw websockets: clients connect to /, a control connection on /control drives broadcasts."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    clients: list[ServerConnection] = []

    async def run(ctl: ServerConnection, cmd: dict[str, Any]) -> None:
        """Replay: at each (wall time, client indices), one frame to each of those clients."""
        pad = "x" * int(cmd["pad"])
        for seq, (at, targets) in enumerate(cmd["schedule"], 1):
            await asyncio.sleep(max(0.0, at - time.time()))
            t = time.time()
            if len(targets) == len(clients):  # one room: one frame to everybody
                broadcast(clients, json.dumps({"type": "step", "room": "r", "seq": seq, "t": t, "pad": pad}))
                continue
            for i in targets:
                frame = json.dumps({"type": "step", "room": f"r{i}", "seq": seq, "t": t, "pad": pad})
                broadcast([clients[i % len(clients)]], frame)
        await asyncio.sleep(0.5)
        await ctl.send(json.dumps({"done": len(cmd["schedule"])}))

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


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile in ms (values in seconds)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q / 100 + 0.5) - 1))] * 1000


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    # Gateway rows: tick ts -> received, for context.
    from_tick: list[float] = field(default_factory=list)
    expected: int = 0
    note: str = ""
    # Gateway rows: (commit wall time, client indices that received a step of that commit).
    schedule: list[tuple[float, list[int]]] = field(default_factory=list)
    # Gateway rows: commit wall time -> its slowest delivery (s), to see what the p99 is made of.
    worst: dict[float, float] = field(default_factory=dict)

    def row(self) -> str:
        tick = f"{pct(self.from_tick, 50):>7.0f} / {pct(self.from_tick, 99):<5.0f}" if self.from_tick else " " * 15
        return (
            f"{self.name:<34} {pct(self.latencies, 50):>8.1f} {pct(self.latencies, 99):>8.1f} "
            f"{pct(self.latencies, 100):>8.1f} {len(self.latencies):>8} {tick}  {self.note}"
        )


class Clients:
    """N websockets clients in this process recording (session, seq, receipt) per step frame.

    Gateway frames are matched by regex (no JSON parse: this process is the bottleneck on a
    2-core machine); raw frames carry their send time ``t``.
    """

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.got: list[tuple[bytes, int, float]] = []
        # Index of the client that received each entry of ``got``.
        self.owner: list[int] = []
        self.conns: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.recording = False
        # Snapshot frames received, and an event set once there is one per client.
        self.snapshots = 0
        self.all_snapshots = asyncio.Event()

    async def open(self, url: str, rooms: list[str | None]) -> None:
        from websockets.asyncio.client import connect

        async def one(room: str | None) -> None:
            ws = await connect(url, max_size=2**24, max_queue=64, compression=None, open_timeout=60)
            self.conns.append(ws)
            if room is not None:
                await ws.send(json.dumps({"op": "subscribe", "room": room, "since": 0}))
            self.tasks.append(asyncio.create_task(self._read(ws, len(self.tasks))))

        for start in range(0, len(rooms), 100):
            await asyncio.gather(*(one(room) for room in rooms[start : start + 100]))

    async def _read(self, ws: Any, me: int) -> None:
        got, owner = self.got, self.owner
        with contextlib.suppress(Exception):
            async for message in ws:
                t = time.time()
                if not self.recording:
                    if not self.raw and message.startswith('{"type":"snapshot"'):
                        self.snapshots += 1
                        if self.snapshots >= len(self.conns):
                            self.all_snapshots.set()
                    continue
                if self.raw:
                    frame = json.loads(message)
                    got.append((b"", frame["seq"], t - frame["t"]))
                    owner.append(me)
                elif message.startswith('{"type":"step"'):
                    data = message.encode()
                    seq, sid = SEQ.search(data), SESSION.search(data)
                    if seq and sid:
                        got.append((sid.group(1), int(seq.group(1)), t))
                        owner.append(me)

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.conns), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def commit_times(
    db: str, shards: int, got: list[tuple[bytes, int, float]]
) -> dict[tuple[str, int], tuple[float, float]]:
    """(session, seq) -> (commit wall time of the version that created the row, tick ts)."""
    from agentd.store import Store
    from agentd.store.sql import sql_in

    store = await Store.open(db, shards, create=False)
    table = store.steps
    sessions = sorted({sid.decode() for sid, _, _ in got})
    low = min(seq for _, seq, _ in got)
    out: dict[tuple[str, int], tuple[float, float]] = {}
    versions = {int(v["version"]): v["timestamp"].timestamp() for v in await table.list_versions()}
    for start in range(0, len(sessions), 500):
        where = f"{sql_in('session_id', sessions[start : start + 500])} AND seq >= {low}"
        columns = ["session_id", "seq", "ts", "_row_created_at_version"]
        rows = await table.query().where(where).select(columns).to_arrow()
        for sid, seq, ts, version in zip(
            rows.column("session_id").to_pylist(),
            rows.column("seq").to_pylist(),
            rows.column("ts").to_pylist(),
            rows.column("_row_created_at_version").to_pylist(),
            strict=True,
        ):
            if int(version) in versions:
                out[(sid, seq)] = (versions[int(version)], ts.timestamp())
    return out


# -- the daemon ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """``python -m agentd run`` in its own process group; stopped by pid, then its group killed."""

    def __init__(self, tmp: Path, gateway_port: int) -> None:
        from agentd.config import load_settings

        self.config = tmp / "config.toml"
        self.config.write_text(
            f'[storage]\nuri = "{tmp / "db"}"\n\n[daemon]\ncontrol_socket = "{tmp / "ctl.sock"}"\n\n'
            f'[gateway]\nenabled = true\nhost = "127.0.0.1"\nport = {gateway_port}\n\n[metrics]\nport = 0\n'
        )
        self.settings = load_settings(str(self.config))
        self.db = str(tmp / "db")
        self.log = tmp / "daemon.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentd", "--config", str(self.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            start_new_session=True,
            cwd=REPO,
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def wait_ready(self, timeout: float = 120) -> None:
        from agentd.control import DaemonUnreachable, request_sync

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited:\n{self.tail()}")
            with contextlib.suppress(DaemonUnreachable):
                status = request_sync(self.settings.control_socket_path, {"op": "status"}, timeout=2)["status"]
                if status["ready"] and (status.get("gateway") or {}).get("status") == "ok":
                    return
            time.sleep(0.3)
        raise SystemExit(f"daemon not ready in {timeout:.0f}s:\n{self.tail()}")

    def create(self, count: int) -> list[str]:
        """N joke sessions in one batch, through the control socket (agentctl create --count)."""
        command = [sys.executable, "-m", "agentctl", "--config", str(self.config), "--json", "create", "joke"]
        proc = subprocess.run(
            [*command, "--count", str(count), "--agent-id", AGENT, "--timeout", "300"],
            capture_output=True,
            timeout=330,
            cwd=REPO,
        )
        if proc.returncode != 0:
            raise SystemExit(f"create failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        return [json.loads(line)["session_id"] for line in proc.stdout.decode().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    return raw.partition(b"\r\n\r\n")[2]


async def gateway_probe(port: int) -> dict[str, float]:
    """The gateway's own view: hints received, tail polls/reads and the last read's cost."""
    health = json.loads(await http_get(port, "/healthz"))["tail"]["steps"]
    metrics = (await http_get(port, "/metrics")).decode()
    found = re.search(r"^agentd_gateway_commit_hints_total (\S+)$", metrics, re.M)
    return {
        "hints": float(found.group(1)) if found else float("nan"),
        "polls": health["polls"],
        "reads": health["reads"],
        "last_read_ms": health["last_read_ms"] or 0.0,
    }


# -- the two runs ----------------------------------------------------------------------------


def label(kind: str, mode: str, n: int) -> str:
    return f"{kind} {'1 room x ' + str(n) + ' subs' if mode == 'one' else str(n) + ' rooms x 1 sub'}"


async def gateway_run(args: argparse.Namespace, daemon: Daemon, sessions: list[str], mode: str) -> Result:
    n = args.subscribers
    rooms: list[str | None] = (
        [f"run::{AGENT}::{sessions[0]}"] * n if mode == "one" else [f"run::{AGENT}::{s}" for s in sessions[:n]]
    )
    port = daemon.settings.gateway.port
    clients = Clients(raw=False)
    started = time.perf_counter()
    await clients.open(f"ws://127.0.0.1:{port}/", rooms)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(300):
            await clients.all_snapshots.wait()
    subscribed = time.perf_counter() - started
    await asyncio.sleep(args.warmup)  # live steps flowing
    before = await gateway_probe(port)
    clients.recording = True
    await asyncio.sleep(args.seconds)
    clients.recording = False
    after = await gateway_probe(port)
    await clients.close()
    got = clients.got
    result = Result(label("gateway", mode, n))
    if not got:
        result.note = f"nothing received ({clients.snapshots} snapshots in {subscribed:.1f}s)"
        return result
    commits = await commit_times(daemon.db, daemon.settings.storage.num_shards, got)
    missing = 0
    index = {sid: i for i, sid in enumerate(sessions[:n])}
    batches: dict[float, set[int]] = {}
    for sid, seq, received in got:
        known = commits.get((sid.decode(), seq))
        if known is None:
            missing += 1
            continue
        result.latencies.append(received - known[0])
        result.from_tick.append(received - known[1])
        batches.setdefault(known[0], set()).add(index[sid.decode()])
        result.worst[known[0]] = max(result.worst.get(known[0], 0.0), received - known[0])
    # Per subscription: the seqs it received in the window must be consecutive, each once.
    per_client: dict[tuple[int, bytes], list[int]] = {}
    for client, (sid, seq, _received) in zip(clients.owner, got, strict=True):
        per_client.setdefault((client, sid), []).append(seq)
    broken = sum(1 for seqs in per_client.values() if seqs != list(range(seqs[0], seqs[0] + len(seqs))))
    everybody = list(range(n))
    result.schedule = [(at, everybody if mode == "one" else sorted(ids)) for at, ids in sorted(batches.items())]
    interval = daemon.settings.runtime.heartbeat_interval
    result.expected = int(args.seconds / interval) * n
    hints, polls, reads = (after[k] - before[k] for k in ("hints", "polls", "reads"))
    result.note = (
        f"{clients.snapshots} snapshots in {subscribed:.1f}s; "
        f"hints {hints / args.seconds:.1f}/s, polls {polls / args.seconds:.1f}/s, reads {reads / args.seconds:.1f}/s, "
        f"last read {after['last_read_ms']:.1f} ms; {broken} subscriptions out of order or with gaps"
        + (f", {missing} without commit time" if missing else "")
    )
    return result


async def baseline_run(
    args: argparse.Namespace, daemon: Daemon, port: int, mode: str, pad: int, gateway: Result
) -> Result:
    """Replay the gateway run's commits through plain ``broadcast()``, in phase with the ticks.

    Each commit of the measured window becomes one broadcast of the same number of frames to
    as many clients, at the commit's wall time shifted by a whole number of heartbeats: the
    sessions still tick in the same phase, so each replayed broadcast meets the same CPU
    competition (workers ticking and committing) as the commit it copies.
    """
    from websockets.asyncio.client import connect

    n = args.subscribers
    clients = Clients(raw=True)
    await clients.open(f"ws://127.0.0.1:{port}/", [None] * n)
    await asyncio.sleep(1.0)
    schedule = gateway.schedule
    first = schedule[0][0]
    schedule = [(at, ids) for at, ids in schedule if at - first <= args.raw_seconds]
    interval = daemon.settings.runtime.heartbeat_interval
    shift = math.ceil((time.time() + 1.0 - first) / interval) * interval
    clients.recording = True
    async with connect(f"ws://127.0.0.1:{port}/control", max_size=2**26) as ctl:
        cmd = {"pad": pad, "schedule": [(at + shift, ids) for at, ids in schedule]}
        await ctl.send(json.dumps(cmd))
        await ctl.recv()
    clients.recording = False
    await clients.close()
    result = Result(label("raw broadcast", mode, n), latencies=[lat for _, _, lat in clients.got])
    sizes = [len(ids) for _, ids in schedule]
    result.note = f"replay of {len(schedule)} commits, {min(sizes)}-{max(sizes)} frames each"
    return result


def step_frame_size(sessions: list[str]) -> int:
    from agentd.gateway.protocol import step_body_json, step_frame
    from agentd.store.steps import StepRecord
    from agentd.timeutil import utcnow

    record = StepRecord(
        session_id=sessions[0],
        agent_id=AGENT,
        shard=1,
        seq=100,
        ts=utcnow(),
        text="Why do programmers prefer dark mode? Because light attracts bugs.",
        state={"iteration": 100, "context": {"subject": "programming", "paused": False}},
        latency_ms=0.1,
    )
    return len(step_frame(f"run::{AGENT}::{sessions[0]}", step_body_json(record)))


def spawn_baseline() -> subprocess.Popen[bytes]:
    """The raw broadcast server: a fresh interpreter, printing its port on stdout."""
    return subprocess.Popen(
        [sys.executable, __file__, "--baseline-server"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def first_port(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    return int(json.loads(line)["port"])


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def bench(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    daemon: Daemon | None = None
    baseline: subprocess.Popen[bytes] | None = None
    loads = [f"start {load_average()}"]
    try:
        daemon = Daemon(tmp, free_port())
        await asyncio.to_thread(daemon.wait_ready)
        started = time.perf_counter()
        sessions = await asyncio.to_thread(daemon.create, args.sessions)
        print(f"{len(sessions)} joke sessions created in {time.perf_counter() - started:.1f}s", flush=True)
        baseline = spawn_baseline()
        raw_port = await first_port(baseline)
        bare = json.dumps({"type": "step", "room": "r", "seq": 100, "t": time.time(), "pad": ""})
        pad = max(0, step_frame_size(sessions) - len(bare))
        await asyncio.sleep(args.warmup)  # every session ticking
        results: list[Result] = []
        for mode in ("one", "many"):
            results.append(await gateway_run(args, daemon, sessions, mode))
            print(results[-1].row(), flush=True)
            loads.append(f"{mode} {load_average()}")
            if results[-1].schedule:
                results.append(await baseline_run(args, daemon, raw_port, mode, pad, results[-1]))
            else:
                results.append(Result(label("raw broadcast", mode, args.subscribers), note="no commits to replay"))
            print(results[-1].row(), flush=True)
        print(
            f"\ngateway benchmark: agentd run, {len(sessions)} joke sessions ticking every "
            f"{daemon.settings.runtime.heartbeat_interval:g}s on {daemon.settings.daemon.workers} workers "
            f"(writer flush {daemon.settings.writer.flush_interval:g}s, gateway poll "
            f"{daemon.settings.gateway.poll_interval:g}s + commit hints), {args.subscribers} clients in this "
            f"process, frame ~{step_frame_size(sessions)} B, {args.seconds:g}s per shape, {os.cpu_count()} CPUs"
        )
        print(f"load average (1/5/15 min): {', '.join(loads)}, end {load_average()}")
        print(
            f"\n{'committed -> received (ms)':<34} {'p50':>8} {'p99':>8} {'max':>8} {'samples':>8} "
            f"{'tick->recv p50/p99':>17}"
        )
        for result in results:
            print(result.row())
        print()
        for gw in results[::2]:
            slow = sorted(gw.worst.items(), key=lambda item: -item[1])[:5]
            print(
                f"{gw.name}, slowest commits (commit time: slowest delivery): "
                + ", ".join(
                    f"{time.strftime('%H:%M:%S', time.gmtime(at))}.{int(at % 1 * 1000):03d}: {lat * 1000:.0f} ms"
                    for at, lat in slow
                )
            )
        print()
        for gw, raw in zip(results[::2], results[1::2], strict=True):
            p50, p99, raw50 = pct(gw.latencies, 50), pct(gw.latencies, 99), pct(raw.latencies, 50)
            ok = p99 <= 150 and p50 <= 2 * raw50
            print(
                f"{gw.name}: p50 {p50 / raw50:.1f}x raw p50 (target <= 2x), p99 {p99:.0f} ms (target <= 150); "
                f"received {len(gw.latencies)}/{gw.expected} expected; {'MET' if ok else 'MISSED'}"
            )
    finally:
        if baseline is not None and baseline.poll() is None:
            os.kill(baseline.pid, signal.SIGKILL)
            baseline.wait(timeout=10)
        if daemon is not None:
            daemon.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000, help="joke sessions ticking")
    parser.add_argument("--subscribers", type=int, default=1000, help="clients (and rooms of the many-rooms shape)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per gateway shape")
    parser.add_argument("--raw-seconds", type=float, default=15.0, help="seconds of the gateway window replayed raw")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (daemon log, database)")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.baseline_server:
        uvloop.run(baseline_main())
        return
    if args.subscribers > args.sessions:
        parser.error("--subscribers must not exceed --sessions (one room per session in the many-rooms shape)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * args.subscribers + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
