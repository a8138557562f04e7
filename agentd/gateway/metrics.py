"""The gateway's Prometheus metrics, served at ``GET /metrics`` on the gateway's port.

Why a collector over the existing counters rather than a second set of counters: the delivery
and tail counters are already bumped on the hot path (plain integers, see ``health.py``), and
``/healthz`` reports them; reading them at scrape time costs the hot path nothing and the two
endpoints can never disagree. Only what has no counter yet is observed directly: two
histograms, the cost of a tail read and the age of a batch when it is dispatched (commit to
fan-out), fed by ``TailStats.observer``.

One registry per gateway (never the process-global one), so that several gateways in one
process (tests) do not clash. Names follow the Prometheus conventions: ``agentd_gateway_``,
``_total`` for counters, base units (``_seconds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentd.gateway.health import GatewayStats

if TYPE_CHECKING:
    from agentd.gateway.server import Gateway

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
READ_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
AGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

_DELIVERY = (
    ("connections_total", "agentd_gateway_connections", "WebSocket connections accepted"),
    ("rejected_unauthorized", "agentd_gateway_rejected_unauthorized", "handshakes refused with 401"),
    ("rejected_full", "agentd_gateway_rejected_full", "handshakes refused with 503 (max_connections)"),
    ("rejected_origin", "agentd_gateway_rejected_origin", "requests refused for their Origin or Host"),
    ("snapshots", "agentd_gateway_snapshots", "subscription snapshots sent"),
    ("errors_sent", "agentd_gateway_errors_sent", "error events sent to clients"),
    ("duplicates_dropped", "agentd_gateway_duplicates_dropped", "live events dropped as already sent"),
    ("gaps_seen", "agentd_gateway_gaps_seen", "live steps that skipped a seq"),
    ("overflow_disconnects", "agentd_gateway_overflow_disconnects", "connections closed with 4008 (slow consumer)"),
)
_TAIL = (
    ("polls", "agentd_gateway_tail_polls", "version checks"),
    ("reads", "agentd_gateway_tail_reads", "range reads of new rows"),
    ("hinted", "agentd_gateway_tail_hinted_versions", "table versions taken from commit hints, not read"),
    ("rows", "agentd_gateway_tail_rows", "rows read by the tail"),
    ("errors", "agentd_gateway_tail_errors", "failed polls"),
    ("quarantined", "agentd_gateway_tail_quarantined", "rows left out because they do not decode"),
)


class _StatsCollector(Collector):
    """Reads the gateway's counters at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        stats: GatewayStats = gw.stats
        delivery = stats.delivery
        for attr, name, doc in _DELIVERY:
            yield _counter(name, doc, getattr(delivery, attr))
        events = CounterMetricFamily(
            "agentd_gateway_events_sent", "events sent to subscribers, by type", labels=["type"]
        )
        events.add_metric(["step"], delivery.steps)
        events.add_metric(["message"], delivery.messages)
        yield events
        for attr, name, doc in _TAIL:
            family = CounterMetricFamily(name, doc, labels=["table"])
            for tail in (stats.steps, stats.messages):
                family.add_metric([tail.table], getattr(tail, attr))
            yield family
        lag = GaugeMetricFamily(
            "agentd_gateway_tail_lag_versions", "table versions seen but not yet delivered", labels=["table"]
        )
        poll_age = GaugeMetricFamily(
            "agentd_gateway_tail_last_ok_age_seconds", "seconds since the last successful poll", labels=["table"]
        )
        now = time.monotonic()
        for tail in (stats.steps, stats.messages):
            lag.add_metric([tail.table], max(0, tail.latest_version - tail.version))
            poll_age.add_metric([tail.table], now - tail.last_ok)
        yield lag
        yield poll_age
        yield _gauge("agentd_gateway_open_connections", "WebSocket connections open now", len(gw.connections))
        yield _gauge("agentd_gateway_subscriptions", "subscriptions open now", gw.registry.subscription_count)
        yield _gauge("agentd_gateway_rooms", "rooms with at least one subscription", gw.registry.room_count)
        yield _gauge("agentd_gateway_uptime_seconds", "seconds since the gateway started", now - stats.started)
        hints = CounterMetricFamily("agentd_gateway_commit_hints", "commit hints received from the supervisor")
        hints.add_metric([], gw.hints_received)
        yield hints
        if gw.control_ops is not None:
            ops = CounterMetricFamily(
                "agentd_gateway_control_ops", "console write ops by kind and outcome", labels=["kind", "outcome"]
            )
            for (kind, outcome), count in sorted(gw.control_ops.outcomes.items()):
                ops.add_metric([kind, outcome], count)
            yield ops
            yield _counter(
                "agentd_gateway_control_submits",
                "actions submitted to the daemon's control API",
                gw.control_ops.bridge.submitted,
            )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class GatewayMetrics:
    """The registry of one gateway: its counters (read at scrape) and two histograms."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=False)  # collect() reads a running gateway
        self.registry.register(_StatsCollector(gateway))
        self.read_seconds = Histogram(
            "agentd_gateway_tail_read_seconds",
            "duration of a tail's range read of new rows (grows with uncompacted fragments)",
            ["table"],
            buckets=READ_BUCKETS,
            registry=self.registry,
        )
        self.batch_age_seconds = Histogram(
            "agentd_gateway_tail_batch_age_seconds",
            "age of the newest row of a batch when the tail dispatches it (commit to fan-out)",
            ["table"],
            buckets=AGE_BUCKETS,
            registry=self.registry,
        )

    def observer(self) -> Callable[[str, str, float], None]:
        """The callback for ``TailStats.observer``."""

        def observe(table: str, what: str, seconds: float) -> None:
            histogram = self.read_seconds if what == "read" else self.batch_age_seconds
            histogram.labels(table).observe(max(0.0, seconds))

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
