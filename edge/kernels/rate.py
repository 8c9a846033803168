"""Rate of change: the robust z-score of a signal's slope (units per second) against its own history.

Why a learned rate and not a fixed limit: a valve position legitimately moves fast and an oil
temperature never does; both are judged against what their own slope usually is. The slope between
two samples is ``dx / dt`` with ``dt`` from the sample timestamps, so irregular polling does not
look like a rate change. A gap -- ``dt`` more than ``gap_factor`` times the signal's typical period
(learned as an EWMA of ``dt``) -- or a repeated timestamp gives no slope at all: a jump across a
communication outage is not evidence of a fast process.

State: three columns (last value, last timestamp in ns as float64 -- 256 ns resolution, ample for
rates -- and the typical period in s) followed by the robust location/scale columns of the slope,
all starting at ``base``. Parameters: the robust parameters of ``robust.py`` then ``gap_factor``.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit
from edge.kernels import robust

LAST_V = 0
LAST_TS = 1
PERIOD = 2
STATS = 3
WIDTH = STATS + robust.WIDTH

P_GAP_FACTOR = robust.N_PARAMS
N_PARAMS = robust.N_PARAMS + 1


def make_params(alpha: float = 0.01, huber_k: float = 3.0, warmup: int = 30, min_scale: float = 1e-9,
                gap_factor: float = 5.0) -> np.ndarray:
    if gap_factor <= 1.0:
        raise ValueError("gap_factor must exceed 1")
    return np.concatenate([robust.make_params(alpha, huber_k, warmup, min_scale), [gap_factor]])


def init_state(st: np.ndarray, base: int = 0) -> None:
    """Fresh state: no previous sample (timestamp NaN)."""
    st[:, base : base + WIDTH] = 0.0
    st[:, base + LAST_TS] = math.nan


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def rate_core(x: float, ts_ns: float, learn: bool, last_v: float, last_ts: float, per: float, loc: float,
              scale: float, count: float, alpha: float, huber_k: float, warmup: float, min_scale: float,
              gap_factor: float) -> tuple[float, float, float, float, float, float, float]:
    """``rate_step`` on the state's values: (z, last_v, last_ts, period, loc, scale, count) after ``x``."""
    z = math.nan
    if np.isfinite(last_ts):
        dt = (ts_ns - last_ts) * 1e-9
        if dt <= 0.0:  # repeated or out-of-order timestamp: keep the earlier sample as reference
            return math.nan, last_v, last_ts, per, loc, scale, count
        if per == 0.0 or dt <= gap_factor * per:
            slope = (x - last_v) / dt
            z = robust.z_score(loc, scale, count, slope, warmup, min_scale)
            if learn:
                loc, scale, count = robust.learn_step(loc, scale, count, slope, alpha, huber_k, warmup, min_scale,
                                                      1.0)
                # max(alpha, 1 / count) is alpha once count > 2 / alpha (1 / count < alpha / 2 even rounded)
                b = alpha
                if count * alpha <= 2.0 and 1.0 / count > b:
                    b = 1.0 / count
                per = dt if per == 0.0 else per + b * (dt - per)
    return z, x, ts_ns, per, loc, scale, count


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def rate_step(st: np.ndarray, s: int, base: int, x: float, ts_ns: float, learn: bool, p: np.ndarray) -> float:
    """Robust z of the slope from the previous sample to ``x``; NaN when there is no usable slope."""
    z, last_v, last_ts, per, loc, scale, count = rate_core(
        x, ts_ns, learn, st[s, base + LAST_V], st[s, base + LAST_TS], st[s, base + PERIOD],
        st[s, base + STATS + robust.LOC], st[s, base + STATS + robust.SCALE], st[s, base + STATS + robust.COUNT],
        p[robust.P_ALPHA], p[robust.P_HUBER_K], p[robust.P_WARMUP], p[robust.P_MIN_SCALE], p[P_GAP_FACTOR])
    st[s, base + LAST_V] = last_v
    st[s, base + LAST_TS] = last_ts
    st[s, base + PERIOD] = per
    st[s, base + STATS + robust.LOC] = loc
    st[s, base + STATS + robust.SCALE] = scale
    st[s, base + STATS + robust.COUNT] = count
    return z


@njit(cache=True, nogil=True)
def rate_chunk(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray,
               p: np.ndarray, z_out: np.ndarray) -> None:
    """Run ``rate_step`` over a chunk; bad and non-finite samples give NaN and change nothing."""
    for k in range(signal.shape[0]):
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            z_out[k] = math.nan
            continue
        z_out[k] = rate_step(st, signal[k], 0, x, float(ts_ns[k]), quality[k] == 0, p)
