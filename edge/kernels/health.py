"""Health index and remaining useful life per machine: condition-normalised smoothed features into a small MLP.

Why this shape: degradation shows as slow drifts of a few sensors, buried in noise and in the jumps
caused by the operating condition (load, altitude, speed). So each tick (one duty cycle of the
machine) the kernel (1) finds the operating condition -- the nearest of ``K`` learned centres of the
operating-setting inputs -- and standardises the sensors by that condition's mean and spread, (2)
smooths them with two exponential averages per sensor (fast ``alpha`` and slow ``alpha / 2``,
weight ``max(alpha, 1/n)`` so the first ticks average plainly), whose difference is a trend, and (3)
maps [fast, fast - slow, slow, age] through a one-hidden-layer ReLU network fitted offline
(``tools/fit_rul.py``) to the RUL, capped at ``cap`` ticks as trained. Cost per tick is O(F H) for F
features and H hidden units (about 3,000 multiply-adds for 14 sensors): nothing for an edge box.

The uncertainty band is empirical: the fitter measured, on machines held out of training, the
quantiles of (true - predicted) RUL in bins of predicted RUL; the band is the prediction plus the
bin's quantiles, floored at 0. The health index is ``rul / cap`` clipped to [0, 1]: 1 = at least
``cap`` ticks left, 0 = end of life.

A tick with any non-finite input learns nothing and reports the estimate of the state as it was (NaN
if the machine has never had a complete tick) -- a sensor dropout must not look like degradation.

Arrays (the model, as shipped in the .npz): ``cond`` (K, n_op) condition centres in units of
``op_scale`` (n_op); ``norm`` (2, K, d) mean and standard deviation per condition and sensor; ``fnorm``
(2, F) feature mean and standard deviation; ``w1`` (F + 1, H) weights with the bias as last row;
``w2`` (H + 1) output weights, bias last; ``band`` (3, B) upper bin edge, low and high quantile;
``p`` params below. Inputs per tick: ``x`` of n_op operating settings then d sensors.
State per machine (row of ``st``, width ``2 d + 1``): fast averages, slow averages, ticks seen.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit

P_ALPHA = 0
P_AGE_SCALE = 1
P_CAP = 2
N_PARAMS = 3

OUT_HEALTH = 0
OUT_RUL = 1
OUT_LOW = 2
OUT_HIGH = 3
N_OUT = 4


def make_params(alpha: float, age_scale: float, cap: float) -> np.ndarray:
    if not 0.0 < alpha < 1.0 or age_scale <= 0.0 or cap <= 0.0:
        raise ValueError("need 0 < alpha < 1, age_scale > 0, cap > 0")
    return np.array([alpha, age_scale, cap], dtype=np.float64)


def state_width(d: int) -> int:
    return 2 * d + 1


def n_features(d: int) -> int:
    return 3 * d + 1


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def features_step(x: np.ndarray, st: np.ndarray, m: int, cond: np.ndarray, op_scale: np.ndarray, norm: np.ndarray,
                  p: np.ndarray, f_out: np.ndarray) -> bool:
    """Learn one tick of machine ``m`` and write its features; False (nothing learned) on non-finite input."""
    n_op = cond.shape[1]
    d = norm.shape[2]
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    best = 0
    best_d = math.inf
    for k in range(cond.shape[0]):
        dist = 0.0
        for j in range(n_op):
            t = x[j] / op_scale[j] - cond[k, j]
            dist += t * t
        if dist < best_d:
            best_d = dist
            best = k
    n = st[m, 2 * d]
    a_fast = p[P_ALPHA]
    a_slow = 0.5 * p[P_ALPHA]
    inv = 1.0 / (n + 1.0)
    if inv > a_fast:
        a_fast = inv
    if inv > a_slow:
        a_slow = inv
    for i in range(d):
        z = (x[n_op + i] - norm[0, best, i]) / norm[1, best, i]
        fast = st[m, i] + a_fast * (z - st[m, i])
        slow = st[m, d + i] + a_slow * (z - st[m, d + i])
        st[m, i] = fast
        st[m, d + i] = slow
    st[m, 2 * d] = n + 1.0
    _write_features(st, m, d, p, f_out)
    return True


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _write_features(st: np.ndarray, m: int, d: int, p: np.ndarray, f_out: np.ndarray) -> None:
    for i in range(d):
        f_out[i] = st[m, i]
        f_out[d + i] = st[m, i] - st[m, d + i]
        f_out[2 * d + i] = st[m, d + i]
    f_out[3 * d] = (st[m, 2 * d] - 1.0) / p[P_AGE_SCALE]


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def mlp(f: np.ndarray, fnorm: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> float:
    """One hidden ReLU layer on standardised features: the RUL before capping."""
    n_f = w1.shape[0] - 1
    h_n = w1.shape[1]
    out = w2[h_n]
    for h in range(h_n):
        acc = w1[n_f, h]
        for i in range(n_f):
            acc += (f[i] - fnorm[0, i]) / fnorm[1, i] * w1[i, h]
        if acc > 0.0:
            out += acc * w2[h]
    return out


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _estimate(f: np.ndarray, fnorm: np.ndarray, w1: np.ndarray, w2: np.ndarray, band: np.ndarray, p: np.ndarray,
              out: np.ndarray) -> None:
    cap = p[P_CAP]
    r = mlp(f, fnorm, w1, w2)
    r = 0.0 if r < 0.0 else (cap if r > cap else r)
    b = 0
    nb = band.shape[1]
    while b < nb - 1 and r > band[0, b]:
        b += 1
    lo = r + band[1, b]
    hi = r + band[2, b]
    out[OUT_HEALTH] = r / cap
    out[OUT_RUL] = r
    out[OUT_LOW] = 0.0 if lo < 0.0 else lo
    out[OUT_HIGH] = 0.0 if hi < 0.0 else hi


@njit(cache=True, nogil=True)
def health_tick(machines: np.ndarray, n_ticks: int, inputs: np.ndarray, x_last: np.ndarray, st: np.ndarray,
                cond: np.ndarray, op_scale: np.ndarray, norm: np.ndarray, fnorm: np.ndarray, w1: np.ndarray,
                w2: np.ndarray, band: np.ndarray, p: np.ndarray, out: np.ndarray) -> int:
    """Tick the first ``n_ticks`` machines: inputs of machine m are ``x_last[inputs[m]]`` (-1 = missing).

    Writes (health, rul, low, high) to ``out[j]`` for the j-th ticked machine; returns how many machines
    learned (had every input finite). Machines that never learned report NaN.
    """
    n_in = inputs.shape[1]
    d = norm.shape[2]
    x = np.empty(n_in, dtype=np.float64)
    f = np.empty(3 * d + 1, dtype=np.float64)
    learned = 0
    for j in range(n_ticks):
        m = machines[j]
        for i in range(n_in):
            s = inputs[m, i]
            x[i] = x_last[s] if s >= 0 else math.nan
        if features_step(x, st, m, cond, op_scale, norm, p, f):
            learned += 1
        elif st[m, 2 * d] > 0.0:
            _write_features(st, m, d, p, f)
        else:
            for c in range(N_OUT):
                out[j, c] = math.nan
            continue
        _estimate(f, fnorm, w1, w2, band, p, out[j])
    return learned


@njit(cache=True, nogil=True)
def health_rows(x_rows: np.ndarray, m: int, st: np.ndarray, cond: np.ndarray, op_scale: np.ndarray, norm: np.ndarray,
                fnorm: np.ndarray, w1: np.ndarray, w2: np.ndarray, band: np.ndarray, p: np.ndarray,
                out: np.ndarray) -> None:
    """One machine's ticks in order (rows of inputs): the offline path of ``plantwire score --rul``."""
    d = norm.shape[2]
    f = np.empty(3 * d + 1, dtype=np.float64)
    for r in range(x_rows.shape[0]):
        if not features_step(x_rows[r], st, m, cond, op_scale, norm, p, f):
            if st[m, 2 * d] == 0.0:
                for c in range(N_OUT):
                    out[r, c] = math.nan
                continue
            _write_features(st, m, d, p, f)
        _estimate(f, fnorm, w1, w2, band, p, out[r])


@njit(cache=True, nogil=True)
def feature_rows(x_rows: np.ndarray, st: np.ndarray, cond: np.ndarray, op_scale: np.ndarray, norm: np.ndarray,
                 p: np.ndarray, f_out: np.ndarray) -> None:
    """Features of one machine's ticks (machine row 0 of ``st``), NaN rows where nothing was learned yet.

    Used by the offline fitter so that training sees exactly the features the edge computes.
    """
    d = norm.shape[2]
    for r in range(x_rows.shape[0]):
        if not features_step(x_rows[r], st, 0, cond, op_scale, norm, p, f_out[r]):
            if st[0, 2 * d] == 0.0:
                f_out[r, :] = math.nan
            else:
                _write_features(st, 0, d, p, f_out[r])
