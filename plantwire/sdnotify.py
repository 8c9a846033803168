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
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Notifier", "run_wrapped"]


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


def run_wrapped(argv: list[str], ready_file: Path, *, ready_timeout_s: float = 300.0,
                notifier: Notifier | None = None) -> int:
    """Run ``argv`` as a child and speak the notify protocol for it: READY=1 once it has written
    ``ready_file``, WATCHDOG=1 while it lives, STOPPING=1 when asked to stop; SIGTERM, SIGINT and
    SIGHUP are passed on. Returns the child's exit code (128 + n if a signal ended it).

    For programs that announce readiness with a file instead of sd_notify (the simulator's
    ``--ready-file``). The watchdog then proves the child is alive, not that its loop turns.
    """
    import signal
    import subprocess

    n = notifier or Notifier.from_env()
    ready_file.unlink(missing_ok=True)  # a stale file from the last run must not mean "ready"
    child = subprocess.Popen(argv)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            n.stopping()
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    interval = min(n.watchdog_interval_s() or 5.0, 5.0) / 2
    started = time.monotonic()
    ready = False
    while True:
        try:
            code = child.wait(0.1 if not ready else interval)
            break
        except subprocess.TimeoutExpired:
            pass
        if not ready and ready_file.exists():
            ready = True
            n.ready(status=f"{argv[0]} ready")
        elif not ready and time.monotonic() - started > ready_timeout_s:
            n.status(f"not ready after {ready_timeout_s:.0f} s")
        n.watchdog()
    if not stopping:
        n.stopping()
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    """``python -m plantwire.sdnotify --ready-file PATH -- COMMAND...``: see :func:`run_wrapped`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m plantwire.sdnotify", description=run_wrapped.__doc__)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--ready-timeout", type=float, default=300.0, metavar="S")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    return run_wrapped(command, args.ready_file, ready_timeout_s=args.ready_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
