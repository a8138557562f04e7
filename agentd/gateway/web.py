"""Plain HTTP on the gateway's port: the console's files, its login, its JSON reads, /metrics.

The gateway is a websockets server, and websockets hands every request to ``process_request``
before the upgrade; answering with a response there serves plain HTTP (the same way
``/healthz`` always has). A request with ``Upgrade: websocket`` goes on to the handshake once
it passes the origin and auth checks; anything else is routed here:

=====================  ==========  ===================================================
``/``, ``/ui/...``     public      the console (static files shipped in ``agentd/console``)
``POST /login``        token       ``Authorization: Bearer <token>`` -> login cookie
``POST /logout``       public      clears the cookie
``/api/...``           auth        JSON reads (``read_api.py``)
``/metrics``           auth        Prometheus text (``metrics.py``)
``/healthz``           public      summary; detail with auth (``health.py``)
=====================  ==========  ===================================================

"auth" is the gateway's token rule (no token configured: everyone on loopback) or the login
cookie. The console's files hold no data, so they need no auth: the page itself asks
``/api/me`` and shows the login form on 401. Why a ``POST`` with the token in a header rather
than a form field: websockets' parser refuses request bodies, and a header keeps the token out
of URLs, logs and the browser history alike.

Every request carrying an ``Origin`` must pass ``auth.origin_ok`` (cross-site WebSocket
hijacking) and every request but ``/healthz`` ``auth.host_ok`` (DNS rebinding).
"""

from __future__ import annotations

import http
import json
import logging
import mimetypes
from collections import OrderedDict
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agentd.gateway.auth import authorized, cookie_header, host_ok, origin_ok, token_ok
from agentd.gateway.health import HealthSummary
from agentd.gateway.metrics import CONTENT_TYPE
from agentd.gateway.read_api import ApiError

if TYPE_CHECKING:
    from agentd.gateway.server import Gateway

__all__ = ["CSP", "QuietHttpLog", "route"]

log = logging.getLogger(__name__)

# The console loads only its own files and talks only to its own origin (ws: included).
CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
CONSOLE_PACKAGE = "agentd.console"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


class QuietHttpLog(logging.Filter):
    """Drop websockets' INFO lines for plain HTTP answered without error (console files, reads).

    websockets logs every HTTP response and the close that follows at INFO, as it does for a
    WebSocket's open and close. An open console polls ``/api`` every 2 s, which would fill the
    daemon's log with two lines a second per browser tab; refusals (4xx, 5xx) are still logged.
    Records carry their connection (websockets' ``LoggerAdapter`` extra ``websocket``), so the
    close of a quietly answered request is recognised (by the connection's id) and dropped too.
    """

    def __init__(self, memory: int = 10_000) -> None:
        super().__init__()
        self.memory = memory
        self._quiet: OrderedDict[Any, None] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        conn = getattr(record, "websocket", None)
        try:
            key = None if conn is None else conn.id
        except ReferenceError:  # the connection is gone already
            key = None
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith("HTTP response sent") and key is not None:
            status = record.args[0] if isinstance(record.args, tuple) and record.args else 500
            if isinstance(status, int) and status < 400:
                self._quiet[key] = None
                while len(self._quiet) > self.memory:
                    self._quiet.popitem(last=False)
                return False
        elif message == "connection closed" and key is not None and key in self._quiet:
            del self._quiet[key]
            return False
        return True


def _is_upgrade(request: Request) -> bool:
    return any("websocket" in v.lower() for v in request.headers.get_all("Upgrade"))


def _response(status: http.HTTPStatus, body: bytes, content_type: str, **extra: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
    )
    for name, value in extra.items():
        headers[name.replace("_", "-")] = value
    return Response(status.value, status.phrase, headers, body)


def _json(status: http.HTTPStatus, data: Any, **extra: str) -> Response:
    return _response(status, (json.dumps(data, default=str) + "\n").encode(), "application/json", **extra)


def _error(status: http.HTTPStatus, message: str, **extra: str) -> Response:
    return _json(status, {"error": message}, **extra)


def _static(path: str) -> Response:
    """A console file: ``/ui/<name>`` if it exists, else the page itself (client-side routes)."""
    name = path.removeprefix("/ui/").strip("/") if path.startswith("/ui/") else ""
    root = resources.files(CONSOLE_PACKAGE)
    if name and "/" not in name and not name.startswith("."):
        candidate = root.joinpath(name)
        if candidate.is_file():
            suffix = "." + name.rpartition(".")[2]
            kind = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
            charset = "; charset=utf-8" if kind.startswith("text/") or kind.endswith("javascript") else ""
            return _response(http.HTTPStatus.OK, candidate.read_bytes(), kind + charset)
        if "." in name:
            return _error(http.HTTPStatus.NOT_FOUND, f"no console file {name}")
    body = root.joinpath("index.html").read_bytes()
    return _response(
        http.HTTPStatus.OK,
        body,
        "text/html; charset=utf-8",
        Content_Security_Policy=CSP,
        X_Frame_Options="DENY",
    )


async def route(gw: Gateway, connection: ServerConnection, request: Request) -> Response | None:
    """Answer a plain HTTP request, refuse a bad handshake, or return None to accept the upgrade."""
    cfg = gw.config
    path = unquote(urlsplit(request.path).path) or "/"
    if path == "/healthz" and not _is_upgrade(request):
        report = gw.health()
        body: HealthSummary = report if authorized(request, cfg.token) else report.summary()
        status = http.HTTPStatus.OK if report.status == "ok" else http.HTTPStatus.SERVICE_UNAVAILABLE
        return _response(status, (body.model_dump_json() + "\n").encode(), "application/json")
    if not origin_ok(request, cfg.allowed_origins, cfg.token):
        gw.stats.delivery.rejected_origin += 1
        log.info("refused a request from origin %r", request.headers.get("Origin"))
        return _error(http.HTTPStatus.FORBIDDEN, "origin not allowed; add it to [gateway] allowed_origins")
    if not host_ok(request, cfg.token):
        gw.stats.delivery.rejected_origin += 1
        return _error(http.HTTPStatus.FORBIDDEN, "host not allowed: use a loopback address or configure a token")
    if _is_upgrade(request):
        if not authorized(request, cfg.token):
            gw.stats.delivery.rejected_unauthorized += 1
            return _unauthorized("missing or wrong gateway token\n")
        if len(gw.connections) >= cfg.max_connections:
            gw.stats.delivery.rejected_full += 1
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None
    if path == "/login":
        return _login(gw, request)
    if path == "/logout":
        return _json(http.HTTPStatus.OK, {"auth": False}, Set_Cookie=cookie_header(cfg.token, clear=True))
    if path == "/" or path == "/ui" or path.startswith("/ui/"):
        return _static(path)
    if path == "/favicon.ico":
        return _response(http.HTTPStatus.NO_CONTENT, b"", "image/x-icon")
    if not authorized(request, cfg.token):
        gw.stats.delivery.rejected_unauthorized += 1
        return _unauthorized(json.dumps({"error": "login required"}) + "\n", json_body=True)
    if path == "/metrics":
        return _response(http.HTTPStatus.OK, gw.metrics.render(), CONTENT_TYPE)
    if path.startswith("/api/"):
        return await _api(gw, path.removeprefix("/api/"), dict(parse_qsl(urlsplit(request.path).query)))
    return _error(http.HTTPStatus.NOT_FOUND, f"no such page {path}")


def _unauthorized(text: str, *, json_body: bool = False) -> Response:
    kind = "application/json" if json_body else "text/plain; charset=utf-8"
    return _response(http.HTTPStatus.UNAUTHORIZED, text.encode(), kind, WWW_Authenticate='Bearer realm="agentd"')


def _login(gw: Gateway, request: Request) -> Response:
    if request.method != "POST":
        return _error(http.HTTPStatus.METHOD_NOT_ALLOWED, "log in with POST /login", Allow="POST")
    token = gw.config.token
    if not token:
        return _json(http.HTTPStatus.OK, {"auth": True, "token_required": False})
    if not token_ok(request, token) or not request.headers.get("Authorization"):
        gw.stats.delivery.rejected_unauthorized += 1
        log.info("console login refused: wrong token")
        return _unauthorized(json.dumps({"error": "wrong token"}) + "\n", json_body=True)
    return _json(http.HTTPStatus.OK, {"auth": True, "token_required": True}, Set_Cookie=cookie_header(token))


async def _api(gw: Gateway, path: str, params: dict[str, str]) -> Response:
    api = gw.read_api
    if api is None:
        return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "the gateway is starting")
    parts = [p for p in path.split("/") if p]
    try:
        if parts == ["me"]:
            data: Any = {
                "auth": True,
                "token_required": bool(gw.config.token),
                "control": gw.config.control,
                "heartbeat_interval": api.heartbeat_interval,
            }
        elif parts == ["sessions"]:
            data = await api.sessions(params)
        elif len(parts) == 2 and parts[0] == "sessions":
            data = await api.session(parts[1])
        elif parts == ["conversations"]:
            data = await api.conversations()
        elif len(parts) == 2 and parts[0] == "conversations":
            data = await api.conversation(parts[1])
        elif parts == ["daemon"]:
            data = await api.daemon()
        else:
            return _error(http.HTTPStatus.NOT_FOUND, f"no such API /api/{path}")
    except ApiError as exc:
        return _error(http.HTTPStatus(exc.status), str(exc))
    except Exception as exc:
        log.warning("console read /api/%s failed: %s", path, exc)
        return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, f"read failed: {type(exc).__name__}: {exc}"[:500])
    return _json(http.HTTPStatus.OK, data)
