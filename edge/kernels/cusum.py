"""Change and drift detection: a two-sided CUSUM on the robust z-score of each sample.

Why CUSUM: a small persistent shift (a fouled heat exchanger, a slipping belt) never produces one
large z, but its residuals add up; CUSUM accumulates ``z - k`` and fires when the sum passes ``h``
(both in standard deviations), the optimal test for a mean shift of about ``2k``. The z it reads is
computed before the baseline learns the sample (score before learn), clipped at ``z_clip`` so one
spike, which the level score already reports, cannot trip it alone.

The sums are capped at ``cap * h`` so that once the robust baseline has followed a shift the alarm
drains in a bounded number of samples instead of as many as it took to build up. The score is
``S^2 / (S^2 + h^2)`` with ``S`` the larger of the two sums: 0.5 when ``S == h``.

Autocorrelation (``rho_alpha > 0``): CUSUM's ``h`` is calibrated for independent residuals. A plant
signal that follows a duty cycle, a shift pattern or a slow thermal lag has residuals that stay on one
side of a slowly adapting baseline for tens of samples, and a plain CUSUM adds them up into an alarm
every half cycle (measured on the simulator: ~15 change alarms per signal-hour). So the kernel also
learns how much the residuals' short-run mean really wanders: ``m``, an exponential average of the
clipped z over ~``1 / SMOOTH`` samples (the horizon over which CUSUM builds an alarm), and ``v``, the
average of ``m^2`` learned at the slow rate ``rho_alpha``. For independent z, ``v`` would be
``SMOOTH / (2 - SMOOTH)``; the ratio ``F = v / that`` (floored at 1, never amplifying) is the
variance inflation of the sum CUSUM takes, and CUSUM reads ``z / sqrt(F)`` -- the batch-means
estimate of the long-run deviation, which (unlike a lag-1 autocorrelation) also sees a slow wander
under white noise. White noise is unchanged; a fault still trips it, because ``v`` learns slowly
(``rho_alpha`` << ``SMOOTH``) and reads ``F`` before the sample updates it (score before learn).
State: four columns starting at ``base``: positive and negative sum, ``m`` and ``v``.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit

POS = 0
NEG = 1
SMEAN = 2
SVAR = 3
WIDTH = 4

P_K = 0
P_H = 1
P_Z_CLIP = 2
P_CAP = 3
P_RHO_ALPHA = 4
N_PARAMS = 5
SMOOTH = 0.05
IID_VAR = SMOOTH / (2.0 - SMOOTH)
F_MAX = 1e4


def make_params(k: float = 0.5, h: float = 8.0, z_clip: float = 4.0, cap: float = 2.0,
                rho_alpha: float = 0.0) -> np.ndarray:
    """``rho_alpha`` 0 turns the autocorrelation correction off (plain CUSUM)."""
    if k < 0.0 or h <= 0.0 or z_clip <= 0.0 or cap < 1.0 or not 0.0 <= rho_alpha < 1.0:
        raise ValueError("need k >= 0, h > 0, z_clip > 0, cap >= 1, 0 <= rho_alpha < 1")
    return np.array([k, h, z_clip, cap, rho_alpha], dtype=np.float64)


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def cusum_core(z: float, pos: float, neg: float, smean: float, svar: float, k: float, h: float, z_clip: float,
               cap: float, rho_alpha: float) -> tuple[float, float, float, float, float]:
    """``cusum_step`` on the state's values: (score, pos, neg, smean, svar) after ``z`` (NaN: unchanged, 0)."""
    if not np.isfinite(z):
        return 0.0, pos, neg, smean, svar
    # min/max, not if/else: the sign of z is a coin flip, and mispredicted branches cost ~5x the arithmetic.
    zc = min(max(z, -z_clip), z_clip)
    b = rho_alpha
    if b > 0.0:
        m = smean
        v = svar
        f = min(max(v / IID_VAR, 1.0), F_MAX)
        m += SMOOTH * (zc - m)
        smean = m
        svar = v + b * (m * m - v)
        zc /= math.sqrt(f)
    top = cap * h
    sp = min(max(pos + zc - k, 0.0), top)
    sn = min(max(neg - zc - k, 0.0), top)
    m = max(sp, sn)
    return m * m / (m * m + h * h), sp, sn, smean, svar


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def cusum_step(st: np.ndarray, s: int, base: int, z: float, p: np.ndarray) -> float:
    """Accumulate one z (NaN = not scored: no change) and return the change score in [0, 1)."""
    sc, sp, sn, m, v = cusum_core(z, st[s, base + POS], st[s, base + NEG], st[s, base + SMEAN], st[s, base + SVAR],
                                  p[P_K], p[P_H], p[P_Z_CLIP], p[P_CAP], p[P_RHO_ALPHA])
    st[s, base + POS] = sp
    st[s, base + NEG] = sn
    st[s, base + SMEAN] = m
    st[s, base + SVAR] = v
    return sc


@njit(cache=True, nogil=True)
def cusum_chunk(signal: np.ndarray, z: np.ndarray, st: np.ndarray, p: np.ndarray, score_out: np.ndarray) -> None:
    """Run ``cusum_step`` over a chunk of (signal, z) pairs in order."""
    for k in range(signal.shape[0]):
        score_out[k] = cusum_step(st, signal[k], 0, z[k], p)
