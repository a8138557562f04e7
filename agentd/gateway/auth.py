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

The web console (``web.py``): a browser logs in once (``POST /login`` with the token in the
``Authorization`` header, never in a URL) and gets an ``HttpOnly; SameSite=Strict`` cookie whose
value is an HMAC of the token, so the cookie neither reveals the token nor outlives a change of
it. Two browser attacks are closed here as well:

- cross-site WebSocket hijacking: a browser sends cookies with a WebSocket handshake from any
  page, so every handshake (every request) that carries an ``Origin`` must come from the
  console's own origin or one of ``[gateway] allowed_origins`` (``origin_ok``). Clients that
  send no ``Origin`` are not browsers and are not concerned.
- DNS rebinding: a page of ``evil.example`` whose name is made to resolve to 127.0.0.1 is
  same-origin with itself, so without a token the ``Host`` must be a loopback name
  (``host_ok``); with a token, the cookie (bound to the real host) protects.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

from agentd.config import GatewayConfig

__all__ = [
    "COOKIE_NAME",
    "GatewayConfigError",
    "RedactSecrets",
    "authorized",
    "check_bind",
    "cookie_header",
    "host_ok",
    "is_loopback",
    "origin_ok",
    "request_token",
    "token_ok",
]

COOKIE_NAME = "agentd_console"
_COOKIE_CONTEXT = b"agentd console cookie v1"


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


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def cookie_header(token: str, *, clear: bool = False) -> str:
    """``Set-Cookie`` for a logged-in browser (or, with ``clear``, one that logs it out)."""
    value = "" if clear else _cookie_value(token)
    age = "; Max-Age=0" if clear else ""
    return f"{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict{age}"


def _request_cookie(request: Request) -> str | None:
    for header in request.headers.get_all("Cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        if COOKIE_NAME in jar:
            return jar[COOKIE_NAME].value
    return None


def authorized(request: Request, token: str) -> bool:
    """The token rule of the gateway, plus the console's login cookie."""
    if token_ok(request, token):
        return True
    given = _request_cookie(request)
    return given is not None and hmac.compare_digest(given.encode(), _cookie_value(token).encode())


def _host_name(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_ok(request: Request, token: str) -> bool:
    """Without a token, only loopback ``Host`` names (DNS rebinding); any host with one."""
    if token:
        return True
    host = request.headers.get("Host")
    return host is None or is_loopback(_host_name(host))


def origin_ok(request: Request, allowed: list[str], token: str) -> bool:
    """No ``Origin`` (not a browser), the console's own origin, or one listed in allowed_origins."""
    origins = request.headers.get_all("Origin")
    if not origins:
        return True
    if len(origins) > 1:
        return False
    origin = origins[0].strip().lower().rstrip("/")
    if origin in {o.strip().lower().rstrip("/") for o in allowed}:
        return True
    host = (request.headers.get("Host") or "").strip().lower()
    own = host and origin in (f"http://{host}", f"https://{host}")
    return bool(own) and host_ok(request, token)


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
