"""The gateway as the supervisor's child: ``python -m agentd.supervision.gateway_child``.

The same gateway as ``agentd gateway``, but it runs the settings the supervisor validated and
sent as the first line on fd ``--control-fd`` (``agentd.supervision.handoff``), never a fresh
read of ``config.toml``: a file broken on disk after start must not keep a restarted gateway
from coming back. After the settings the channel carries the workers' commit hints
(``agentd.protocol.CommitHint``, forwarded by the supervisor), so the gateway reads new rows at
once instead of at its next poll.
Like every child, it exits when the supervisor dies (parent-death signal), and within
``agentd.orphans.ORPHAN_EXIT_DEADLINE`` seconds even if its graceful stop hangs.
"""

from __future__ import annotations

import argparse
import os
import sys

from agentd.config import ConfigError
from agentd.logsetup import configure_logging
from agentd.supervision.handoff import read_hello

__all__ = ["EXIT_NO_SETTINGS", "main"]

EXIT_NO_SETTINGS = 2  # like `agentd gateway` with a bad config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentd-gateway-child", description=__doc__.splitlines()[0])
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    from agentd.orphans import exit_when_orphaned, orphaned, set_parent_death_signal

    set_parent_death_signal()
    exit_when_orphaned()
    if orphaned():  # the supervisor died before we got here
        return 0
    try:
        settings = read_hello(args.control_fd)
    except ConfigError as exc:
        os.close(args.control_fd)
        sys.stderr.write(f"agentd gateway: {exc}\n")  # logging is not configured yet
        return EXIT_NO_SETTINGS
    configure_logging(settings.logging, role="gateway")
    from agentd.gateway.process import run_gateway

    # The channel stays open: the supervisor forwards the workers' commit hints on it.
    return run_gateway(settings, hint_fd=args.control_fd)


if __name__ == "__main__":
    sys.exit(main())
