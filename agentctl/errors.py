"""Exit codes and the errors that carry them.

Commands raise a ``CtlError`` subclass; the root group turns it into a message on stderr (and a
JSON object on stdout with ``--json``) and the matching exit code, in one place, so every
command maps the same situation to the same code. The codes are a contract (issue 6).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CtlError",
    "NotFound",
    "Rejected",
    "TimedOut",
    "Unreachable",
    "UsageProblem",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the action was rejected or failed
EXIT_USAGE = 2  # bad arguments, bad config, database/config mismatch
EXIT_NOT_FOUND = 3  # session, conversation or database not found
EXIT_TIMEOUT = 4  # no acknowledgement in time; the action stays queued
EXIT_UNREACHABLE = 5  # no daemon answers on the control socket
EXIT_INTERRUPTED = 130  # Ctrl-C (as a shell reports a process killed by SIGINT)


class CtlError(Exception):
    """An outcome the user must see; ``details`` go into the JSON error object."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_json(self) -> dict[str, Any]:
        return {"error": self.message, "exit_code": self.exit_code, **self.details}


class Rejected(CtlError):
    """The worker refused or failed the action (duplicate create, invalid guidance, ...)."""

    exit_code = EXIT_FAILED


class UsageProblem(CtlError):
    """The invocation cannot work as given (bad config, shard count differs from the database)."""

    exit_code = EXIT_USAGE


class NotFound(CtlError):
    """The session, conversation or database does not exist."""

    exit_code = EXIT_NOT_FOUND


class TimedOut(CtlError):
    """No acknowledgement within ``--timeout``; the action is still queued and will be applied."""

    exit_code = EXIT_TIMEOUT


class Unreachable(CtlError):
    """No daemon answers on the control socket."""

    exit_code = EXIT_UNREACHABLE
