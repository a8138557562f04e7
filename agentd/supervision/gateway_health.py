"""Read the gateway's ``GET /healthz`` summary for the supervisor's status view.

The probe never sends the gateway token. Whatever listens on the configured port has proven
nothing (after a gateway crash any local user can bind it), and the summary it reads (status,
uptime, counts) needs no token; the token-gated detail is for operators, not for status. The
answer is read up to ``MAX_ANSWER_BYTES`` and must parse as a ``HealthSummary``, so a stranger
on the port cannot feed arbitrary data into the status output either.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from agentd.config import GatewayConfig
from agentd.gateway.health import HealthSummary

__all__ = ["MAX_ANSWER_BYTES", "fetch_health"]

MAX_ANSWER_BYTES = 64 * 1024


async def fetch_health(cfg: GatewayConfig, timeout: float = 1.0) -> dict[str, Any]:
    """The gateway's health summary as a dict, or ``{"error": ...}``; never raises."""
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "", "::") else cfg.host
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, cfg.port)
            try:
                writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                raw = await reader.read(MAX_ANSWER_BYTES)
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return {"error": f"gateway not reachable on {host}:{cfg.port}: {exc}"}
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")[:200]
    try:
        summary = HealthSummary.model_validate_json(body)
    except ValidationError:
        return {"error": f"unexpected answer on {host}:{cfg.port}: {status_line!r}"}
    return summary.model_dump()
