"""The WebSocket gateway: live session steps and conversation messages (DESIGN.md §7).

It tails the ``steps`` and ``messages`` tables exactly once and fans rows out to rooms;
it never writes session data. On the same port it serves the web console (``web.py``,
``agentd/console``), whose actions go through the daemon's control API, and ``/metrics``.
Protocol reference: the README, "Live updates over WebSocket" and "The web console".
"""

from agentd.gateway.auth import GatewayConfigError, is_loopback
from agentd.gateway.health import HealthReport, HealthSummary
from agentd.gateway.process import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, run_gateway
from agentd.gateway.protocol import CloseCodes
from agentd.gateway.server import Gateway, GatewayStarted, serve_gateway

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "CloseCodes",
    "Gateway",
    "GatewayConfigError",
    "GatewayStarted",
    "HealthReport",
    "HealthSummary",
    "is_loopback",
    "run_gateway",
    "serve_gateway",
]
