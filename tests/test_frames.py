"""FrameBuffer: fixed capacity, chunk appends with scalar or column timestamps, flush on full."""

from __future__ import annotations

import numpy as np

from edge.frames import FrameBuffer


def test_append_drain_and_flush_on_full() -> None:
    drained = []
    buf = FrameBuffer(10)
    buf.on_full = lambda: drained.append(buf.drain())
    for k in range(4):
        sig = np.arange(4, dtype=np.uint32) + 4 * k
        buf.append(1000 + k, sig, sig.astype(np.float64), 0)
    rest = buf.drain()
    frames = [*drained, rest]
    assert [len(f) for f in frames] == [10, 6]
    sig = np.concatenate([f.signal for f in frames])
    ts = np.concatenate([f.ts_ns for f in frames])
    assert sig.tolist() == list(range(16))
    assert ts.tolist() == [1000 + k // 4 for k in range(16)]
    assert len(buf) == 0


def test_column_timestamps_and_quality() -> None:
    buf = FrameBuffer(8)
    buf.append(np.array([5, 6], dtype=np.int64), np.array([1, 2], dtype=np.uint32), np.array([0.5, np.nan]),
               np.array([0, 2], dtype=np.uint8))
    f = buf.drain()
    assert f.ts_ns.tolist() == [5, 6] and f.quality.tolist() == [0, 2] and np.isnan(f.value[1])
