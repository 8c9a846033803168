"""Data quality per device: a PLC or server that has given no good poll for longer than configured (kind DEVICE).

Why a device level: an unplugged PLC or a stopped OPC-UA server takes every signal it serves with it. Judged per
signal that is 400 BAD or SILENT alarms for one fault -- the flood a reliability engineer switches off. So the
device is judged once, and while it is down its signals' own data-quality judgements are folded under it.

- ``device_polls``: a sample that is not bad (quality != 2) and finite is a good poll of its signal's device
  (``device_of[s]``, -1 none); ``dev_good[d]`` keeps the latest such timestamp, ``dev_any[d]`` that of any
  sample (-1 = never).
- ``device_scores``: at ``now_ns``, ``D`` = time since the later of the device's last good poll and ``since_ns``
  (the first frame this gateway instance saw: its own outage is not the device's), score ``D^2 / (D^2 + T^2)``
  (0.5 once down for ``T``). ``T`` is ``bad_ns`` when the device's latest news was bad (a sample after its last
  good one: Modbus timeouts and exceptions, an OPC-UA connection loss -- the sources mark every signal BAD),
  and ``silent_ns`` when it has said nothing at all since (a source that reports on change only may be quiet
  for a while; as for a signal's SILENT). A device never seen good scores 0, as a signal never seen is not
  SILENT: the source's connection state reports it.
- ``fold_device``: data-quality scores (kind >= ``dq_kind_min``: BAD, SILENT) of signals whose device scores at
  least ``fold_at`` are set to 0, so an open signal alarm closes through its hysteresis and none opens. The
  stack uses ``fold_at`` 0.25 (down for 0.58 ``device_s``): with ``device_s`` <= ``bad_s`` the signals of a dead
  device are folded before their own BAD score reaches the alarm threshold (0.5 at ``bad_s``).
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit


@njit(cache=True, nogil=True)
def device_polls(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                 device_of: np.ndarray, dev_good: np.ndarray, dev_any: np.ndarray) -> None:
    """Latest good-poll and latest sample time per device over a frame."""
    for k in range(signal.shape[0]):
        d = device_of[signal[k]]
        if d < 0:
            continue
        t = ts_ns[k]
        if t > dev_any[d]:
            dev_any[d] = t
        if quality[k] != 2 and np.isfinite(value[k]) and t > dev_good[d]:
            dev_good[d] = t


@njit(cache=True, nogil=True)
def device_scores(now_ns: int, since_ns: int, dev_good: np.ndarray, dev_any: np.ndarray, bad_ns: float,
                  silent_ns: float, out: np.ndarray) -> int:
    """Score of every device at ``now_ns``; returns how many score >= 0.5."""
    n_high = 0
    for d in range(dev_good.shape[0]):
        last = dev_good[d]
        t = bad_ns if dev_any[d] > last else silent_ns
        if last < 0 or t <= 0.0:
            out[d] = 0.0
            continue
        dd = float(now_ns - max(last, since_ns))
        sc = dd * dd / (dd * dd + t * t) if dd > 0.0 else 0.0
        out[d] = sc
        if sc >= 0.5:
            n_high += 1
    return n_high


@njit(cache=True, nogil=True)
def fold_device(signal: np.ndarray, kind: np.ndarray, score: np.ndarray, device_of: np.ndarray,
                dev_score: np.ndarray, fold_at: float, dq_kind_min: int) -> int:
    """Zero the data-quality scores of signals whose device is down; returns how many were folded."""
    folded = 0
    for k in range(signal.shape[0]):
        if fold_hit(kind[k], score[k], device_of[signal[k]], dev_score, fold_at, dq_kind_min):
            score[k] = 0.0
            folded += 1
    return folded


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def fold_hit(kind: int, score: float, d: int, dev_score: np.ndarray, fold_at: float, dq_kind_min: int) -> bool:
    """``fold_device``'s judgement of one sample of a signal on device ``d`` (-1 none): fold its score to 0?"""
    return kind >= dq_kind_min and score > 0.0 and d >= 0 and dev_score[d] >= fold_at
