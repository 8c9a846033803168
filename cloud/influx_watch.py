"""Is InfluxDB answering? A ping on its own connection, every second, independent of the writes.

The write path alone cannot tell: a write to a stalled (SIGSTOP-ed, swapping, hung) InfluxDB
blocks until its timeout (``influx.timeout_s``, 30 s by default, generous because a large batch
to a busy server is legitimately slow), and during that time the ingestor used to report
``influx_up 1`` and a healthy status. :class:`InfluxWatch` pings ``/ping`` every
``influx.ping_interval_s`` with ``influx.ping_timeout_s`` on a connection of its own, in a thread
of its own, and reports every change of state at once through ``on_change``. The first failed
ping marks InfluxDB down: on loopback or a LAN, two seconds without an answer to ``/ping`` is not
a busy server, it is a stalled or unreachable one, and an operator wants to know at once.

A ping never decides whether data is retried or dropped (the writer does, and keeps every
message unacknowledged until InfluxDB accepted it); it only reports, and lets the writer retry
at once when InfluxDB answers again instead of sleeping out its back-off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum

from cloud.sinks.influx import InfluxPing, RetryableWriteError

__all__ = ["InfluxWatch", "Reachability"]


class Reachability(Enum):
    UNKNOWN = "unknown"  # no ping answered or failed yet
    UP = "up"
    DOWN = "down"


class InfluxWatch:
    """Pings in a daemon thread; ``on_change(state, detail, ping_s)`` runs in that thread on every change.

    ``on_ping(ping_s, ok)`` (optional) runs after every ping, for a latency gauge.
    """

    def __init__(
        self,
        ping: InfluxPing,
        *,
        interval_s: float,
        on_change: Callable[[Reachability, str], None],
        on_ping: Callable[[float, bool], None] | None = None,
    ) -> None:
        self._ping = ping
        self.interval_s = interval_s
        self._on_change = on_change
        self._on_ping = on_ping
        self.state = Reachability.UNKNOWN
        self.detail = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the ping thread and writers (answered()) both change the state

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="influx-ping", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop pinging; returns within one ping timeout at most."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._ping.close()

    def check(self) -> Reachability:
        """One ping now (also what the thread does each interval); returns the new state."""
        t0 = time.monotonic()
        try:
            self._ping.ping()
        except RetryableWriteError as exc:
            state, detail = Reachability.DOWN, str(exc)
        else:
            state, detail = Reachability.UP, ""
        if self._on_ping is not None:
            self._on_ping(time.monotonic() - t0, state is Reachability.UP)
        self._set(state, detail)
        return state

    def answered(self) -> None:
        """InfluxDB just answered a request (a write succeeded): up now, not at the next ping."""
        if self.state is not Reachability.UP:
            self._set(Reachability.UP, "")

    def _set(self, state: Reachability, detail: str) -> None:
        with self._lock:
            if state is self.state:
                return
            self.state, self.detail = state, detail
            self._on_change(state, detail)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.check()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))
