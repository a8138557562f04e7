"""Who may connect: the loopback rule at start, and the token check during the handshake.

The token is checked in ``process_request``, i.e. before the WebSocket upgrade, so an
unauthorised client gets an HTTP 401 and never a single frame of session data. It is accepted
as ``Authorization: Bearer <token>`` (for clients that can set headers) or as a ``token``
query parameter (browsers' WebSocket API cannot set headers). Comparison is constant-time.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from agentd.config import GatewayConfig

__all__ = ["GatewayConfigError", "check_bind", "is_loopback", "request_token", "token_ok"]


class GatewayConfigError(Exception):
    """The gateway must not start with this configuration; the message says what to change."""


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine.

    An empty host or a wildcard (``0.0.0.0``, ``::``) binds every interface; a host name other
    than ``localhost`` may resolve anywhere. All of those count as non-loopback.
    """
    name = host.strip().lower().strip("[]")
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(config: GatewayConfig) -> None:
    """Refuse a non-loopback bind without a token (DESIGN.md §7)."""
    if not is_loopback(config.host) and not config.token:
        shown = config.host or "<all interfaces>"
        raise GatewayConfigError(
            f"refusing to serve the gateway on non-loopback address {shown}:{config.port} without a token; "
            'set [gateway] token (or AGENTD_GATEWAY__TOKEN), or bind host = "127.0.0.1"'
        )


def request_token(request: Request) -> str | None:
    """The token a handshake presents: the Bearer header first, then ``?token=``."""
    values = request.headers.get_all("Authorization")
    if len(values) == 1:
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    query = parse_qs(urlsplit(request.path).query)
    tokens = query.get("token", [])
    return tokens[0] if len(tokens) == 1 else None


def token_ok(request: Request, token: str) -> bool:
    """True if no token is configured, or the request presents exactly that token."""
    if not token:
        return True
    given = request_token(request)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
