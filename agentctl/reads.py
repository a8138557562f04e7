"""Read views through the daemon, or from LanceDB here when no daemon answers.

The views themselves are ``agentd.views`` functions: the daemon runs them for a ``read``
request, and this module runs the same function on its own connection otherwise, so a
command prints the same thing either way. Only the no-daemon path imports LanceDB.
"""

from __future__ import annotations

from typing import Any

from agentctl import transport
from agentctl.context import Obj
from agentctl.errors import NotFound, UsageProblem

__all__ = ["DEFAULT_READ_TIMEOUT", "read"]

# A read of a large list or a page of steps on a busy daemon may take a while.
DEFAULT_READ_TIMEOUT = 30.0
_FALL_BACK_CODES = ("unavailable", "version")


def read(obj: Obj, view: str, params: dict[str, Any], **details: Any) -> Any:
    """The view's data; NotFound (exit 3, with ``details`` in its JSON) for an unknown id."""
    timeout = obj.timeout if obj.timeout is not None else DEFAULT_READ_TIMEOUT
    try:
        return transport.read(obj.socket_path(), view, params, timeout=timeout)
    except transport.DaemonError as exc:
        if exc.code == "not_found":
            raise NotFound(exc.message, **details) from exc
        if exc.code not in _FALL_BACK_CODES:
            raise UsageProblem(f"the daemon refused the read: {exc.message}", code=exc.code) from exc
    except (transport.NoDaemon, transport.DaemonLost):
        pass
    return read_here(obj, view, params, **details)


def read_here(obj: Obj, view: str, params: dict[str, Any], **details: Any) -> Any:
    """The view answered by this process (imports LanceDB)."""
    settings = obj.settings()

    async def go() -> Any:
        from agentctl.direct import read_direct

        return await read_direct(settings, view, params)

    try:
        return obj.run(go())
    except LookupError as exc:
        raise NotFound(str(exc.args[0] if exc.args else exc), **details) from exc
