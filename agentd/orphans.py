"""How a child of the supervisor ends when the supervisor dies: gracefully, and within a bound.

Every child (worker, warm spare, gateway, maintenance child) stops gracefully when its
supervisor dies: Linux sends it SIGTERM (``PR_SET_PDEATHSIG``, set by
``set_parent_death_signal``) and a worker also sees EOF on its control channel. That path
runs Python code: a worker flushes what it can, a gateway closes its connections with 1012,
then the interpreter tears down LanceDB's threads. Nothing bounds how long that takes, and an
orphan that lingers holds up recovery: a supervisor killed with SIGKILL is restarted at once
(systemd's ``Restart=always``), and the new one starts no worker until the old ones have exited
(``agentd.supervision.dblock``), so every session of their shards waits that long. The long
chaos run caught one: a gateway that got its SIGTERM while still booting, and a second one
while closing, was still running 30 s after its supervisor died.

So ``exit_when_orphaned`` adds the bound: a thread that notices the parent is gone (its pid
changes: the orphan was re-parented) and ends the process with ``os._exit`` once
``ORPHAN_EXIT_DEADLINE`` seconds have passed, whatever the event loop or the interpreter's
teardown is doing. A hard exit is safe for every child: for a worker it is a ``kill -9``, which
the design survives (what was not durable is redone, and the epochs fence a stale writer); the
gateway and the maintenance child write no session data.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

__all__ = [
    "EXIT_ORPHANED",
    "ORPHAN_EXIT_DEADLINE",
    "PARENT_PID_ENV",
    "exit_when_orphaned",
    "orphaned",
    "set_parent_death_signal",
]

log = logging.getLogger(__name__)

# Seconds an orphan may take to stop gracefully before it exits hard. Above a gateway's close
# handshake (agentd.gateway.server.CLOSE_TIMEOUT, 5 s) and a worker's orphan stop (2 s).
ORPHAN_EXIT_DEADLINE = 10.0
EXIT_ORPHANED = 1  # nobody reads it (the parent is gone); "anything else" in every child's codes
_POLL = 0.25
# Set by the supervisor in each child's environment (agentd.supervision.children.child_env): its
# own pid. A child reads it instead of trusting its parent pid at start, because a supervisor
# killed while the child was still importing has re-parented it already: it would take its
# adopter for its supervisor and wait for it forever (the long chaos run: two such orphans, of
# supervisors killed a second after they started their children).
PARENT_PID_ENV = "AGENTD_SUPERVISOR_PID"
_parent: int | None = None  # the supervisor's pid, once exit_when_orphaned has read it


def set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies, even by SIGKILL: the graceful path."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - best effort
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def exit_when_orphaned(deadline: float = ORPHAN_EXIT_DEADLINE) -> threading.Thread:
    """Start the thread that ends this process ``deadline`` seconds after its parent died.

    Call it early in a child started by the supervisor (not in a process run by hand, whose
    parent is a shell or systemd). The parent is the pid in ``PARENT_PID_ENV`` when the
    supervisor set it, else whoever the parent is at the call.
    """
    global _parent
    parent = _parent = int(os.environ.pop(PARENT_PID_ENV, "0") or 0) or os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL)
        log.warning(
            "the supervisor (pid %d) is gone: stopping, and exiting at once if not stopped within %.0fs",
            parent,
            deadline,
        )
        time.sleep(deadline)
        # No logging here: the main thread may be stuck holding a handler's lock.
        os._exit(EXIT_ORPHANED)

    thread = threading.Thread(target=watch, name="orphan-deadline", daemon=True)
    thread.start()
    return thread


def orphaned() -> bool:
    """Whether the supervisor that started us is gone (False before ``exit_when_orphaned``)."""
    return _parent is not None and os.getppid() != _parent
