"""The gateway as a process: ``run_gateway(settings)`` for ``agentd gateway`` and the supervisor's
gateway child. Kept apart from ``server`` (the gateway itself, which tests and embedders run
in their own loop): what only a process owns lives here, its event loop (uvloop), its
signals, its open-file limit, its exit code and when its heap is frozen.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal

from agentd.config import Settings
from agentd.gateway.auth import GatewayConfigError, check_bind
from agentd.gateway.server import serve_gateway
from agentd.orphans import orphaned
from agentd.store import StoreError

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "run_gateway"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG: a supervisor should not restart it in a loop
# A second stop signal within this many seconds of the first is the same request, not "force".
REPEAT_IS_SAME = 1.0


def _raise_fd_limit(connections: int) -> None:
    """Each client is a file descriptor: lift the soft limit toward the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning("open-file limit %d is below max_connections=%d", new, connections)


def run_gateway(settings: Settings, *, hint_fd: int | None = None) -> int:
    """Run the gateway in this process on uvloop; SIGTERM/SIGINT stop it gracefully (1012).

    A second signal forces the stop, unless the supervisor is gone (``_main`` says why).
    Returns EXIT_OK, EXIT_FAILURE, or EXIT_CONFIG when the configuration is refused
    (restarting would not help).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.logging.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_bind(settings.gateway)
    except GatewayConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    _raise_fd_limit(settings.gateway.max_connections)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(settings, hint_fd))


async def _main(settings: Settings, hint_fd: int | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main = asyncio.current_task()
    first_at: list[float] = []  # when the first stop signal came

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not first_at:
            first_at.append(loop.time())
            log.info("received %s: stopping the gateway", name)
            stop.set()
        elif loop.time() - first_at[0] < REPEAT_IS_SAME or orphaned():
            # Not a request to force: Linux sends the parent-death signal again each time the
            # dying supervisor's children pass to another of its threads, milliseconds apart
            # (while they pass, our parent pid is still the supervisor's). Forcing cancelled
            # Gateway.close() midway and left the gateway hanging; ``agentd.orphans`` bounds
            # an orphan's stop instead.
            log.info("received %s again: already stopping", name)
        elif main is not None:
            log.warning("received %s again: forcing the stop", name)
            main.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    started = asyncio.Event()
    freezer = asyncio.create_task(_freeze_when(started), name="gateway-gc-freeze")
    try:
        await serve_gateway(settings, started=started, stop=stop, hint_fd=hint_fd)
        return EXIT_OK
    except asyncio.CancelledError:
        return EXIT_FAILURE
    except (GatewayConfigError, StoreError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except OSError as exc:
        log.error("gateway cannot listen on %s:%d: %s", settings.gateway.host, settings.gateway.port, exc)
        return EXIT_FAILURE
    except Exception:
        log.exception("gateway failed")
        return EXIT_FAILURE
    finally:
        freezer.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _freeze_when(started: asyncio.Event) -> None:
    """Once listening, move everything allocated so far out of the garbage collector's view.

    Why: what exists at that point (the modules of LanceDB, pyarrow, pydantic, websockets,
    the store, the tails: ~130k objects) lives as long as the process, yet every full
    collection walked it again: with 1,000 subscribers a full collection paused the event
    loop for 90-270 ms every 10-30 s, and those pauses were the gateway's p99. Objects
    created later (connections, batches) are collected as usual. Done here, in the process
    entry point, not in ``Gateway.start()``: a process embedding the gateway owns its heap.
    """
    await started.wait()
    gc.collect()
    gc.freeze()


if __name__ == "__main__":  # pragma: no cover - `python -m agentd.gateway.process` for ad-hoc runs
    from agentd.config import load_settings

    raise SystemExit(run_gateway(load_settings(os.environ.get("AGENTD_CONFIG"))))
