"""Robust streaming location and scale: a Huber-clipped exponentially weighted mean and mean absolute deviation.

Why this estimator: a streaming median needs a buffer per signal, and a plain EWMA is dragged by every
spike it is meant to flag. Clipping each residual at ``huber_k`` scales before it updates the state
bounds the influence of one outlier, costs a handful of flops and three floats per signal, and still
follows a genuine level shift: clipped residuals inflate the scale, which widens the clip, so the
estimate catches up within a few time constants instead of never.

State is three columns of a caller-owned 2-D float64 array, starting at column ``base``; the same
functions therefore serve the level statistics and the rate-of-change statistics of the stack.
During warm-up (the first ``warmup`` samples) updates are unclipped with weight ``max(alpha, 1/n)``
so the estimates settle quickly; ``robust_z`` returns NaN until warm-up is over. ``scale`` is in
standard-deviation units (1.2533 x the mean absolute deviation, exact for a normal distribution).
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit

LOC = 0
SCALE = 1
COUNT = 2
WIDTH = 3

P_ALPHA = 0
P_HUBER_K = 1
P_WARMUP = 2
P_MIN_SCALE = 3
N_PARAMS = 4

MAD_TO_SD = 1.2533141373155001  # sqrt(pi / 2)


def make_params(alpha: float = 0.01, huber_k: float = 3.0, warmup: int = 30, min_scale: float = 1e-6) -> np.ndarray:
    """Pack the parameters in the order the kernels read them."""
    if not 0.0 < alpha < 1.0 or huber_k <= 0.0 or warmup < 1 or min_scale <= 0.0:
        raise ValueError("need 0 < alpha < 1, huber_k > 0, warmup >= 1, min_scale > 0")
    return np.array([alpha, huber_k, float(warmup), min_scale], dtype=np.float64)


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def z_score(loc: float, scale: float, count: float, x: float, warmup: float, min_scale: float) -> float:
    """``robust_z`` on the state's values: scalars in, scalar out (the fused stack keeps a row in registers)."""
    if count < warmup:
        return math.nan
    sc = scale
    if sc < min_scale:
        sc = min_scale
    return (x - loc) / sc


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def learn_step(loc: float, scale: float, count: float, x: float, alpha: float, huber_k: float, warmup: float,
               min_scale: float, rate_scale: float) -> tuple[float, float, float]:
    """``robust_learn_scaled`` on the state's values: the new (location, scale, count)."""
    c = count
    if c == 0.0:
        return x, 0.0, 1.0
    a = alpha * rate_scale
    if c < warmup:
        inv = 1.0 / (c + 1.0)
        if inv > a:
            a = inv
    r = x - loc
    if c >= warmup:
        sc = scale
        if sc < min_scale:
            sc = min_scale
        lim = huber_k * sc
        if r > lim:
            r = lim
        elif r < -lim:
            r = -lim
    return loc + a * r, (1.0 - a) * scale + a * MAD_TO_SD * abs(r), c + 1.0


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def robust_z(st: np.ndarray, s: int, base: int, x: float, p: np.ndarray) -> float:
    """Standardised residual of ``x`` against the state before it learns ``x``; NaN during warm-up."""
    return z_score(st[s, base + LOC], st[s, base + SCALE], st[s, base + COUNT], x, p[P_WARMUP], p[P_MIN_SCALE])


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def robust_learn(st: np.ndarray, s: int, base: int, x: float, p: np.ndarray) -> None:
    """Fold a finite ``x`` into the location and scale of row ``s``."""
    robust_learn_scaled(st, s, base, x, p, 1.0)


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def robust_learn_scaled(st: np.ndarray, s: int, base: int, x: float, p: np.ndarray, rate_scale: float) -> None:
    """``robust_learn`` with the settled learning rate multiplied by ``rate_scale`` (guarded learning)."""
    loc, scale, count = learn_step(st[s, base + LOC], st[s, base + SCALE], st[s, base + COUNT], x, p[P_ALPHA],
                                   p[P_HUBER_K], p[P_WARMUP], p[P_MIN_SCALE], rate_scale)
    st[s, base + LOC] = loc
    st[s, base + SCALE] = scale
    st[s, base + COUNT] = count


@njit(cache=True, nogil=True)
def robust_chunk(signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray, p: np.ndarray,
                 z_out: np.ndarray) -> None:
    """Score then learn a chunk in order: ``z_out`` is NaN in warm-up and for skipped samples.

    Bad-quality (2) and non-finite samples are skipped; uncertain ones (1) are scored, not learned.
    """
    for k in range(signal.shape[0]):
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            z_out[k] = math.nan
            continue
        s = signal[k]
        z_out[k] = robust_z(st, s, 0, x, p)
        if quality[k] == 0:
            robust_learn(st, s, 0, x, p)
