"""Who may connect: the bind rule at start, the token check during the handshake, redaction.

The token is checked in ``process_request``, i.e. before the WebSocket upgrade, so an
unauthorised client gets an HTTP 401 and never a single frame of session data. It is accepted
as ``Authorization: Bearer <token>`` (for clients that can set headers) or as a ``token``
query parameter (browsers' WebSocket API cannot set headers). Comparison is constant-time.

Why ``require_token`` exists: a loopback bind keeps other machines out, not other local users,
and the gateway streams every session; the systemd unit sets it so that the database
directory's owner-only mode is not bypassed through 127.0.0.1. The token is a secret: it never
appears in a log line (``RedactSecrets`` scrubs the websockets debug log of the request line and
headers) nor in an error message.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from agentd.config import GatewayConfig

__all__ = ["GatewayConfigError", "RedactSecrets", "check_bind", "is_loopback", "request_token", "token_ok"]


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
    """Refuse to start without a token on a non-loopback bind (DESIGN.md §7) or with require_token.

    The message names the settings to change, never the token's value.
    """
    if config.token.strip():
        return
    if config.require_token:
        raise GatewayConfigError(
            "[gateway] require_token is set but no token is configured; set [gateway] token "
            "(or AGENTD_GATEWAY__TOKEN, for the systemd unit in /etc/agentd/agentd.env or a drop-in "
            "made with `systemctl edit agentd`), or set require_token = false"
        )
    if not is_loopback(config.host):
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


class RedactSecrets(logging.Filter):
    """Replace every occurrence of the secrets in a record's message with ``***``.

    Attached to the websockets logger: at DEBUG it logs each request line (``?token=...``) and
    header (``Authorization: Bearer ...``). The record is rewritten in place (formatted once,
    args dropped), so every handler sees the redacted text.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
