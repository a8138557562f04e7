"""Wall-clock helpers: every stored time is timezone-aware UTC with microsecond precision."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)
