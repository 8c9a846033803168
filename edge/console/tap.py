"""What the console shows of the signals: latest value, quality and anomaly score per signal, and a
short history (sparkline) per signal while someone watches.

The daemon's flush calls :meth:`SignalTap.update` once per frame with the frame's numpy columns; that
is the console's only presence on the hot path: three fancy-index assignments (a few µs for 15,000
samples, no Python object per sample). The sparkline ring, ``sparkline_points`` x signals float32
(~11 MB for 15,000 signals and 180 points), exists only while a viewer asked for it within
``watch_linger_s``: then each flush also copies the latest values into one ring row. Nobody watching
costs the three assignments and nothing else (bench/console_load.py measures both).

Threads: the daemon's loop writes, the console's thread reads. Readers copy what they show; a read that
races a flush sees each value from this flush or the one before, which is all a page needs. The ring's
row index moves under a lock so a reader never takes a half-written row as the newest.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from plantwire.plant import Quality, SignalTable

__all__ = ["NEVER", "SignalIndex", "SignalTap", "Sparklines"]

#: ``latest_quality`` of a signal not read yet.
NEVER = 255


@dataclass(frozen=True)
class Sparklines:
    """Flush times (ns, oldest first) and one row of values per asked signal (NaN: no value then)."""

    ts_ns: np.ndarray
    values: np.ndarray  # float32, (signals, points)


class SignalTap:
    def __init__(self, n_signals: int, points: int, linger_s: float) -> None:
        self.latest_value = np.full(n_signals, np.nan, dtype=np.float64)
        self.latest_quality = np.full(n_signals, NEVER, dtype=np.uint8)
        self.latest_score = np.full(n_signals, np.nan, dtype=np.float32)
        self.points = points
        self.linger_s = linger_s
        self._lock = threading.Lock()
        self._ring: np.ndarray | None = None
        self._ring_ts = np.zeros(points, dtype=np.int64)
        self._rows = 0  # rows written since the ring was made
        self._watched_until = 0.0  # monotonic
        self.updates = 0

    @property
    def ring_bytes(self) -> int:
        ring = self._ring
        return 0 if ring is None else int(ring.nbytes)

    def watch(self) -> None:
        """A viewer wants sparklines: keep (or start) the ring for another ``linger_s``."""
        self._watched_until = time.monotonic() + self.linger_s

    def update(self, ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
               score: np.ndarray | None) -> None:
        """One frame's columns (called from the daemon's flush; never raises on well-formed columns)."""
        idx = signal.astype(np.intp, copy=False)  # once: numpy would convert a uint32 index per assignment
        self.latest_value[idx] = value
        self.latest_quality[idx] = quality
        if score is not None:
            self.latest_score[idx] = score
        self.updates += 1
        if self._watched_until == 0.0:
            return
        if time.monotonic() > self._watched_until:
            with self._lock:
                self._ring = None
                self._rows = 0
                self._watched_until = 0.0
            return
        ring = self._ring
        if ring is None:
            ring = np.full((self.points, self.latest_value.shape[0]), np.nan, dtype=np.float32)
        row = self._rows % self.points
        ring[row] = self.latest_value  # float64 -> float32 in place, no temporary per sample
        self._ring_ts[row] = int(ts_ns.max()) if ts_ns.size else time.time_ns()
        with self._lock:
            self._ring = ring
            self._rows += 1

    def sparklines(self, rows: np.ndarray) -> Sparklines:
        """The ring's values of signals ``rows``, oldest first (empty while nobody watched)."""
        with self._lock:
            ring, n = self._ring, self._rows
        if ring is None or n == 0:
            return Sparklines(np.zeros(0, dtype=np.int64), np.zeros((rows.shape[0], 0), dtype=np.float32))
        k = min(n, self.points)
        order = (np.arange(n - k, n) % self.points)
        return Sparklines(self._ring_ts[order].copy(), ring[order][:, rows].T.copy())


class SignalIndex:
    """Find signals by id, machine, device or quality: one lower-case line per signal, searched with
    ``str.find`` over a list (about 2 ms for 15,000 signals, measured by bench/console_load.py).

    Query words are AND-ed; ``quality:bad`` / ``quality:good`` / ``quality:uncertain`` / ``quality:none``
    filter on the latest quality; ``machine:X`` and ``device:X`` match those columns only.
    """

    def __init__(self, table: SignalTable) -> None:
        self.ids = table.ids
        self.machine_of = [table.machine_ids[m] for m in table.machine.tolist()]
        self.device_of = [table.devices[d].name for d in table.device.tolist()]
        self.units = table.units
        self._line = [f"{s} {m} {d}".lower() for s, m, d in zip(self.ids, self.machine_of, self.device_of,
                                                                  strict=True)]
        self._machine = [m.lower() for m in self.machine_of]
        self._device = [d.lower() for d in self.device_of]

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, quality: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
        """Indices of the first ``limit`` matches (table order) and the number of matches in all."""
        mask: np.ndarray | None = None
        for word in query.lower().split()[:8]:
            key, sep, val = word.partition(":")
            if sep and key == "quality":
                want = {"good": Quality.GOOD, "uncertain": Quality.UNCERTAIN, "bad": Quality.BAD,
                        "none": NEVER}.get(val)
                m = quality == want if want is not None else np.zeros(len(self.ids), dtype=bool)
            elif sep and key in ("machine", "device"):
                col = self._machine if key == "machine" else self._device
                m = np.fromiter((val in s for s in col), dtype=bool, count=len(col))
            else:
                m = np.fromiter((word in s for s in self._line), dtype=bool, count=len(self._line))
            mask = m if mask is None else mask & m
        hits = np.arange(len(self.ids)) if mask is None else np.flatnonzero(mask)
        return hits[:limit], int(hits.shape[0])
