"""Feeds the Sparkplug node from the edge's event loop without running it there.

Building protobuf metrics is per-metric Python (about 3 µs per reported metric, bench/sparkplug.py).
On the event loop, a frame of 15,000 changed values would hold the loop for ~50 ms, and with it the
sources' polls. The event loop only enqueues the frame's columns (they are a drained copy, nothing else
writes them), and one named worker thread makes every call into the node, in order. The worker still
shares the GIL with the loop, but the interpreter switches between them every few milliseconds
instead of letting one 50 ms step run through.

**Bounded.** Adjacent frames waiting in the queue merge into one. Past ``2 x n_signals`` samples, the
merged frame shrinks to the latest sample of each signal. The node only ever reports the latest value
per frame, so merging loses nothing a host would have seen, and a stalled worker holds at most one
frame per signal. Events, health ticks and PLC states are never merged or dropped.

**Inline** (``sparkplug.feed: inline``): the same calls run at once on the caller's thread. On the demo plant
at 1 Hz that costs ~1.4 µs per sample less edge CPU than the worker (the threads' hand-offs of the GIL),
at the price of ~50 ms stretches on the event loop when every value changed (bench/RESULTS.md).

**Never raises into the daemon.** An exception in the node is counted in ``errors`` and logged; the
worker carries on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.sinks.sparkplug import SparkplugNode
from edge.sinks.sparkplug_settings import FeedMode

__all__ = ["SparkplugFeed"]

log = logging.getLogger(__name__)


class SparkplugFeed:
    def __init__(self, node: SparkplugNode, mode: FeedMode = FeedMode.THREAD) -> None:
        self.node = node
        self.mode = mode
        self.errors = 0
        self.frames_merged = 0
        self._cond = threading.Condition()
        self._queue: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sparkplug-feed", daemon=True)

    def start(self) -> None:
        self.node.start()
        if self.mode is FeedMode.THREAD:
            self._thread.start()

    def frame(self, ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray) -> None:
        if self.mode is FeedMode.INLINE:
            self._invoke(self.node.on_frame, (ts_ns, signal, value, quality))
            return
        with self._cond:
            if self._queue and self._queue[-1][0] == self.node.on_frame:
                _, (t0, s0, v0, q0) = self._queue.pop()
                ts_ns, signal = np.concatenate([t0, ts_ns]), np.concatenate([s0, signal])
                value, quality = np.concatenate([v0, value]), np.concatenate([q0, quality])
                self.frames_merged += 1
                if signal.shape[0] > 2 * self.node.catalogue.n_signals:
                    ts_ns, signal, value, quality = _latest_per_signal(ts_ns, signal, value, quality)
            self._queue.append((self.node.on_frame, (ts_ns, signal, value, quality)))
            self._cond.notify()

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        """Any other node method (on_events, on_health, set_plc_connected, tick), run in order."""
        if self.mode is FeedMode.INLINE:
            self._invoke(fn, args)
            return
        with self._cond:
            self._queue.append((fn, args))
            self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Let the worker finish what is queued, then stop the node (NDEATH, store closed)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.node.stop()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                fn, args = self._queue.popleft()
            self._invoke(fn, args)

    def _invoke(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("sparkplug: %s failed (the compact wire carries on)", getattr(fn, "__name__", fn))


def _latest_per_signal(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray,
                       quality: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The last sample of each signal, in arrival order."""
    rev = signal[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    keep = np.sort(signal.shape[0] - 1 - first_in_rev)
    return ts_ns[keep], signal[keep], value[keep], quality[keep]
