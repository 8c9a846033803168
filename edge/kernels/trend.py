"""Slow trend: the slope of a signal's bin means, judged against the slopes the signal shows in normal operation.

Why: a drift (a fouling exchanger, a leaking seal, a sensor ageing) moves a signal slowly and steadily. The level
stage's baseline follows it (time constant ~100 samples), its scale grows with the lag, so the z that the level and
the CUSUM read stays near 1 while the value walks out of its range; and on a signal with a large process wave (a
zone temperature's hourly swing, a flow following load) the wave's own residuals are larger than the drift's lag.
On the simulated dev plant (seed 1) most drifts were therefore found only at their end, when the value dropped
back (bench/RESULTS.md, branch drift). What does tell a drift apart is its *slope* over a minute or so: a sensor's
noise averages out over that window, and a plant wave's slope is bounded by its amplitude / period, while a drift
that moves several amplitudes in minutes slopes many times steeper.

Per signal (state row ``st[s, :]``; only samples of quality 0 learn; non-finite and bad samples are gaps):
1. **Bins** of ``bin_s`` seconds (time, not samples: the same at 1 Hz and 10 Hz): the bin's mean value and mean
   time. A bin closes at the first sample ``bin_s`` after its first sample; that sample opens the next bin.
2. **Slope** between consecutive bin means, smoothed over the bins: ``G += beta * (d - G)`` (units per second).
   A gap of more than ``max_gap`` bins (a dropout, a machine switched off: the stack freezes it) restarts it.
3. **Judgement** once the slope statistics have learned ``warmup`` bins and ``G`` has seen ``ceil(2 / beta)``
   slopes since its last restart, the last ``run`` slopes between bins had G's sign (a drift is steady; a duty
   cycle's fill-and-vent slopes flip) and the signal's normal slopes are not heavy-tailed (the largest normal
   deviation ``PEAK`` within ``tail_max`` scales: a sine's slope stays within ~2, noise within ~4 over an hour,
   a leak tester's ``test_pressure`` pulses far beyond -- most of this stage's false alarms on the simulated
   dev plant without these two conditions): ``z = (G - loc) / max(scale, floor)`` with the robust location and scale of
   ``G`` (``robust.learn_step``: Huber clip at ``huber_k``, rate ``alpha`` per bin), ``floor`` one resolution step
   (or ``rel_res`` of the level) per ``bin_s``, and ``rel_per_h`` of the level per hour over ``T`` (a noise-free
   signal's normal slope is 0: without it the first creep of a load ramp, far below any drift's, scores).
   Score ``z^2 / (z^2 + T^2)``, ``T = threshold``; it is held on every sample until the next bin closes.
4. **Guarded learning:** a bin whose score is at ``guard_at`` or above teaches the statistics at ``guard`` times
   their rate, so the drift being judged does not become the slope's normal (issue 15, item 2).

5. **Machine-wide moves are load changes, not drifts:** when at least ``max(machine_min, machine_fraction x
   members)`` of a machine's judged signals trend at once (a bin at ``guard_at`` or above), the machine's trend scores
   are held, and its trends learn nothing, until ``machine_hold_s`` after the last such bin. On the simulated dev
   plant every trend false alarm at a threshold of 4 fell in the hour of the 06:00 start or the 22:00 stop, when
   machines ramp their loads while their state still says running (bench/RESULTS.md, branch drift); a drift fault
   moves one signal.

6. **Quiet after a start, a stop or a load change** (``quiet_s`` > 0): a machine's trend scores are not reported
   until ``quiet_s`` after its operating state last changed (``m_since``: a start, a stop, the end of an idle
   spell) or after its operating-change hold (``hold_until``: many members' levels left their baselines together)
   ended. A load ramp takes minutes and the thermals follow it for longer: their slopes then are the machine's,
   not a drift's. The statistics keep learning: the ramp's slopes are the signal's own normal (``PEAK`` remembers
   them, so the same ramp at the next shift change is not news either).
7. **The machine's common slope** (``common_z`` > 0): each judged member's z, clipped at ``common_clip``, is
   summed per machine (``m_zsum``/``m_zn``); when the *other* members' mean z is at least ``common_z`` in size, the
   machine moves as one (a load ramp on signals whose own slopes are each unremarkable): held as in 5.

8. **The same signal of several machines** (``class_of``; the stack's ``trend.class_fraction`` > 0): signals are
   grouped in classes (the stack: the same signal name and unit on different machines, e.g. every compressor's
   ``speed``); when at least ``c_need`` (the stack: ``max(machine_min, class_fraction x members)``) of a class trend
   at once (a bin at ``guard_at`` or above) the
   class is held as in 5. A shift's load ramp starts on every machine of a kind at once, and on its smoothest
   signals it shows as a slope minutes before anything else of the machine moves (the dev plant's compressors'
   ``speed`` and meters' ``peak_demand``, measured); a drift moves one signal of one machine.

The stack reports the score as kind CHANGE (a drift is a change) where it is larger than the sample's own score,
so the operating-change and restart holds, settling and the re-arm window apply to it as to the CUSUM.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit
from edge.kernels import robust

# State columns.
T0 = 0  # first timestamp (ns, float) of the open bin; NaN: no bin open
TSUM = 1  # sum of (t - T0) in seconds over the open bin
VSUM = 2  # sum of the values in the open bin
NBIN = 3  # samples in the open bin
PREV_T = 4  # mean time (ns, float) of the last closed bin; NaN none
PREV_V = 5  # its mean value
G = 6  # smoothed slope (units per second)
GN = 7  # slopes G has seen since it last restarted
STATS = 8  # robust location, scale and count of G (``robust``)
SCORE = STATS + robust.WIDTH  # score of the last closed bin
PEAK = SCORE + 1  # largest |G - location| of normal operation, decaying
HOT = PEAK + 1  # 1 while the last closed bin scored at ``guard_at`` or above (counted in its machine's ``m_hot``)
RUN = HOT + 1  # consecutive bin slopes with the sign of G
ZC = RUN + 1  # the signal's last judged z, clipped at +-common_clip (counted in its machine's ``m_zsum``); NaN none
WIDTH = ZC + 1

P_BIN_S = 0
P_BETA = 1
P_ALPHA = 2
P_HUBER_K = 3
P_WARMUP = 4
P_THRESHOLD = 5
P_GUARD = 6
P_GUARD_AT = 7
P_MAX_GAP = 8
P_REL_RES = 9
P_PEAK_MULT = 10
P_PEAK_DECAY = 11
P_M_FRACTION = 12
P_M_MIN = 13
P_M_HOLD_S = 14
P_RUN = 15
P_TAIL_MAX = 16
P_QUIET_S = 17
P_COMMON_Z = 18
P_COMMON_CLIP = 19
P_REL_PER_H = 20
N_PARAMS = 21

MIN_SCALE = 1e-12


def make_params(bin_s: float = 10.0, beta: float = 0.2, alpha: float = 0.003, huber_k: float = 3.0,
                warmup: int = 60, threshold: float = 8.0, guard: float = 0.0, guard_at: float = 0.3,
                max_gap: float = 3.0, rel_res: float = 1e-6, peak_mult: float = 1.5,
                peak_decay: float = 0.0005, machine_fraction: float = 0.1, machine_min: float = 2.0,
                machine_hold_s: float = 600.0, run: int = 3, tail_max: float = 6.0, quiet_s: float = 0.0,
                common_z: float = 0.0, common_clip: float = 4.0, rel_per_h: float = 0.0) -> np.ndarray:
    """Pack the parameters in kernel order (``bin_s`` seconds; ``beta``/``alpha`` per bin; ``warmup`` bins;
    ``quiet_s`` seconds; ``common_z`` 0: no common-slope rule)."""
    if bin_s <= 0.0 or not 0.0 < beta <= 1.0 or not 0.0 < alpha < 1.0 or huber_k <= 0.0 or warmup < 1 \
            or threshold <= 0.0 or not 0.0 <= guard <= 1.0 or not 0.0 < guard_at <= 1.0 or max_gap < 1.0 \
            or rel_res < 0.0 or peak_mult < 0.0 or not 0.0 <= peak_decay < 1.0 or machine_fraction < 0.0 \
            or machine_min < 1.0 or machine_hold_s < 0.0 or run < 1 or tail_max <= 0.0 or quiet_s < 0.0 \
            or common_z < 0.0 or common_clip <= 0.0 or rel_per_h < 0.0:
        raise ValueError("need bin_s > 0, 0 < beta <= 1, 0 < alpha < 1, huber_k > 0, warmup >= 1, threshold > 0, "
                         "0 <= guard <= 1, 0 < guard_at <= 1, max_gap >= 1, rel_res >= 0, peak_mult >= 0, "
                         "0 <= peak_decay < 1, machine_fraction >= 0, machine_min >= 1, machine_hold_s >= 0, run >= 1, "
                         "tail_max > 0, quiet_s >= 0, common_z >= 0, common_clip > 0, rel_per_h >= 0")
    return np.array([bin_s, beta, alpha, huber_k, float(warmup), threshold, guard, guard_at, max_gap, rel_res,
                     peak_mult, peak_decay, machine_fraction, machine_min, machine_hold_s, float(run), tail_max,
                     quiet_s, common_z, common_clip, rel_per_h], dtype=np.float64)


def init_state(n_signals: int) -> np.ndarray:
    st = np.zeros((n_signals, WIDTH), dtype=np.float64)
    st[:, T0] = math.nan
    st[:, PREV_T] = math.nan
    st[:, ZC] = math.nan
    return st


@njit(cache=True, nogil=True, _nrt=False)  # per-bin helper: see edge/kernels/__init__.py
def _set_zc(st: np.ndarray, s: int, zc: float, m: int, m_zsum: np.ndarray, m_zn: np.ndarray) -> None:
    """Replace signal ``s``'s clipped z (NaN: none) in its machine's sum and count of judged members' z."""
    old = st[s, ZC]
    if m >= 0:
        if np.isfinite(old):
            m_zsum[m] -= old
            m_zn[m] -= 1.0
        if np.isfinite(zc):
            m_zsum[m] += zc
            m_zn[m] += 1.0
    st[s, ZC] = zc


@njit(cache=True, nogil=True, _nrt=False)  # per-bin helper: see edge/kernels/__init__.py
def close_bin(st: np.ndarray, s: int, res: float, p: np.ndarray, m: int, m_hot: np.ndarray, m_need: np.ndarray,
              m_held: np.ndarray, m_zsum: np.ndarray, m_zn: np.ndarray, c: int, c_hot: np.ndarray,
              c_need: np.ndarray, c_held: np.ndarray) -> None:
    """Close signal ``s``'s open bin: its slope against the previous bin, the judgement, then the learning.

    ``m``: the signal's machine (-1 none); ``m_hot``/``m_need``/``m_held`` per machine: members trending now, how
    many make a machine-wide move, and until when (ns) its trends are held and learn nothing; ``m_zsum``/``m_zn``:
    the sum and count of its judged members' clipped z (the machine's common slope); ``c`` the signal's class
    (-1 none) and ``c_hot``/``c_need``/``c_held`` per class as ``m_*`` per machine."""
    n = st[s, NBIN]
    t_mean = st[s, T0] + st[s, TSUM] / n * 1e9
    v_mean = st[s, VSUM] / n
    bin_s = p[P_BIN_S]
    prev_t = st[s, PREV_T]
    score = 0.0
    if np.isfinite(prev_t) and t_mean - prev_t <= p[P_MAX_GAP] * bin_s * 1e9 and t_mean > prev_t:
        d = (v_mean - st[s, PREV_V]) / ((t_mean - prev_t) * 1e-9)
        gn = st[s, GN]
        g = d if gn == 0.0 else st[s, G] + p[P_BETA] * (d - st[s, G])
        st[s, G] = g
        st[s, GN] = gn + 1.0
        st[s, RUN] = st[s, RUN] + 1.0 if d * g > 0.0 else 0.0
        loc = st[s, STATS + robust.LOC]
        scale = st[s, STATS + robust.SCALE]
        count = st[s, STATS + robust.COUNT]
        if gn + 1.0 >= math.ceil(2.0 / p[P_BETA]):
            t = p[P_THRESHOLD]
            peak = st[s, PEAK]
            res_floor = max(res, p[P_REL_RES] * abs(v_mean)) / bin_s
            # a slope under rel_per_h of the value per hour scores under 0.5 (a noise-free signal's creep)
            floor = max(res_floor, p[P_PEAK_MULT] * peak / t, p[P_REL_PER_H] * abs(v_mean) / (3600.0 * t))
            z = robust.z_score(loc, scale, count, g, p[P_WARMUP], max(floor, MIN_SCALE))
            if np.isfinite(z):
                score = z * z / (z * z + t * t)
            hot = score >= p[P_GUARD_AT]
            # not a steady slope (a duty cycle's pulse), or a signal whose normal slopes are heavy-tailed: not judged
            steady = st[s, RUN] >= p[P_RUN] and peak <= p[P_TAIL_MAX] * max(scale, res_floor, MIN_SCALE)
            held = False
            h = 1.0 if hot else 0.0
            dh = int(h - st[s, HOT])
            st[s, HOT] = h
            if c >= 0:
                c_hot[c] += dh
                if c_hot[c] >= c_need[c]:  # the same signal of several machines trends at once: the plant's load
                    c_held[c] = max(c_held[c], np.int64(t_mean) + np.int64(p[P_M_HOLD_S] * 1e9))
                held = np.int64(t_mean) <= c_held[c]
            if m >= 0:
                m_hot[m] += dh
                moves = m_hot[m] >= m_need[m]  # several members trend together: the machine changes its load
                if p[P_COMMON_Z] > 0.0:
                    clip = p[P_COMMON_CLIP]
                    _set_zc(st, s, min(max(z, -clip), clip) if np.isfinite(z) else math.nan, m, m_zsum, m_zn)
                    own = st[s, ZC] if np.isfinite(st[s, ZC]) else 0.0
                    others = m_zn[m] - (1.0 if np.isfinite(st[s, ZC]) else 0.0)
                    # the other members' mean slope z: a machine whose signals slope together on average changes
                    # its load, even when none of them alone trends (a ramp on signals with large waves)
                    if others >= 1.0 and abs(m_zsum[m] - own) >= p[P_COMMON_Z] * others:
                        moves = True
                if moves:
                    m_held[m] = max(m_held[m], np.int64(t_mean) + np.int64(p[P_M_HOLD_S] * 1e9))
                held = held or np.int64(t_mean) <= m_held[m]
            if not held:
                if not hot:
                    st[s, PEAK] = max(abs(g - loc) if count > 0.0 else 0.0, peak * (1.0 - p[P_PEAK_DECAY]))
                loc, scale, count = robust.learn_step(loc, scale, count, g, p[P_ALPHA], p[P_HUBER_K], p[P_WARMUP],
                                                      MIN_SCALE, p[P_GUARD] if hot else 1.0)
                st[s, STATS + robust.LOC] = loc
                st[s, STATS + robust.SCALE] = scale
                st[s, STATS + robust.COUNT] = count
            if not steady:
                score = 0.0
    else:
        st[s, GN] = 0.0  # a gap (or the first bin): the smoothed slope starts again
        if st[s, HOT] != 0.0:
            if m >= 0:
                m_hot[m] -= 1
            if c >= 0:
                c_hot[c] -= 1
            st[s, HOT] = 0.0
        _set_zc(st, s, math.nan, m, m_zsum, m_zn)
    st[s, SCORE] = score
    st[s, PREV_T] = t_mean
    st[s, PREV_V] = v_mean


@njit(cache=True, nogil=True)
def trend_chunk(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray,
                cfg: np.ndarray, c_mask: int, en_bit: int, c_frozen: int, c_res: int, p: np.ndarray,
                machine_of: np.ndarray, m_hot: np.ndarray, m_need: np.ndarray, m_held: np.ndarray,
                m_zsum: np.ndarray, m_zn: np.ndarray, m_since: np.ndarray, hold_until: np.ndarray,
                class_of: np.ndarray, c_hot: np.ndarray, c_need: np.ndarray, c_held: np.ndarray,
                score_out: np.ndarray, kind_out: np.ndarray, kind_code: int) -> None:
    """Bin, judge and learn a chunk in order; where the held trend score beats ``score_out[k]`` it replaces it
    with kind ``kind_code``.

    Per signal, from the stack's config ``cfg``: judged when ``int(cfg[s, c_mask]) & en_bit`` and
    ``cfg[s, c_frozen]`` is 0 (a machine switched off: its samples are skipped, and the gap restarts the slope);
    ``cfg[s, c_res]`` is its resolution step (0 none). ``machine_of[s]``: its machine (-1 none); while the
    machine's trends are held (``m_held``, see ``close_bin``) its score is not reported. Per machine, from the
    stack: ``m_since`` its operating state's last change (ns, -1 none) and ``hold_until`` the end of its operating
    change hold (``opchange``, ns, -1 none); a machine's trends are held until ``quiet_s`` after either (with
    ``quiet_s`` > 0). ``class_of[s]``: the signal's class (-1 none), ``c_hot``/``c_need``/``c_held`` per class.
    """
    bin_ns = p[P_BIN_S] * 1e9
    quiet_ns = np.int64(p[P_QUIET_S] * 1e9)
    for k in range(signal.shape[0]):
        s = signal[k]
        x = value[k]
        q = quality[k]
        if (int(cfg[s, c_mask]) & en_bit) == 0 or cfg[s, c_frozen] != 0.0 or q == 2 or not np.isfinite(x):
            continue
        m = machine_of[s]
        c = class_of[s]
        if q == 0:
            t = float(ts_ns[k])
            t0 = st[s, T0]
            if np.isfinite(t0) and t - t0 >= bin_ns:
                close_bin(st, s, cfg[s, c_res], p, m, m_hot, m_need, m_held, m_zsum, m_zn, c, c_hot, c_need, c_held)
                t0 = math.nan
            if not np.isfinite(t0):
                st[s, T0] = t
                st[s, TSUM] = 0.0
                st[s, VSUM] = 0.0
                st[s, NBIN] = 0.0
                t0 = t
            st[s, TSUM] += (t - t0) * 1e-9
            st[s, VSUM] += x
            st[s, NBIN] += 1.0
        sc = st[s, SCORE]
        if c >= 0 and ts_ns[k] <= c_held[c]:
            sc = 0.0
        if m >= 0 and (ts_ns[k] <= m_held[m] or (quiet_ns > 0 and (
                (m_since[m] >= 0 and ts_ns[k] <= m_since[m] + quiet_ns)
                or (hold_until[m] >= 0 and ts_ns[k] <= hold_until[m] + quiet_ns)))):
            sc = 0.0
        if sc > score_out[k]:
            score_out[k] = sc
            kind_out[k] = kind_code
