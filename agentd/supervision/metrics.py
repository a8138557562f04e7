"""The supervisor's Prometheus ``/metrics``: the workers' heartbeats as metric families.

Workers count (``agentd.telemetry``) and send their counters in every heartbeat; the supervisor
keeps the latest heartbeat of each child anyway, so a scrape only converts them (labelled by
worker, so a restarted worker resets its own series) and adds what only the supervisor knows:
restarts, each child's RSS and CPU time, and the depth of the action queue.

Served by a minimal HTTP responder on the event loop (``[metrics] host/port``, loopback by
default), not prometheus-client's threaded server: the collector reads supervisor state that
only the loop may touch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agentd.config import MetricsConfig

if TYPE_CHECKING:
    from agentd.supervision.supervisor import Supervisor

__all__ = ["MetricsServer", "SupervisorCollector"]

log = logging.getLogger("agentd.metrics")

REQUEST_TIMEOUT = 5.0
MAX_REQUEST_HEAD = 8192


def _histogram(family: HistogramMetricFamily, labels: list[str], data: Any) -> None:
    """Add one worker's histogram snapshot (per-bucket counts) as cumulative buckets."""
    if not isinstance(data, dict):
        return
    bounds, counts = data.get("bounds") or [], data.get("counts") or []
    if len(counts) != len(bounds) + 1:
        return
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*bounds, "+Inf"], counts, strict=True):
        total += int(count)
        buckets.append((str(float(bound)) if bound != "+Inf" else "+Inf", total))
    family.add_metric(labels, buckets, float(data.get("sum") or 0.0))


class SupervisorCollector(Collector):
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.queue_depth: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        sup = self.sup
        now = time.monotonic()
        up = GaugeMetricFamily("agentd_workers_ready", "worker processes that reported ready")
        up.add_metric([], sum(1 for c in sup.workers.values() if c.ready and c.alive))
        yield up
        sessions = GaugeMetricFamily("agentd_sessions", "sessions hosted, by status", labels=["worker", "status"])
        types = GaugeMetricFamily(
            "agentd_sessions_by_type", "sessions hosted, by agent type", labels=["worker", "type"]
        )
        ticks = CounterMetricFamily("agentd_ticks", "ticks run", labels=["worker"])
        errors = CounterMetricFamily("agentd_tick_errors", "ticks that ended in an error", labels=["worker"])
        lateness = HistogramMetricFamily(
            "agentd_tick_lateness_seconds", "how late a scheduled tick started", labels=["worker"]
        )
        duration = HistogramMetricFamily("agentd_tick_duration_seconds", "how long a tick ran", labels=["worker"])
        flush = HistogramMetricFamily(
            "agentd_writer_flush_duration_seconds", "one batched commit of steps and snapshots", labels=["worker"]
        )
        rows = HistogramMetricFamily("agentd_writer_flush_rows", "rows per batched commit", labels=["worker"])
        actions = CounterMetricFamily(
            "agentd_actions", "actions acknowledged, by kind and outcome", labels=["worker", "kind", "outcome"]
        )
        latency = HistogramMetricFamily(
            "agentd_action_latency_seconds", "action created -> acknowledged", labels=["worker", "kind"]
        )
        rss = GaugeMetricFamily("agentd_worker_rss_bytes", "resident memory of a worker", labels=["worker"])
        cpu = CounterMetricFamily("agentd_worker_cpu_seconds", "CPU time of a worker", labels=["worker"])
        beat = GaugeMetricFamily(
            "agentd_worker_heartbeat_age_seconds", "seconds since a worker's last heartbeat", labels=["worker"]
        )
        restarts = CounterMetricFamily("agentd_worker_restarts", "worker restarts since start", labels=["worker"])
        for index, child in sorted(sup.workers.items()):
            worker = str(index)
            counters: dict[str, Any] = child.counters
            for status, count in (counters.get("statuses") or {}).items():
                sessions.add_metric([worker, str(status)], float(count))
            for type_name, count in (counters.get("types") or {}).items():
                types.add_metric([worker, str(type_name)], float(count))
            telemetry: dict[str, Any] = counters.get("telemetry") or {}
            ticks.add_metric([worker], float(telemetry.get("ticks") or 0))
            errors.add_metric([worker], float(telemetry.get("tick_errors") or 0))
            _histogram(lateness, [worker], telemetry.get("tick_lateness"))
            _histogram(duration, [worker], telemetry.get("tick_duration"))
            _histogram(flush, [worker], telemetry.get("flush_duration"))
            _histogram(rows, [worker], telemetry.get("flush_rows"))
            for item in telemetry.get("actions") or []:
                actions.add_metric([worker, str(item["kind"]), str(item["outcome"])], float(item["count"]))
            for kind, data in (telemetry.get("action_latency") or {}).items():
                _histogram(latency, [worker, str(kind)], data)
            beat.add_metric([worker], now - child.last_heartbeat)
            history = sup.restarts.get(index)
            restarts.add_metric([worker], float(history.total if history is not None else 0))
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(child.pid)
                with proc.oneshot():
                    rss.add_metric([worker], float(proc.memory_info().rss))
                    times = proc.cpu_times()
                    cpu.add_metric([worker], float(times.user + times.system))
        yield from (sessions, types, ticks, errors, lateness, duration, flush, rows, actions, latency)
        yield from (rss, cpu, beat, restarts)
        depth = GaugeMetricFamily("agentd_action_queue_depth", "actions not yet acknowledged", labels=["status"])
        for status, count in sorted(self.queue_depth.items()):
            depth.add_metric([status], float(count))
        yield depth
        control = CounterMetricFamily("agentd_control_appends", "group commits of submitted actions")
        control.add_metric([], float(sup.control_api.appends))
        yield control
        compactor = sup.control_api.compactor
        compactions = CounterMetricFamily(
            "agentd_action_queue_compactions", "compactions of the actions table between maintenance passes"
        )
        compactions.add_metric([], float(compactor.compactions if compactor is not None else 0))
        yield compactions


class MetricsServer:
    """GET /metrics on ``[metrics] host:port``; anything else is a 404."""

    def __init__(self, sup: Supervisor, config: MetricsConfig) -> None:
        self.sup = sup
        self.config = config
        self.collector = SupervisorCollector(sup)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._server: asyncio.base_events.Server | None = None
        self.address: str | None = None
        self.error: str | None = None

    async def start(self) -> None:
        """Bind; a port in use is logged and shown in status, never fatal (metrics are optional)."""
        try:
            self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port)
        except OSError as exc:
            self.error = f"cannot serve /metrics on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            log.warning("%s", self.error)
            return
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"http://{host}:{port}/metrics"
        log.info("metrics on %s", self.address)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_HEAD:
                raise ValueError("request head too large")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method != "GET" or target.split("?", 1)[0] != "/metrics":
                await self._respond(writer, 404, b"not found: GET /metrics\n", "text/plain")
                return
            await self._refresh()
            await self._respond(writer, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("serving /metrics failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refresh(self) -> None:
        store = self.sup.store
        if store is None:
            return
        try:
            for status in ("pending", "claimed"):
                self.collector.queue_depth[status] = int(await store.actions.count_rows(f"status = '{status}'"))
        except Exception as exc:  # the rest of the metrics are still worth serving
            log.debug("queue depth unavailable: %s", exc)

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, code: int, body: bytes, content_type: str) -> None:
        reason = {200: "OK", 404: "Not Found"}[code]
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
