"""The maintenance child: runs ``run_maintenance`` passes in a process of its own.

Why a child (issue 11): the memory a pass touches stays with the process that ran it.
Retention's filtered scans and deletes, compaction and index updates leave LanceDB's caches and
the native allocator holding hundreds of MB, more after each pass as the tables turn over: the
supervisor grew from 212 MB to 1.37 GB in a 30-minute soak, and ``bench/maintenance_rss.py``
reproduces it (200 -> 570 MB in 6 minutes with 1,000 sessions). A child gives all of it back
when it exits. It is kept between passes (starting one costs about a CPU-second: interpreter,
lancedb, opening the tables) and replaced once its RSS after a pass exceeds ``CHILD_MAX_RSS``,
when it died, or when the loop stops.

It is started with ``posix_spawn`` (``agentd.spawn``: the supervisor never forks after LanceDB
is loaded) and never outlives the supervisor: its requests come on stdin, so EOF ends it, and a
parent-death signal (Linux) covers a SIGKILL, with a hard bound (``agentd.orphans``). Protocol:
one JSON request per line on its stdin, one JSON reply per line on its stdout
(``{"report": ..., "rss": bytes}`` or ``{"error": ..., "rss": ...}``); its stdout is moved away
from fd 1 first, so a stray print cannot corrupt a reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
from dataclasses import asdict, dataclass
from typing import Any

from agentd.spawn import SpawnedProcess, socket_for_child, spawn_python
from agentd.store.db import Store
from agentd.store.maintenance import MaintenanceReport, run_maintenance
from agentd.store.retention import RetentionLimits
from agentd.store.version_window import VersionWindow

__all__ = ["CHILD_MAX_RSS", "MaintenanceChild"]

# Named explicitly: run with ``python -m`` this module is ``__main__``.
log = logging.getLogger("agentd.store.maintenance_child")

# A maintenance child whose RSS after a pass exceeds this is replaced before the next pass.
# Its baseline (interpreter, lancedb, the open tables) is about 180 MB, LanceDB's caches may add
# up to 320 MB (agentd.store.db), so this replaces it every few passes under a heavy load and
# rarely on a light one.
CHILD_MAX_RSS = 512 << 20
# The child's CPU priority below the supervisor's (nice steps). A pass compacts and indexes for
# about half a second every ``[maintenance] interval``, and starting a child costs about a
# CPU-second: at the same priority, on two cores, control actions and ticks that came meanwhile
# shared the CPU with it equally. At +10 it gets about a tenth of a contended core and all of an
# idle one, so passes still run under full load, only slower.
MAINTENANCE_NICE = 10


@dataclass(frozen=True, slots=True)
class _Limits:
    """``RetentionLimits`` as the child receives it (plain data, no config model)."""

    steps_per_session: int = 0
    step_max_age: float = 0.0
    stopped_session_max_age: float = 0.0
    message_max_age: float = 0.0


def _limits_dict(limits: RetentionLimits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    return {name: getattr(limits, name) for name in _Limits.__slots__}


class MaintenanceChild:
    """One maintenance process: ``await run(...)`` sends a pass and returns its report.

    Not thread-safe and one pass at a time (the loop's own pacing). ``close()`` is idempotent:
    it closes stdin (the child exits at EOF) and kills it if it has not exited within
    ``timeout``. A child that died mid-pass raises ``RuntimeError``; the next ``run`` starts a
    new one.
    """

    def __init__(self, uri: str, num_shards: int, *, max_rss: int = CHILD_MAX_RSS) -> None:
        self.uri = uri
        self.num_shards = num_shards
        self.max_rss = max_rss
        # Set by _start(), cleared by close(): the running child, if any, and its socket.
        self.proc: SpawnedProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # How many children were started (the bench and the tests read it).
        self.started = 0

    async def _start(self) -> SpawnedProcess:
        from agentd.logsetup import active_config
        from agentd.supervision.children import child_env

        cfg = active_config()
        env = child_env()
        env["_AGENTD_MAINTENANCE_LOGGING"] = "" if cfg is None else cfg.model_dump_json(by_alias=True)
        ours, theirs = socket_for_child()
        try:  # its stdin and stdout are one socket: requests in, replies out
            proc = spawn_python(
                "agentd.store.maintenance_child",
                [self.uri, str(self.num_shards)],
                env,
                fds={0: theirs.fileno(), 1: theirs.fileno()},
                nice=MAINTENANCE_NICE,
            )
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_connection(sock=ours, limit=1 << 20)
        self.proc = proc
        self.started += 1
        return proc

    async def run(
        self,
        *,
        cleanup_older_than: float,
        action_retention: float | None,
        retention: RetentionLimits | None,
        versions: dict[str, Any] | None = None,
    ) -> MaintenanceReport:
        """One pass in the child; ``versions`` are ``VersionWindow``'s arguments (the child keeps its rates)."""
        proc = self.proc if self.proc is not None and self.proc.returncode is None else await self._start()
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        request = {
            "cleanup_older_than": cleanup_older_than,
            "action_retention": action_retention,
            "retention": _limits_dict(retention),
            "versions": versions,
        }
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise RuntimeError(f"maintenance child failed: {exc}") from exc
        if not line:
            code = await proc.wait()
            await self.close()
            raise RuntimeError(f"maintenance child exited with {code} during a pass")
        reply = json.loads(line)
        if reply.get("rss", 0) > self.max_rss:
            log.info("maintenance child at %d MB RSS: replacing it", reply["rss"] >> 20)
            await self.close()
        if "error" in reply:
            raise RuntimeError(f"maintenance pass failed in the child: {reply['error']}")
        return MaintenanceReport.from_dict(reply["report"])

    async def close(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()  # the child exits at EOF
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _rss_bytes() -> int:
    """Current RSS from /proc (Linux), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _child_main(uri: str, num_shards: int, out: Any) -> None:
    """The child's loop: one JSON request per stdin line, one JSON reply per line on ``out``."""
    store = await Store.open(uri, num_shards, create=False)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    windows: dict[str, VersionWindow] = {}  # the commit rates live as long as the child
    while line := await reader.readline():
        request = json.loads(line)
        limits = request.get("retention")
        window = request.get("versions")
        key = json.dumps(window, sort_keys=True)
        if window is not None and key not in windows:
            windows[key] = VersionWindow(**window)
        reply: dict[str, Any]
        try:
            report = await run_maintenance(
                store,
                cleanup_older_than=request["cleanup_older_than"],
                action_retention=request["action_retention"],
                retention=None if limits is None else _Limits(**limits),
                versions=windows.get(key),
            )
            reply = {"report": asdict(report)}
        except Exception as exc:
            log.exception("maintenance pass failed")
            reply = {"error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}
        reply["rss"] = _rss_bytes()
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _child(argv: list[str]) -> int:
    from agentd.orphans import exit_when_orphaned, set_parent_death_signal

    set_parent_death_signal()  # SIGTERM when the supervisor dies, even by SIGKILL; stdin EOF too
    exit_when_orphaned()
    # The replies own the original stdout; anything else printing lands on stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    from agentd.config import LoggingConfig
    from agentd.logsetup import configure_logging

    raw = os.environ.pop("_AGENTD_MAINTENANCE_LOGGING", "")
    configure_logging(LoggingConfig.model_validate_json(raw) if raw else LoggingConfig(), role="maintenance")
    try:
        asyncio.run(_child_main(argv[0], int(argv[1]), out))
    except KeyboardInterrupt:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
