"""Read the gateway's ``GET /healthz`` counters for the supervisor's status view."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentd.config import GatewayConfig

__all__ = ["fetch_health"]


async def fetch_health(cfg: GatewayConfig, timeout: float = 1.0) -> dict[str, Any]:
    """The gateway's health JSON, or ``{"error": ...}``; never raises."""
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "", "::") else cfg.host
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, cfg.port)
            auth = f"Authorization: Bearer {cfg.token}\r\n" if cfg.token else ""
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
            writer.close()
    except (OSError, TimeoutError) as exc:
        return {"error": f"gateway not reachable on {host}:{cfg.port}: {exc}"}
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError:
        return {"error": f"unexpected answer: {status_line}"}
    return data
