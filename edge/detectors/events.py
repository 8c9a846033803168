"""Alarm events as a numpy structured array: the record the MQTT events lane carries.

One row per OPEN or CLOSE (see ``edge.kernels.alarms``). ``scope`` says whether ``entity`` indexes the
signal table, the machine list or the plant's device list (``SignalTable.devices``: kind DEVICE, a PLC or
server without a good poll); ``kind`` is an ``edge.kernels.kinds.Kind``. Fixed-width fields so
a batch of events is one ``tobytes()`` away from the wire. ``top`` names, for a machine alarm, the member
signals that contributed most to the multivariate statistic when it opened (the close repeats them, so both
halves of an episode carry the same root-cause hint).
"""

from __future__ import annotations

import enum

import numpy as np


class Scope(enum.IntEnum):
    SIGNAL = 0
    MACHINE = 1
    DEVICE = 2  # entity indexes SignalTable.devices


class Phase(enum.IntEnum):
    OPEN = 1
    CLOSE = 2


EVENT_DTYPE = np.dtype([
    ("ts_start", "<i8"),  # ns, first sample of the episode
    ("ts_end", "<i8"),  # ns, first quiet sample (-1 while open)
    ("entity", "<u4"),
    ("scope", "u1"),
    ("phase", "u1"),
    ("kind", "u1"),
    ("peak", "<f4"),
    ("top", "<i4", (3,)),  # machine scope: signals contributing most when the alarm opened (-1: none)
])


class EventColumns:
    """Preallocated columns the alarm kernel writes into, turned into a structured array per frame."""

    def __init__(self, capacity: int) -> None:
        self.entity = np.empty(capacity, dtype=np.int64)
        self.phase = np.empty(capacity, dtype=np.uint8)
        self.ts_start = np.empty(capacity, dtype=np.int64)
        self.ts_end = np.empty(capacity, dtype=np.int64)
        self.peak = np.empty(capacity, dtype=np.float64)
        self.kind = np.empty(capacity, dtype=np.uint8)

    def kernel_args(self) -> tuple[np.ndarray, ...]:
        return self.entity, self.phase, self.ts_start, self.ts_end, self.peak, self.kind

    def take(self, n: int, scope: Scope) -> np.ndarray:
        out = np.empty(n, dtype=EVENT_DTYPE)
        out["ts_start"] = self.ts_start[:n]
        out["ts_end"] = self.ts_end[:n]
        out["entity"] = self.entity[:n]
        out["scope"] = scope
        out["phase"] = self.phase[:n]
        out["kind"] = self.kind[:n]
        out["peak"] = self.peak[:n]
        out["top"] = -1
        return out
