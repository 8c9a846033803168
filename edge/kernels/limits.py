"""Range limits: a sample outside the signal's plausible range [low, high] from the plant file.

Why a graded score instead of 0/1: an excursion of 1 % of the span and a sensor reading -32768 are
both alarms, but the alarm's peak score should tell them apart. Inside the range (limits included)
the score is 0; outside it is ``0.5 + 0.5 * e / (e + margin)`` where ``e`` is the excursion as a
fraction of the span (or of ``|limit|`` for a one-sided limit, 1 if that is 0). NaN limits are unset.
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def limit_score(x: float, low: float, high: float, margin: float) -> float:
    """Score of one finite value against its limits; no state."""
    e = 0.0
    if np.isfinite(low) and np.isfinite(high):
        span = high - low
        if span <= 0.0:
            span = max(abs(high), 1.0)
        if x < low:
            e = (low - x) / span
        elif x > high:
            e = (x - high) / span
        else:
            return 0.0
    elif np.isfinite(high):
        if x <= high:
            return 0.0
        e = (x - high) / (abs(high) if high != 0.0 else 1.0)
    elif np.isfinite(low):
        if x >= low:
            return 0.0
        e = (low - x) / (abs(low) if low != 0.0 else 1.0)
    else:
        return 0.0
    if e > 1e300:  # a degenerate span (or an absurd value): as far out as it gets, and no inf / inf
        return 1.0
    return 0.5 + 0.5 * e / (e + margin)


@njit(cache=True, nogil=True)
def limits_chunk(signal: np.ndarray, value: np.ndarray, low: np.ndarray, high: np.ndarray, margin: float,
                 score_out: np.ndarray) -> None:
    """Score a chunk against per-signal limits; non-finite values score 0 (they are gaps, not excursions)."""
    for k in range(signal.shape[0]):
        x = value[k]
        s = signal[k]
        score_out[k] = limit_score(x, low[s], high[s], margin) if np.isfinite(x) else 0.0
