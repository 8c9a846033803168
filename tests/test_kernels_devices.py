"""Device data quality (``edge.kernels.devices``) against its reference in tests/naive.py: bad, NaN, inf and silent
stretches per device, constant values."""

from __future__ import annotations

import naive
import numpy as np

from edge.kernels import devices

T0 = 10**18


def _frames(seed: int, n_frames: int) -> list[tuple[np.ndarray, ...]]:
    """8 signals on 3 devices (signal 7 on none); device 1 turns bad for a stretch, device 2 goes silent for one,
    NaN and inf sprinkled; kinds/scores as the stack would hand them (some data-quality kinds)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_frames):
        sig = np.arange(8, dtype=np.uint32)
        v = np.full(8, 3.0)  # constant values: a device's judgement is about polls, not values
        q = np.zeros(8, np.uint8)
        if 40 <= f < 60:
            q[2:4], v[2:4] = 2, np.nan
        if 80 <= f < 200:
            sig = sig[(sig < 4) | (sig > 5)]
            v, q = v[: sig.size], q[: sig.size]
        v[rng.random(v.size) < 0.03] = np.nan
        v[rng.random(v.size) < 0.03] = np.inf
        kind = np.where(rng.random(sig.size) < 0.5, 8, 1).astype(np.uint8)
        score = rng.random(sig.size)
        out.append((np.full(sig.size, T0 + f * 10**9, np.int64), sig, v, q, kind, score))
    return out


def test_device_judgement_matches_reference_frame_by_frame():
    device_of = np.array([0, 0, 1, 1, 2, 2, 0, -1], np.int64)
    frames = _frames(1, 220)
    ref = naive.device_judgement(frames, device_of, 3, 3e9, 30e9)
    good, anyt = np.full(3, -1, np.int64), np.full(3, -1, np.int64)
    dev = np.zeros(3)
    saw_down = np.zeros(3, bool)
    for (ts, sig, v, q, kind, score), (ref_dev, ref_folded) in zip(frames, ref, strict=True):
        devices.device_polls(ts, sig, v, q, device_of, good, anyt)
        devices.device_scores(int(ts.max()), T0, good, anyt, 3e9, 30e9, dev)
        folded = score.copy()
        devices.fold_device(sig, kind, folded, device_of, dev, 0.25, 8)
        np.testing.assert_allclose(dev, ref_dev, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(folded, ref_folded)
        saw_down |= dev >= 0.5
    assert saw_down.tolist() == [False, True, True]  # bad for 20 s (3 s limit) and silent for 120 s (30 s limit)


def test_a_device_never_seen_good_or_with_limits_off_scores_zero():
    good, anyt = np.full(2, -1, np.int64), np.full(2, -1, np.int64)
    devices.device_polls(np.array([T0, T0], np.int64), np.array([0, 1], np.uint32), np.array([np.nan, 1.0]),
                         np.array([2, 0], np.uint8), np.array([0, 1], np.int64), good, anyt)
    out = np.ones(2)
    devices.device_scores(T0 + 100 * 10**9, T0, good, anyt, 3e9, 30e9, out)
    assert out[0] == 0.0 and out[1] > 0.9  # 0: never good; 1: silent for 100 s against 30 s
    devices.device_scores(T0 + 100 * 10**9, T0, good, anyt, 3e9, 0.0, out)
    assert out.tolist() == [0.0, 0.0]
