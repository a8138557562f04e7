"""A dependency-free client for systemd's service notification protocol (sd_notify).

Why not python-systemd: it needs libsystemd headers to build and the protocol is one datagram
per message. Each message is a set of ``KEY=value`` lines sent on an ``AF_UNIX``/``SOCK_DGRAM``
socket named by ``$NOTIFY_SOCKET``: a filesystem path, or an abstract-namespace name when it
starts with ``@``. systemd reads the sender's pid from kernel-attached credentials, so nothing
else has to be sent. With ``NotifyAccess=main`` only the main process (the supervisor) is
listened to; a worker that inherited the variable is ignored.

Every method is a no-op when ``$NOTIFY_SOCKET`` is unset (a terminal, a test, Type=simple), so
callers never branch on "are we under systemd". The socket is non-blocking and a failed send is
logged at debug level and reported as ``False``, never raised: a lost status line must not take
the daemon down, and the watchdog catches a daemon that truly cannot reach systemd. Sending never
blocks, so the methods may be called from an event loop.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["SdNotifier"]

log = logging.getLogger(__name__)

# systemd reads at most PIPE_BUF bytes per notification; keep free text well below that.
_MAX_STATUS_CHARS = 1024
_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _socket_address(value: str) -> str | None:
    """Turn ``$NOTIFY_SOCKET`` into an address for ``sendto``: ``@name`` becomes ``\\0name``."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd only ever hands out absolute paths or '@' names; anything else is a mistake.
    log.warning("ignoring NOTIFY_SOCKET=%r: neither an absolute path nor an '@' name", value)
    return None


def _one_line(text: str) -> str:
    """Flatten free text so it cannot inject extra ``KEY=value`` lines."""
    flat = " ".join(text.splitlines())
    return flat[:_MAX_STATUS_CHARS]


class SdNotifier:
    """Send state changes to the service manager; silent when not run by systemd.

    The environment is read once at construction. Pass ``unset_environment=True`` in the
    supervisor so that children started afterwards do not inherit ``NOTIFY_SOCKET`` and the
    watchdog variables (like ``sd_notify(1, ...)``); the notifier keeps its own copy.
    Thread-safe: one datagram is one ``sendto``, and the lazily created socket is guarded.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> None:
        env = os.environ if environ is None else environ
        # Set here, never changed: where datagrams go (None = systemd is not listening).
        self._address: str | None = _socket_address(env.get("NOTIFY_SOCKET", ""))
        # Raw watchdog variables, interpreted in watchdog_interval() against the current pid.
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        # Created on first send, dropped after a failure so the next send starts afresh.
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if unset_environment:
            for name in _ENV_VARS:
                os.environ.pop(name, None)

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` named a usable address."""
        return self._address is not None

    def notify(self, **fields: str | int | bool) -> bool:
        """Send one datagram with ``KEY=value`` lines; True if the service manager got it.

        Keys must be upper-case protocol names (``READY``, ``STATUS``, ...): a bad key or a
        value containing a newline is a programming error and raises ``ValueError``. Send
        failures do not raise (see the module docstring).
        """
        lines = []
        for key, value in fields.items():
            text = str(int(value)) if isinstance(value, bool) else str(value)
            if not _KEY_RE.match(key) or "\n" in text:
                raise ValueError(f"invalid sd_notify field {key}={text!r}")
            lines.append(f"{key}={text}")
        if not lines:
            raise ValueError("sd_notify needs at least one field")
        return self._send(("\n".join(lines) + "\n").encode())

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: ``READY=1``, with an optional status line."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=_one_line(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts; systemd waits for the next ``ready()`` before finishing it.

        ``MONOTONIC_USEC`` is sent along because systemd >= 253 requires it with
        ``RELOADING=1`` to pair the message with the reload it asked for (Type=notify-reload);
        older versions ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        if status is None:
            return self.notify(RELOADING=1, MONOTONIC_USEC=usec)
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec, STATUS=_one_line(status))

    def stopping(self, status: str | None = None) -> bool:
        """A graceful stop has begun: ``STOPPING=1``."""
        if status is None:
            return self.notify(STOPPING=1)
        return self.notify(STOPPING=1, STATUS=_one_line(status))

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``); send only while the daemon is actually healthy."""
        return self.notify(WATCHDOG=1)

    def watchdog_trigger(self, status: str | None = None) -> bool:
        """``WATCHDOG=trigger``: tell systemd the daemon is stuck, as if a ping had been missed.

        systemd then applies the unit's watchdog action (``Restart=on-watchdog``/``on-failure``)
        at once instead of waiting out ``WatchdogSec``. Send only when the process cannot
        recover by itself; never for a condition it is still handling.
        """
        if status is None:
            return self.notify(WATCHDOG="trigger")
        return self.notify(WATCHDOG="trigger", STATUS=_one_line(status))

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by ``systemctl status``."""
        return self.notify(STATUS=_one_line(text))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the current start/stop/runtime timeout fires.

        Must be repeated within each extension, like the watchdog, for long migrations or
        drains.
        """
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` pings: half of ``$WATCHDOG_USEC``, or None if off.

        Half, as sd_watchdog_enabled(3) recommends, so one late ping is not fatal. None when
        the variable is unset or invalid, or when ``$WATCHDOG_PID`` names another process (the
        variables were inherited from a parent that is the one being watched).
        """
        if self._watchdog_pid:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                log.debug("ignoring invalid WATCHDOG_PID=%r", self._watchdog_pid)
                return None
            if pid != os.getpid():
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Close the socket; a later send reopens it. Safe to call more than once."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, payload: bytes) -> bool:
        if self._address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # Includes BlockingIOError (receiver's queue full) and ENOENT/ECONNREFUSED.
                log.debug("sd_notify to %r failed: %s", self._address, exc)
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False
        return True
