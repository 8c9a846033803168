"""Stuck and flat-line detection: how improbable is the current run of unchanged values?

Why a probability and not a fixed run length: a 16-bit temperature repeats its last value often, a
float pressure almost never, and a status word always. Each signal learns ``p``, the rate at which a
sample repeats the previous one (within ``tol``); a run of ``L`` repeats then has probability about
``p^L`` under normal operation, and the score is ``q / (q + Q)`` with ``q = -L log10(p)`` (how many
decades improbable the run is) and ``Q = threshold_decades``. A signal that is always constant learns
``p`` near 1 and never alarms; a noisy one alarms after a few identical samples.

``p`` is floored at ``p_floor`` (few repeats seen is weak evidence) and stops learning while the run
is anomalous, so a dead sensor stays flagged until it moves rather than teaching the model that
stuck is normal. Gaps (bad or non-finite samples) neither extend nor break a run.
State: four columns (last value, run length, repeat rate, samples seen) starting at ``base``.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit

LAST = 0
RUN = 1
P_REP = 2
SEEN = 3
WIDTH = 4

P_BETA = 0
P_TOL = 1
P_DECADES = 2
P_FLOOR = 3
P_WARMUP = 4
N_PARAMS = 5

P_REP_INIT = 0.5
P_CEIL = 1.0 - 1e-9


def make_params(beta: float = 0.01, tol: float = 0.0, threshold_decades: float = 8.0, p_floor: float = 0.05,
                warmup: int = 30) -> np.ndarray:
    if not 0.0 < beta < 1.0 or tol < 0.0 or threshold_decades <= 0.0 or not 0.0 < p_floor < 1.0 or warmup < 1:
        raise ValueError("need 0 < beta < 1, tol >= 0, threshold_decades > 0, 0 < p_floor < 1, warmup >= 1")
    return np.array([beta, tol, threshold_decades, p_floor, float(warmup)], dtype=np.float64)


def init_state(st: np.ndarray, base: int = 0) -> None:
    """Fresh state: nothing seen, repeat rate at the uninformative 0.5."""
    st[:, base + LAST] = 0.0
    st[:, base + RUN] = 0.0
    st[:, base + P_REP] = P_REP_INIT
    st[:, base + SEEN] = 0.0


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def stuck_core(x: float, learn: bool, last: float, run: float, p_rep: float, seen: float, beta: float, tol: float,
               decades: float, p_floor: float, warmup: float) -> tuple[float, float, float, float, float]:
    """``stuck_step`` on the state's values: (score, last, run, p_rep, seen) after ``x``."""
    if seen == 0.0:
        return 0.0, x, run, p_rep, 1.0
    rep = abs(x - last) <= tol
    rep_f = 1.0 if rep else 0.0
    run = (run + 1.0) * rep_f  # branchless: whether a sample repeats is data, not control flow
    pr = min(max(p_rep, p_floor), P_CEIL)
    q = -run * math.log10(pr) if run > 0.0 else 0.0  # most samples break the run: skip the log
    # q == 0 (the run broken, most samples) scores 0 / decades = 0 exactly: skip the division
    score = q / (q + decades) if seen >= warmup and q > 0.0 else 0.0
    if learn and q < decades:
        # max(beta, 1 / seen) is beta once seen > 2 / beta (then 1 / seen < beta / 2 even rounded): skip the division
        b = beta if seen * beta > 2.0 else max(beta, 1.0 / seen)
        p_rep += b * (rep_f - p_rep)
    return score, x, run, p_rep, seen + 1.0


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def stuck_step(st: np.ndarray, s: int, base: int, x: float, learn: bool, p: np.ndarray) -> float:
    """Score the run ``x`` extends (or breaks), then learn; returns the stuck score in [0, 1)."""
    sc, last, run, p_rep, seen = stuck_core(x, learn, st[s, base + LAST], st[s, base + RUN], st[s, base + P_REP],
                                            st[s, base + SEEN], p[P_BETA], p[P_TOL], p[P_DECADES], p[P_FLOOR],
                                            p[P_WARMUP])
    st[s, base + LAST] = last
    st[s, base + RUN] = run
    st[s, base + P_REP] = p_rep
    st[s, base + SEEN] = seen
    return sc


@njit(cache=True, nogil=True)
def stuck_chunk(signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray, p: np.ndarray,
                score_out: np.ndarray) -> None:
    """Run ``stuck_step`` over a chunk; bad and non-finite samples score 0 and change nothing."""
    for k in range(signal.shape[0]):
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            score_out[k] = 0.0
            continue
        score_out[k] = stuck_step(st, signal[k], 0, x, quality[k] == 0, p)
