"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per state change.

Why our own: python-systemd needs libsystemd headers to build, and the protocol is a few lines.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemons run the same
everywhere. A send that fails is logged once and never raises: a broken notify socket must not
take the daemon down (systemd's watchdog restarts it if it truly is hung).

``RELOADING=1`` carries ``MONOTONIC_USEC=`` as systemd 253+ requires for ``Type=notify-reload``
(older managers ignore the extra field); after a reload the daemon sends ``READY=1`` again, which
is what ends the reload in systemd's eyes. ``extend_timeout()`` asks for more time while a slow
start or stop is still making progress (``EXTEND_TIMEOUT_USEC=``, systemd 236+), so the unit's
timeouts can stay tight for the hung case.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

__all__ = ["Notifier"]


class Notifier:
    """Sends READY=1, STATUS=, WATCHDOG=1, RELOADING=1 and STOPPING=1 to ``NOTIFY_SOCKET``."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False
        self.sent: list[str] = []  # what was sent, for the health endpoint and tests

    @classmethod
    def from_env(cls) -> Notifier:
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` as systemd sets them.

        The watchdog is ours only when ``WATCHDOG_PID`` is unset or names this process: a child
        that inherited the environment must not pet its parent's watchdog.
        """
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if raw and (not pid or pid == str(os.getpid())):
            try:
                usec = int(raw)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", raw)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """Half the watchdog timeout (systemd's advice), or None when no watchdog is set."""
        if not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2e6

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram; False when not under systemd or the send failed."""
        if self._address is None:
            return False
        msg = "\n".join(fields)
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg.encode(), address)
        except OSError as e:
            if not self._warned:
                log.warning("sd_notify to %s failed: %s (further failures not logged)", self._address, e)
                self._warned = True
            return False
        self.sent.append(msg)
        if len(self.sent) > 100:
            del self.sent[:50]
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """Reload started; follow with :meth:`ready` once the new config is in effect."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd to wait ``seconds`` more for the current start/stop/reload step."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1e6))}")

    def errno(self, code: int) -> bool:
        """Report why the daemon is failing (shown by ``systemctl status`` as the unit's errno)."""
        return self.notify(f"ERRNO={int(code)}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
