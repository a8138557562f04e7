"""Logging for every agentd process: stderr (journald captures it), text or JSON lines.

Every line carries the process role and worker index; lines logged from inside a session's
task also carry its session_id (a context variable set by the runtime, inherited by the
tasks a session starts).

LanceDB's own messages. Its Python layer warns through ``warnings`` (e.g. a short
``cleanup_older_than``); those become one log line each here (``captureWarnings``-style, without
the echoed source line). Its Rust core logs through the ``log`` crate into an ``env_logger``
that the ``lancedb`` extension installs *when it is imported*, filtered by ``$LANCEDB_LOG``
(default ``warn``) and writing straight to fd 2 in its own format, with Rust source paths
(``[... WARN lance::dataset::optimize] Compaction commit failed ... conflict_resolver.rs:1288``).
There is no hook to route those into Python logging short of capturing fd 2 (which would also
swallow crash output). So ``configure_logging`` sets ``$LANCEDB_LOG`` from ``[logging] level``
before anything imports lancedb (the CLI configures logging first; workers and the gateway
inherit the environment): ``error`` normally, so the expected, already-handled cases (a
compaction preempted by a writer, which maintenance retries) no longer print, while LanceDB's
errors still do; ``info`` at DEBUG. ``LANCEDB_LOG_STYLE=never`` keeps colour codes out of
journald. A ``$LANCEDB_LOG`` set by the operator is left alone.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import warnings
from typing import Any, TextIO

from agentd.config import LoggingConfig

__all__ = ["LANCEDB_LOG_ENV", "active_config", "configure_logging", "native_log_filter", "session_id_var"]

session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)

LANCEDB_LOG_ENV = "LANCEDB_LOG"
LANCEDB_LOG_STYLE_ENV = "LANCEDB_LOG_STYLE"
# Set by configure_logging() when it chose $LANCEDB_LOG itself, so a later call (a reload with
# another level) may change its own choice but never the operator's.
_CHOSEN_ENV = "_AGENTD_LANCEDB_LOG_CHOSEN"
_warnings_log = logging.getLogger("py.warnings")
# The [logging] section last applied by configure_logging(), for helper processes started
# without the settings (the maintenance child).
_active: LoggingConfig | None = None


def active_config() -> LoggingConfig | None:
    """The ``[logging]`` section this process logs with, or None before configure_logging()."""
    return _active


class _ContextFilter(logging.Filter):
    def __init__(self, role: str, worker: int | None) -> None:
        super().__init__()
        self.role = role
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.worker = self.worker
        record.session_id = session_id_var.get()
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = str(record.role) if record.worker is None else f"{record.role}-{record.worker}"  # type: ignore[attr-defined]
        session = f" session={record.session_id}" if record.session_id else ""  # type: ignore[attr-defined]
        line = f"{self.formatTime(record)} {record.levelname:<7} {where} {record.name}: {record.getMessage()}{session}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "role": record.role,  # type: ignore[attr-defined]
            "worker": record.worker,  # type: ignore[attr-defined]
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.session_id:  # type: ignore[attr-defined]
            data["session_id"] = record.session_id  # type: ignore[attr-defined]
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def native_log_filter(level: str) -> str:
    """The ``$LANCEDB_LOG`` filter for an agentd log level: LanceDB's Rust errors always show,
    its warnings (expected conflicts agentd retries, with Rust source paths) only when debugging."""
    return "info" if level == "DEBUG" else "error"


def _set_native_log_env(level: str) -> None:
    """Choose ``$LANCEDB_LOG`` unless the operator set it; effective only before lancedb is imported."""
    if os.environ.get(LANCEDB_LOG_ENV) is None or os.environ.get(_CHOSEN_ENV):
        os.environ[LANCEDB_LOG_ENV] = native_log_filter(level)
        os.environ[_CHOSEN_ENV] = "1"
    os.environ.setdefault(LANCEDB_LOG_STYLE_ENV, "never")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: one log line, no echoed source line."""
    _warnings_log.warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


def configure_logging(cfg: LoggingConfig, *, role: str, worker: int | None = None) -> None:
    """Replace the root handlers with one stderr handler for this process's role.

    Also routes Python warnings (LanceDB's included) into the log and sets ``$LANCEDB_LOG`` for
    LanceDB's Rust logger (see the module docstring): call it before importing lancedb.
    """
    global _active
    _active = cfg
    _set_native_log_env(cfg.level)
    warnings.showwarning = _show_warning
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(role, worker))
    handler.setFormatter(_JsonFormatter() if cfg.json_lines else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.level)
