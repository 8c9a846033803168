"""Frames: the in-memory unit samples travel in, as preallocated numpy columns.

Besides the four sample columns, a frame carries each sample's OPC-UA StatusCode (0 = Good), so
*which* Bad it was reaches the wire (v3) and InfluxDB; a source that has no codes appends 0.

Sources append whole chunks (one Modbus block read, one OPC-UA publish response); the publisher
drains the buffer once per batch interval. The buffer never grows: it is sized from config, and
when a chunk does not fit, ``on_full`` is called first so the owner can flush it into a batch.
Nothing here creates a Python object per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """Equal-length sample columns; ``signal`` indexes the gateway's signal table."""

    ts_ns: np.ndarray  # int64
    signal: np.ndarray  # uint32
    value: np.ndarray  # float64
    quality: np.ndarray  # uint8
    status: np.ndarray | None = None  # uint32 OPC-UA StatusCode, 0 = Good

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


class FrameBuffer:
    """Fixed-capacity column buffer; not thread-safe (owned by the event loop)."""

    def __init__(self, capacity: int, on_full: Callable[[], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._ts = np.empty(capacity, dtype=np.int64)
        self._sig = np.empty(capacity, dtype=np.uint32)
        self._val = np.empty(capacity, dtype=np.float64)
        self._q = np.empty(capacity, dtype=np.uint8)
        self._st = np.empty(capacity, dtype=np.uint32)
        self._n = 0
        self.on_full = on_full

    def __len__(self) -> int:
        return self._n

    def append(self, ts_ns: np.ndarray | int, signal: np.ndarray, value: np.ndarray, quality: np.ndarray | int,
               status: np.ndarray | int = 0) -> None:
        """Append a chunk; ``ts_ns``, ``quality`` and ``status`` may be scalars shared by the whole chunk."""
        m = int(signal.shape[0])
        start = 0
        while start < m:
            if self._n == self.capacity:
                if self.on_full is None:
                    raise OverflowError("frame buffer full and no on_full handler")
                self.on_full()
                if self._n == self.capacity:
                    raise OverflowError("on_full did not drain the frame buffer")
            take = min(m - start, self.capacity - self._n)
            a, b = self._n, self._n + take
            self._ts[a:b] = ts_ns if np.ndim(ts_ns) == 0 else ts_ns[start : start + take]
            self._sig[a:b] = signal[start : start + take]
            self._val[a:b] = value[start : start + take]
            self._q[a:b] = quality if np.ndim(quality) == 0 else quality[start : start + take]
            self._st[a:b] = status if np.ndim(status) == 0 else status[start : start + take]
            self._n = b
            start += take

    def drain(self) -> Frame:
        """Return a copy of what is buffered and empty the buffer."""
        n = self._n
        frame = Frame(self._ts[:n].copy(), self._sig[:n].copy(), self._val[:n].copy(), self._q[:n].copy(),
                      self._st[:n].copy())
        self._n = 0
        return frame
