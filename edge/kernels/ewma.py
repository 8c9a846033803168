"""EWMA z-score: per-signal exponentially weighted mean and variance, scored before learning.

State per signal (arrays of length n_signals): ``mean``, ``var``, ``count``. A sample's score is
computed from the state *before* the sample updates it, then squashed into [0, 1] as
``z^2 / (z^2 + threshold^2)``: |z| == threshold gives 0.5 and large |z| approaches 1.
During warm-up (count < warmup) the score is 0.
Non-finite values (NaN, inf) and samples of bad quality are scored 0 and do not update the state.
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit


@njit(cache=True, nogil=True)
def ewma_zscore(
    signal: np.ndarray,
    value: np.ndarray,
    quality: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    count: np.ndarray,
    alpha: float,
    threshold: float,
    warmup: int,
    min_std: float,
    score_out: np.ndarray,
) -> int:
    """Score and learn a chunk in order; returns how many samples scored >= 0.5 (|z| >= threshold)."""
    n_anom = 0
    t2 = threshold * threshold
    for k in range(signal.shape[0]):
        s = signal[k]
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            score_out[k] = 0.0
            continue
        c = count[s]
        if c == 0:
            mean[s] = x
            var[s] = 0.0
            count[s] = 1
            score_out[k] = 0.0
            continue
        m = mean[s]
        d = x - m
        if c >= warmup:
            sd = np.sqrt(var[s])
            if sd < min_std:
                sd = min_std
            z = d / sd
            z2 = z * z
            sc = z2 / (z2 + t2)
            score_out[k] = sc
            if sc >= 0.5:
                n_anom += 1
        else:
            score_out[k] = 0.0
        # Learn (after scoring). Welford-style EW update keeps var non-negative.
        incr = alpha * d
        mean[s] = m + incr
        var[s] = (1.0 - alpha) * (var[s] + d * incr)
        count[s] = c + 1
    return n_anom
