"""Anomaly likelihood per signal: how improbable a signal's recent prediction errors are, given its own history.

Why: a fixed threshold on a raw deviation score treats every signal alike, so a noisy signal alarms all
the time and a quiet one never. Numenta's answer for HTM (Ahmad et al., Neurocomputing 2017, "anomaly
likelihood") is to model the distribution of each signal's own raw score and report only when its
short-term average sits far in the tail of that distribution; on NAB it is HTM's largest single lever.
This is the same post-processor with state in arrays, in a handful of floats per signal:

- raw score: the one-step prediction error -- the change from the last good value, robustly
  standardised (a Huber-clipped exponential location and mean absolute deviation of the changes,
  floored at the signal's resolution) and squashed ``z^2 / (z^2 + E^2)`` into [0, 1]. One-step
  changes ignore slow daily cycles and drifts that a level baseline reads as anomalies (measured on
  NAB: +5 points over using the stack's own per-row score as the raw score);
- short-term average of the raw score: an exponential average with weight ``short_alpha`` (HTM: the
  mean of the last 10 raw scores);
- long-term distribution of that average: exponentially weighted mean and variance (``long_alpha``;
  HTM keeps a window of 8,640 raw scores -- 70 MB per 1,000 signals -- we keep two floats), floored
  at HTM's mean 0.03 and variance 0.0003 so a perfectly quiet signal is not infinitely sensitive;
- tail probability ``Q = P(N(mean, var) > short average)`` -- and, with both tails (``P_TAILS`` = 2),
  ``P(N(mean, var) < short average)`` when the average is below the mean: the signal's changes have
  become improbably *small* (it froze, went flat, lost its daily swing; HTM is upper-tail only, and
  the lower tail moved NAB from 67.9 to 70.2) -- reported as decades of improbability
  ``d = -log10 Q`` and squashed ``d / (d + T)``: ``T`` (``threshold_decades``) scores 0.5, the
  stack's alarm threshold. A short average less than ``Z_CUT`` = 2 long-term standard deviations
  from the mean (Q > 0.023, nothing unusual for a statistic looked at every sample) scores 0 without
  evaluating ``erfc`` and ``log10``: they were three quarters of the stage's cost (38 -> 15 ns per
  sample at 15,000 signals), and a score below ~0.3 (T = 4) neither opens nor holds an alarm;
- novelty (HTM's NAB detector calls it the spatial anomaly): a value beyond the range the signal has
  ever taken by more than ``novelty_margin`` of that range scores 1 (NaN margin: off).

Score before learn: the distribution and the range judging a sample have not seen it; the short
average includes it (it is the observation being judged). The first ``learn`` good samples of a signal
score 0 while the state settles. Bad-quality (2) and non-finite samples change nothing and leave the
caller's score alone (a gap: the next change is taken from the last good value); uncertain samples
(1) are scored but not learned.

Per-signal enable bits (``edge.kernels.kinds``; the plant file's signal kind) choose what applies: the
stage judges a signal only if its level or rate detector is enabled (a status word has neither: its
steps are its meaning), novelty needs the level bit (a counter sets a new maximum with every count),
the lower tail needs the stuck bit (a counter or a status word may rest by design).

``likelihood_chunk`` combines the stage's score with the stack's per-sample score in place: ``MAX``
keeps the larger, ``REPLACE`` keeps the stage's. When the stage's score is the one kept, the kind
becomes ``RANGE`` for a novelty, ``RATE`` for the upper tail (changes improbably large: the raw score
is a one-step change) and ``STUCK`` for the lower tail (changes improbably small).
State: ``WIDTH`` columns per signal (``init_state``), parameters from ``make_params``.
"""

from __future__ import annotations

import math

import numpy as np

from edge.kernels._jit import njit
from edge.kernels.kinds import EN_LEVEL, EN_RATE, EN_STUCK, Kind

# State columns of one signal.
COUNT = 0  # good samples learned
PREV = 1  # last good value
E_LOC = 2  # location of the one-step change
E_SCALE = 3  # scale of the one-step change (standard-deviation units)
SHORT = 4  # short-term average of the raw score
L_MEAN = 5  # long-term mean of SHORT
L_VAR = 6  # long-term variance of SHORT
LO = 7  # smallest good value seen
HI = 8  # largest good value seen
WIDTH = 9

P_ERR_ALPHA = 0
P_ERR_HUBER = 1
P_ERR_T = 2
P_SHORT_ALPHA = 3
P_LONG_ALPHA = 4
P_LEARN = 5
P_MEAN_FLOOR = 6
P_VAR_FLOOR = 7
P_DECADES = 8
P_NOVELTY = 9
P_MIN_SCALE = 10
P_TAILS = 11  # 1: upper tail only (HTM), 2: both tails
N_PARAMS = 12

MODE_OFF = 0
MODE_MAX = 1
MODE_REPLACE = 2

MAD_TO_SD = 1.2533141373155001  # sqrt(pi / 2), as in ``robust``
Z_CUT = 2.0  # a short average less than this many long-term sd above the mean scores 0
MAX_DECADES = 300.0  # Q below 1e-300 underflows; the score is ~1 long before
K_RATE = int(Kind.RATE)
K_RANGE = int(Kind.RANGE)
K_STUCK = int(Kind.STUCK)


def make_params(err_alpha: float = 0.0003, err_huber_k: float = 3.0, err_threshold: float = 2.0,
                short_alpha: float = 0.05, long_alpha: float = 0.0003, learn: int = 100,
                mean_floor: float = 0.03, var_floor: float = 0.0003, threshold_decades: float = 3.0,
                novelty_margin: float = 0.02, min_scale: float = 1e-9, tails: int = 2) -> np.ndarray:
    """Pack the parameters in kernel order (``novelty_margin`` NaN: no novelty score; ``tails`` 1 or 2)."""
    if not (0.0 < err_alpha < 1.0 and 0.0 < short_alpha <= 1.0 and 0.0 < long_alpha < 1.0):
        raise ValueError("need 0 < err_alpha < 1, 0 < short_alpha <= 1, 0 < long_alpha < 1")
    if err_huber_k <= 0.0 or err_threshold <= 0.0 or threshold_decades <= 0.0 or learn < 2:
        raise ValueError("need err_huber_k, err_threshold, threshold_decades > 0 and learn >= 2")
    if mean_floor < 0.0 or var_floor <= 0.0 or min_scale <= 0.0 or novelty_margin < 0.0:
        raise ValueError("need mean_floor >= 0, var_floor > 0, min_scale > 0, novelty_margin >= 0 or NaN")
    if tails not in (1, 2):
        raise ValueError("tails must be 1 (upper) or 2 (both)")
    return np.array([err_alpha, err_huber_k, err_threshold, short_alpha, long_alpha, float(learn), mean_floor,
                     var_floor, threshold_decades, novelty_margin, min_scale, float(tails)], dtype=np.float64)


def init_state(n_signals: int) -> np.ndarray:
    """Zeroed state: count 0 means nothing learned (the other columns are then ignored)."""
    return np.zeros((n_signals, WIDTH), dtype=np.float64)


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def likelihood_step(st: np.ndarray, s: int, x: float, floor: float, learn: bool, p: np.ndarray,
                    enable: int) -> float:
    """Score finite ``x`` of signal ``s``, then learn it if ``learn``; ``enable``: the signal's EN_* bits.

    Returns the score, negated for the lower tail; 2.0 flags a novelty (scored 1).
    """
    c = st[s, COUNT]
    sc = max(st[s, E_SCALE], floor, p[P_MIN_SCALE])
    raw = 0.0
    if c >= 2.0:
        r = x - st[s, PREV] - st[s, E_LOC]
        r2 = r * r
        et = p[P_ERR_T] * sc
        raw = r2 / (r2 + et * et) if np.isfinite(r2) else 1.0  # z^2 / (z^2 + E^2) with z = r / sc
    short = raw if c < 2.0 else st[s, SHORT] + p[P_SHORT_ALPHA] * (raw - st[s, SHORT])
    out = 0.0
    if c >= p[P_LEARN]:
        dm = short - max(st[s, L_MEAN], p[P_MEAN_FLOOR])
        var = max(st[s, L_VAR], p[P_VAR_FLOOR])
        lower = p[P_TAILS] == 2.0 and (enable & EN_STUCK) != 0
        if dm * dm > Z_CUT * Z_CUT * var and (dm > 0.0 or lower):  # erfc, log: only in a tail
            q = 0.5 * math.erfc(abs(dm) / math.sqrt(2.0 * var))
            d = -math.log10(q) if q > 1e-300 else MAX_DECADES
            out = d / (d + p[P_DECADES])
            out = out if dm > 0.0 else -out
        lo = st[s, LO]
        hi = st[s, HI]
        tol = (hi - lo) * p[P_NOVELTY]
        if hi > lo and (enable & EN_LEVEL) != 0 and (x > hi + tol or x < lo - tol):  # False for a NaN margin
            out = 2.0
    if learn:
        if c >= 1.0:
            # the change's location and scale; Huber-clipped once a few changes are known
            r = x - st[s, PREV] - st[s, E_LOC]
            inv = 1.0 / c
            a = max(p[P_ERR_ALPHA], inv)
            if c >= 10.0:
                lim = p[P_ERR_HUBER] * sc
                r = min(max(r, -lim), lim)
            st[s, E_LOC] += a * r
            st[s, E_SCALE] = (1.0 - a) * st[s, E_SCALE] + a * MAD_TO_SD * abs(r)
            # the long-term distribution of the short average
            a = max(p[P_LONG_ALPHA], inv)
            dm = short - st[s, L_MEAN]
            st[s, L_MEAN] += a * dm
            st[s, L_VAR] = (1.0 - a) * (st[s, L_VAR] + a * dm * dm)
            st[s, LO] = min(st[s, LO], x)
            st[s, HI] = max(st[s, HI], x)
        else:
            st[s, LO] = x
            st[s, HI] = x
        st[s, SHORT] = short
        st[s, PREV] = x
        st[s, COUNT] = c + 1.0
    return out


@njit(cache=True, nogil=True)
def likelihood_chunk(signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray,
                     floor: np.ndarray, enable: np.ndarray, p: np.ndarray, mode: int, score: np.ndarray,
                     kind: np.ndarray) -> int:
    """Score and learn a chunk in order, folding the stage's score into ``score``/``kind`` per ``mode``.

    ``floor``: per signal, the smallest meaningful change (a register's resolution; 0 = continuous);
    ``enable``: per signal, the EN_* bits (int64). A signal the stage does not judge keeps the stack's score.
    Returns the number of samples the stage judged whose combined score is >= 0.5.
    """
    n_high = 0
    for k in range(signal.shape[0]):
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            continue
        s = signal[k]
        en = enable[s]
        if (en & (EN_LEVEL | EN_RATE)) == 0:
            continue
        lk = likelihood_step(st, s, x, floor[s], quality[k] == 0, p, en)
        kd = K_RANGE if lk > 1.0 else (K_STUCK if lk < 0.0 else K_RATE)
        lk = min(abs(lk), 1.0)
        if mode == MODE_REPLACE or (mode == MODE_MAX and lk > score[k]):
            score[k] = lk
            kind[k] = kd if lk > 0.0 else 0
        if score[k] >= 0.5:
            n_high += 1
    return n_high
