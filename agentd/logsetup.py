"""Logging for every agentd process: stderr (journald captures it), text or JSON lines.

Every line carries the process role and worker index; lines logged from inside a session's
task also carry its session_id (a context variable set by the runtime, inherited by the
tasks a session starts).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

from agentd.config import LoggingConfig

__all__ = ["configure_logging", "session_id_var"]

session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)


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


def configure_logging(cfg: LoggingConfig, *, role: str, worker: int | None = None) -> None:
    """Replace the root handlers with one stderr handler for this process's role."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(role, worker))
    handler.setFormatter(_JsonFormatter() if cfg.json_lines else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.level)
