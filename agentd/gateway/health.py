"""Counters and the ``GET /healthz`` report.

Counters are plain integers bumped on the event loop (no locks needed); the report is a
pydantic model so that the supervisor's status (and ``agentctl daemon status``) can parse the
same JSON the HTTP endpoint returns.

Two levels, because the probe must work without the token: ``HealthSummary`` (status, uptime,
counts) is answered to anyone; ``HealthReport`` adds the tails' detail (error texts, versions,
read costs) and the delivery counters, and is answered only to a request that passes the token
check. The supervisor's probe sends no token, so it can never hand the token to whatever
listens on the gateway's port.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["DeliveryStats", "GatewayStats", "HealthReport", "HealthSummary", "TailReport", "TailStats"]


@dataclass(slots=True)
class TailStats:
    """Progress of one table's tail; written by ``TableTail`` only."""

    table: str
    # Highest table version whose rows have all been dispatched (the watermark).
    version: int = 0
    # Latest table version seen by the last version check.
    latest_version: int = 0
    polls: int = 0
    reads: int = 0
    # Versions whose rows came with the writer's commit hint (``hints.py``) instead of a read.
    hinted: int = 0
    rows: int = 0
    errors: int = 0
    last_error: str | None = None
    # time.monotonic() of the last poll that completed without error.
    last_ok: float = field(default_factory=time.monotonic)
    # Seconds between a dispatched row's own timestamp and its dispatch, for the last batch.
    last_batch_age_s: float | None = None
    # Duration of the last range read (the _row_created_at_version scan); grows with fragments.
    last_read_ms: float | None = None
    gaps_detected: int = 0
    gaps_filled: int = 0
    gaps_unfilled: int = 0
    duplicates_dropped: int = 0
    # Rows that could not be decoded (bad JSON column, failed validation): left out, logged once.
    quarantined: int = 0
    # Set by the metrics (metrics.py): told each read's duration and each batch's age, in seconds.
    observer: Callable[[str, str, float], None] | None = None

    def record_read(self, seconds: float) -> None:
        self.last_read_ms = seconds * 1000
        if self.observer is not None:
            self.observer(self.table, "read", seconds)

    def record_age(self, seconds: float) -> None:
        self.last_batch_age_s = seconds
        if self.observer is not None:
            self.observer(self.table, "age", seconds)


@dataclass(slots=True)
class DeliveryStats:
    """What the connections did; bumped by ``subscriber.py``."""

    connections_total: int = 0
    rejected_unauthorized: int = 0
    rejected_full: int = 0
    # Requests refused for their Origin or Host (cross-site WebSocket hijacking, DNS rebinding).
    rejected_origin: int = 0
    snapshots: int = 0
    steps: int = 0
    messages: int = 0
    errors_sent: int = 0
    duplicates_dropped: int = 0
    gaps_seen: int = 0
    overflow_disconnects: int = 0


@dataclass(slots=True)
class GatewayStats:
    steps: TailStats = field(default_factory=lambda: TailStats("steps"))
    messages: TailStats = field(default_factory=lambda: TailStats("messages"))
    delivery: DeliveryStats = field(default_factory=DeliveryStats)
    started: float = field(default_factory=time.monotonic)


class TailReport(BaseModel):
    version: int
    latest_version: int
    lag_versions: int
    last_ok_age_s: float
    last_batch_age_s: float | None
    last_read_ms: float | None
    polls: int
    reads: int
    hinted: int = 0
    rows: int
    errors: int
    last_error: str | None
    gaps_detected: int
    gaps_filled: int
    gaps_unfilled: int
    duplicates_dropped: int
    quarantined: int

    @classmethod
    def of(cls, t: TailStats, now: float) -> TailReport:
        return cls(
            version=t.version,
            latest_version=t.latest_version,
            lag_versions=max(0, t.latest_version - t.version),
            last_ok_age_s=round(now - t.last_ok, 3),
            last_batch_age_s=None if t.last_batch_age_s is None else round(t.last_batch_age_s, 3),
            last_read_ms=None if t.last_read_ms is None else round(t.last_read_ms, 2),
            polls=t.polls,
            reads=t.reads,
            hinted=t.hinted,
            rows=t.rows,
            errors=t.errors,
            last_error=t.last_error,
            gaps_detected=t.gaps_detected,
            gaps_filled=t.gaps_filled,
            gaps_unfilled=t.gaps_unfilled,
            duplicates_dropped=t.duplicates_dropped,
            quarantined=t.quarantined,
        )


class HealthSummary(BaseModel):
    """``GET /healthz`` without the token: nothing about sessions, the database or errors.

    ``status`` is ``lagging`` (HTTP 503) when a tail has stalled.
    """

    model_config = ConfigDict(extra="ignore")

    status: Literal["ok", "lagging"]
    uptime_s: float
    connections: int
    subscriptions: int
    rooms: int


class HealthReport(HealthSummary):
    """``GET /healthz`` with the token (or on a gateway without one): the summary plus detail."""

    tail: dict[str, TailReport]
    delivered: DeliveryStats

    def summary(self) -> HealthSummary:
        return HealthSummary.model_validate(self.model_dump(include=set(HealthSummary.model_fields)))

    @classmethod
    def build(
        cls, stats: GatewayStats, *, connections: int, subscriptions: int, rooms: int, stall_after: float
    ) -> HealthReport:
        now = time.monotonic()
        tails = {t.table: TailReport.of(t, now) for t in (stats.steps, stats.messages)}
        lagging = any(t.last_ok_age_s > stall_after for t in tails.values())
        return cls(
            status="lagging" if lagging else "ok",
            uptime_s=round(now - stats.started, 3),
            connections=connections,
            subscriptions=subscriptions,
            rooms=rooms,
            tail=tails,
            delivered=stats.delivery,
        )
