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
  evaluating ``erfc`` and ``log10``: they were three quarters of the one-step chain's cost (38 -> 10 ns
  per sample at 15,000 signals), and a score below ~0.35 (T = 3) neither opens nor holds an alarm;
- novelty (HTM's NAB detector calls it the spatial anomaly): a value beyond the range the signal has
  ever taken by more than ``novelty_margin`` of that range scores 1 (NaN margin: off);
- seasonal chain (``season_bins`` > 0): a usual value at an unusual time of day -- a daily swing that
  did not come, came the wrong way, or stalled -- is invisible to one-step changes and to the range. So a
  second raw score, the deviation from a time-of-day baseline (``season_bins`` bins over
  ``season_period_s``, each a running mean of its first samples, then an exponential average with a
  time constant of ``season_memory_s`` of its own time, so the same setting serves 1 s and 5 min
  sampling; a bin is judged against once it has averaged ``S_BIN_MIN`` samples), robustly standardised and
  squashed like the first, runs through its own short average and long-term Gaussian, upper tail only,
  scored with ``season_decades``; the sample takes the larger of the two scores, kind ``LEVEL`` when
  the seasonal one wins (signals with the level bit only). On NAB it caught the three artificial
  daily-pattern anomalies the rest misses (70.8 -> 73.4). It costs 2 x ``season_bins`` + 6 floats per
  signal (24 bins: 432 B, 6.5 MB for 15,000 signals) in a state array of its own (``init_season``).

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

from edge.jit import njit
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
P_S_BINS = 12  # seasonal bins (0: no seasonal chain)
P_S_BIN_NS = 13  # width of one bin, ns
P_S_MEMORY_S = 14  # time constant of a bin, seconds of its own time
P_S_DECADES = 15  # -log10 tail that scores 0.5, seasonal chain
N_PARAMS = 16

# Seasonal state columns of one signal (``init_season``): the chain's statistics, then the bins.
S_SCALE = 0  # scale of the deviation from the bin (standard-deviation units)
S_COUNT = 1  # samples learned against an initialised bin
S_SHORT = 2  # short-term average of the seasonal raw score
S_MEAN = 3  # long-term mean of S_SHORT
S_VAR = 4  # long-term variance of S_SHORT
S_TS = 5  # timestamp of the last learned sample, ns (NaN: none)
S_BINS = 6  # bin h: value at S_BINS + 2h (NaN until its first sample), sample count at S_BINS + 2h + 1
S_SCALE_ALPHA = 0.01  # learning rate of the seasonal scale (samples)
S_SCALE_WARM = 50.0  # seasonal deviations learned before the seasonal raw score is trusted
S_BIN_MIN = 10.0  # samples a bin averages before the chain judges against it

MODE_OFF = 0
MODE_MAX = 1
MODE_REPLACE = 2

MAD_TO_SD = 1.2533141373155001  # sqrt(pi / 2), as in ``robust``
Z_CUT = 2.0  # a short average less than this many long-term sd above the mean scores 0
MAX_DECADES = 300.0  # Q below 1e-300 underflows; the score is ~1 long before
K_RATE = int(Kind.RATE)
K_RANGE = int(Kind.RANGE)
K_STUCK = int(Kind.STUCK)
K_LEVEL = int(Kind.LEVEL)


def make_params(err_alpha: float = 0.0003, err_huber_k: float = 3.0, err_threshold: float = 2.0,
                short_alpha: float = 0.05, long_alpha: float = 0.0003, learn: int = 100,
                mean_floor: float = 0.03, var_floor: float = 0.0003, threshold_decades: float = 3.0,
                novelty_margin: float = 0.02, min_scale: float = 1e-9, tails: int = 2, season_bins: int = 24,
                season_period_s: float = 86_400.0, season_memory_s: float = 3_000.0,
                season_decades: float = 6.5) -> np.ndarray:
    """Pack the parameters in kernel order (``novelty_margin`` NaN: no novelty score; ``tails`` 1 or 2;
    ``season_bins`` 0: no seasonal chain)."""
    if not (0.0 < err_alpha < 1.0 and 0.0 < short_alpha <= 1.0 and 0.0 < long_alpha < 1.0):
        raise ValueError("need 0 < err_alpha < 1, 0 < short_alpha <= 1, 0 < long_alpha < 1")
    if err_huber_k <= 0.0 or err_threshold <= 0.0 or threshold_decades <= 0.0 or learn < 2:
        raise ValueError("need err_huber_k, err_threshold, threshold_decades > 0 and learn >= 2")
    if mean_floor < 0.0 or var_floor <= 0.0 or min_scale <= 0.0 or novelty_margin < 0.0:
        raise ValueError("need mean_floor >= 0, var_floor > 0, min_scale > 0, novelty_margin >= 0 or NaN")
    if tails not in (1, 2):
        raise ValueError("tails must be 1 (upper) or 2 (both)")
    if season_bins < 0 or season_period_s <= 0.0 or season_memory_s <= 0.0 or season_decades <= 0.0:
        raise ValueError("need season_bins >= 0 and season_period_s, season_memory_s, season_decades > 0")
    bin_ns = season_period_s * 1e9 / max(season_bins, 1)
    return np.array([err_alpha, err_huber_k, err_threshold, short_alpha, long_alpha, float(learn), mean_floor,
                     var_floor, threshold_decades, novelty_margin, min_scale, float(tails), float(season_bins),
                     bin_ns, season_memory_s, season_decades], dtype=np.float64)


def init_state(n_signals: int) -> np.ndarray:
    """Zeroed state: count 0 means nothing learned (the other columns are then ignored)."""
    return np.zeros((n_signals, WIDTH), dtype=np.float64)


def init_season(n_signals: int, bins: int) -> np.ndarray:
    """Seasonal state: statistics and bin counts zero, timestamp and bin values NaN (not seen yet)."""
    se = np.zeros((n_signals, S_BINS + 2 * bins), dtype=np.float64)
    se[:, S_TS] = np.nan
    se[:, S_BINS::2] = np.nan  # value and count side by side: one cache line per sample
    return se


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _upper_tail_score(dm: float, var: float, decades: float) -> float:
    """``d / (d + T)`` for ``d = -log10 P(N(0, var) > dm)``; 0 within ``Z_CUT`` sd (erfc and log skipped)."""
    if dm <= 0.0 or dm * dm <= Z_CUT * Z_CUT * var:
        return 0.0
    q = 0.5 * math.erfc(dm / math.sqrt(2.0 * var))
    d = -math.log10(q) if q > 1e-300 else MAX_DECADES
    return d / (d + decades)


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def season_step(se: np.ndarray, s: int, x: float, ts: float, h: int, floor: float, learn: bool,
                p: np.ndarray) -> float:
    """Seasonal chain: score finite ``x`` at time ``ts`` (ns), in bin ``h``, against that bin; then learn it."""
    jb = S_BINS + 2 * h
    b = se[s, jb]
    nbin = se[s, jb + 1]
    if nbin < S_BIN_MIN:  # a young bin (a new signal's first day, or an hour never seen): it only learns
        if learn:
            if nbin == 0.0:
                b = x
            se[s, jb] = b + (x - b) / (nbin + 1.0)
            se[s, jb + 1] = nbin + 1.0
            se[s, S_TS] = ts
        return 0.0
    c = se[s, S_COUNT]
    sc = max(se[s, S_SCALE], floor, p[P_MIN_SCALE])
    e = x - b
    raw = 0.0
    if c >= S_SCALE_WARM:
        e2 = e * e
        et = p[P_ERR_T] * sc
        raw = e2 / (e2 + et * et) if np.isfinite(e2) else 1.0
    short = raw if c < 2.0 else se[s, S_SHORT] + p[P_SHORT_ALPHA] * (raw - se[s, S_SHORT])
    out = 0.0
    if c >= p[P_LEARN]:
        out = _upper_tail_score(short - max(se[s, S_MEAN], p[P_MEAN_FLOOR]), max(se[s, S_VAR], p[P_VAR_FLOOR]),
                                p[P_S_DECADES])
    if learn:
        if c >= S_SCALE_WARM:
            lim = p[P_ERR_HUBER] * sc
            e = min(max(e, -lim), lim)
        a = S_SCALE_ALPHA if c >= 100.0 else max(S_SCALE_ALPHA, 1.0 / (c + 1.0))  # no division once settled
        se[s, S_SCALE] = (1.0 - a) * se[s, S_SCALE] + a * MAD_TO_SD * abs(e)
        dt_s = (ts - se[s, S_TS]) * 1e-9 if np.isfinite(se[s, S_TS]) else 0.0
        a = min(max(dt_s, 0.0) / p[P_S_MEMORY_S], 1.0)
        a = a if a * (nbin + 1.0) >= 1.0 else 1.0 / (nbin + 1.0)  # max(a, 1 / (n + 1)): a running mean at first
        se[s, jb] = b + a * e
        se[s, jb + 1] = nbin + 1.0
        if c >= 1.0:
            a = p[P_LONG_ALPHA] if c * p[P_LONG_ALPHA] >= 1.0 else 1.0 / c  # max(alpha, 1 / c)
            dm = short - se[s, S_MEAN]
            se[s, S_MEAN] += a * dm
            se[s, S_VAR] = (1.0 - a) * (se[s, S_VAR] + a * dm * dm)
        se[s, S_SHORT] = short
        se[s, S_COUNT] = c + 1.0
        se[s, S_TS] = ts
    return out


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
def likelihood_chunk(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                     st: np.ndarray, se: np.ndarray, floor: np.ndarray, enable: np.ndarray, p: np.ndarray, mode: int,
                     score: np.ndarray, kind: np.ndarray) -> int:
    """Score and learn a chunk in order, folding the stage's score into ``score``/``kind`` per ``mode``.

    ``se``: the seasonal state (``init_season``; unused when ``P_S_BINS`` is 0).

    ``floor``: per signal, the smallest meaningful change (a register's resolution; 0 = continuous);
    ``enable``: per signal, the EN_* bits (int64). A signal the stage does not judge keeps the stack's score.
    Returns the number of samples the stage judged whose combined score is >= 0.5.
    """
    n_high = 0
    nb = max(int(p[P_S_BINS]), 1)
    last_ts = ts_ns[0] - 1 if ts_ns.shape[0] else 0
    h = 0
    for k in range(signal.shape[0]):
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            continue
        s = signal[k]
        en = enable[s]
        if (en & (EN_LEVEL | EN_RATE)) == 0:
            continue
        learn = quality[k] == 0
        lk = likelihood_step(st, s, x, floor[s], learn, p, en)
        kd = K_RANGE if lk > 1.0 else (K_STUCK if lk < 0.0 else K_RATE)
        lk = min(abs(lk), 1.0)
        if p[P_S_BINS] > 0.0 and (en & EN_LEVEL) != 0:  # a counter's value has no time of day
            if ts_ns[k] != last_ts:  # a frame's samples mostly share a timestamp: one bin index per change
                last_ts = ts_ns[k]
                h = math.floor(last_ts / p[P_S_BIN_NS]) % nb
            ls = season_step(se, s, x, float(ts_ns[k]), h, floor[s], learn, p)
            if ls > lk:
                lk = ls
                kd = K_LEVEL
        if mode == MODE_REPLACE or (mode == MODE_MAX and lk > score[k]):
            score[k] = lk
            kind[k] = kd if lk > 0.0 else 0
        if score[k] >= 0.5:
            n_high += 1
    return n_high
