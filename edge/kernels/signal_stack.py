"""The per-signal detector stack fused into one pass: level, change, stuck, rate and range.

Why fused: at 15,000 signals the cost is memory traffic, not arithmetic. One pass touches each
sample's state row (16 float64, two cache lines) once and calls the components' scalar cores
(``robust.z_score``/``learn_step``, ``cusum.cusum_core``, ``stuck.stuck_core``, ``rate.rate_core``,
``limits.limit_score``), which numba inlines; each component's own kernel runs the same core, keeps its
reference test, and this kernel is tested against their composition.

Per sample (in order; the state before the sample judges it, then learns it):
- level: robust z of the value, score ``z^2 / (z^2 + T^2)`` with ``T = level_threshold``;
- change: CUSUM of that z (scaled to its long-run deviation when ``rho_alpha`` > 0, see ``cusum``);
  stuck: improbable run of repeats; rate: robust z of the slope, squashed
  with ``rate_threshold``; range: outside [low, high];
- the sample's score is the largest enabled component score, its kind the component that gave it;
- ``z_last[signal]`` receives the level z clipped to +-``machine_z_clip`` (0 in warm-up) for the
  machine stage.
Guarded learning (``guard`` < 1): a sample whose level or change score is at ``guard_at`` (the stack passes
the alarm's off threshold: while the score is there, an open alarm stays open) or above teaches the level
baseline at ``guard`` times its learning rate, so a persistent fault (a step, a calibration offset) is not
absorbed within its own duration -- the Huber clip alone bounds one sample's pull,
not a thousand samples'. 0 freezes the baseline while the signal is anomalous: then only a re-baseline
(``DetectorStack.rebaseline``) accepts a confirmed change.
Relative resolution (``rel_res`` > 0): the resolution used below is at least ``rel_res`` times the level's
location. Why: a float32 register carries ~7 digits; a constant 56 kW read through float32 flickers by one last
bit (3.8e-6), and with no noise learned that flicker read as a many-sigma level or rate event (measured on the
simulated dev plant: an energy meter's ``peak_demand`` settling after the 22:00 ramp, the largest single source
of night alarms). ``1e-6`` is about eight float32 last bits and far below any plant sensor's accuracy.
Span floor (``rate_span`` > 0): the slope scale is also floored at ``rate_span`` times the signal's plausible
span ``high - low`` per typical period (when both limits are set), like the resolution floor below. Why: a
duty-cycled signal's slopes are bimodal (flat most of the time, then a fill or a vent), and the robust scale
learns the flat part; at 10 Hz the simulated leak-test pressure's every vent read as a 6-sigma slope (31
alarms in 14 minutes on the dev plant). A move of under ``rate_span`` of the span per sample is no fault.
Resolution (``cfg[:, C_RES]`` > 0, e.g. an int16 register at scale 0.1): the level scale is floored at
one resolution step and the slope scale at one step per typical period before the z-scores are taken.
A quantised signal whose noise is below its step otherwise learns a scale of a fraction of a step, and
every single-step tick -- or a counter's increment -- reads as a 5-40 sigma event (measured on the
simulator: most of the rate alarms on the dev plant). Only the judgement is floored; the learned state
is the same as without.
numba's cache does not track imports: a change to a component module must come with an edit here (or
a cleared ``__pycache__``), or the fused kernel keeps running the old, inlined component.
Bad-quality (2) and non-finite samples change no learned state (a gap); uncertain samples (1) are scored
but not learned. A bad sample is judged on data quality alone: ``d``, the seconds since the signal's last
usable sample (the rate stage's last timestamp, kept for every signal), scores ``d^2 / (d^2 + B^2)`` with
kind BAD, ``B = bad_s`` (0.5 once the signal has been bad for ``bad_s``); a signal never seen good, or
``bad_s`` 0, scores 0 with kind NONE. Why time and not a count of bad samples: a dropout is a duration,
whatever the polling rate (the simulator's dropouts last 5-60 s, at 1 Hz or 10 Hz).
Own level learning rate (``cfg[:, C_ALPHA]`` > 0): the signal's level location and scale learn at that rate instead
of the stack's ``alpha`` (guard and warm-up apply as usual). Why: a value measured once per part (kind ``per_part``)
is flat within a part and steps between parts; learned over ~100 samples (two 45-s parts at 1 Hz) its scale is the
spread of the last few parts, which a run of similar parts shrinks to a third of the spread of parts, and the next
ordinary part reads as a 6-sigma level (measured on the simulated leak testers' ``part_temp``: bench/RESULTS.md,
branch quiet). A memory of many parts judges a part against the parts before it.
Frozen (``cfg[:, C_FROZEN]`` != 0, set by ``opstate.update_states`` while the signal's machine is off): a usable
sample only moves the signal's latest value and time (so the BAD and SILENT judgements and the next slope see
it); nothing is learned and it scores 0 with kind NONE (``z_last`` 0). Why: a machine at rest is not the process
the baseline describes -- neither a sample to learn nor one to judge against the running baseline.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit
from edge.kernels import cusum, limits, opchange, rate, robust, stuck
from edge.kernels.kinds import EN_CHANGE, EN_LEVEL, EN_RANGE, EN_RATE, EN_STUCK, Kind

# State columns of one signal.
B_LEVEL = 0
B_CUSUM = B_LEVEL + robust.WIDTH
B_STUCK = B_CUSUM + cusum.WIDTH
B_RATE = B_STUCK + stuck.WIDTH
WIDTH = B_RATE + rate.WIDTH

# Per-signal config columns.
C_LOW = 0
C_HIGH = 1
C_MASK = 2
C_RES = 3  # resolution in engineering units (one register LSB x scale), 0 = continuous
C_FROZEN = 4  # != 0: the signal's machine is off (``opstate``): no learning, no judgement, data quality only
C_ALPHA = 5  # > 0: this signal's level learning rate instead of the stack's (e.g. kind ``per_part``); 0 = the stack's
C_WIDTH = 6

# Per-signal routing of ``signal_frame``'s bookkeeping (int64 columns; -1 none).
R_DEVICE = 0  # device (PLC, server) whose polls the signal's samples are (``devices.device_polls``)
R_MEMBER = 1  # machine-stage machine the signal is a member of (``pca.update_last``'s ``seen``)
R_LAST = 2  # != 0: keep the signal's latest good value in ``x_last`` (``pca.update_last``)
R_OC = 3  # machine whose operating changes the signal counts towards (``opchange.machine_moves``)
R_WIDTH = 4

# ``signal_frame``'s operating-change parameters (``opchange.machine_moves``'s scalars).
OC_Z_HOT = 0
OC_MIN_FRACTION = 1
OC_MIN_SIGNALS = 2
OC_MARK = 3  # != 0: mark the machines after the pass; 0: leave the counts in ``oc_hot`` for ``opchange.mark_machines``
OC_WIDTH = 4

# Parameter blocks, then the stack's own scalars.
O_LEVEL = 0
O_CUSUM = O_LEVEL + robust.N_PARAMS
O_STUCK = O_CUSUM + cusum.N_PARAMS
O_RATE = O_STUCK + stuck.N_PARAMS
O_STACK = O_RATE + rate.N_PARAMS
S_LEVEL_T = O_STACK
S_RATE_T = O_STACK + 1
S_MARGIN = O_STACK + 2
S_ZCLIP = O_STACK + 3
S_BAD_S = O_STACK + 4
S_GUARD = O_STACK + 5
S_GUARD_AT = O_STACK + 6
S_RATE_SPAN = O_STACK + 7
S_REL_RES = O_STACK + 8
N_PARAMS = O_STACK + 9

K_LEVEL = int(Kind.LEVEL)
K_CHANGE = int(Kind.CHANGE)
K_STUCK = int(Kind.STUCK)
K_RATE = int(Kind.RATE)
K_RANGE = int(Kind.RANGE)
K_BAD = int(Kind.BAD)


def pack_params(level: np.ndarray, cusum_p: np.ndarray, stuck_p: np.ndarray, rate_p: np.ndarray, *,
                level_threshold: float, rate_threshold: float, limit_margin: float,
                machine_z_clip: float, bad_s: float = 0.0, guard: float = 1.0, guard_at: float = 0.5,
                rate_span: float = 0.0, rel_res: float = 0.0) -> np.ndarray:
    """Concatenate the component parameter vectors and the stack scalars in kernel order (``bad_s`` 0: no BAD;
    ``guard`` 1: the level learns at its own rate whatever the sample scored)."""
    if bad_s < 0.0 or not 0.0 <= guard <= 1.0 or not 0.0 < guard_at <= 1.0 or rate_span < 0.0 or rel_res < 0.0:
        raise ValueError("need bad_s >= 0, 0 <= guard <= 1, 0 < guard_at <= 1, rate_span >= 0 and rel_res >= 0")
    parts = [level, cusum_p, stuck_p, rate_p,
             [level_threshold, rate_threshold, limit_margin, machine_z_clip, bad_s, guard, guard_at, rate_span,
              rel_res]]
    p = np.concatenate([np.asarray(a, dtype=np.float64) for a in parts])
    if p.shape[0] != N_PARAMS:
        raise ValueError(f"expected {N_PARAMS} parameters, got {p.shape[0]}")
    return p


def init_state(n_signals: int) -> np.ndarray:
    st = np.zeros((n_signals, WIDTH), dtype=np.float64)
    stuck.init_state(st, B_STUCK)
    rate.init_state(st, B_RATE)
    return st


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _squash(z: float, t: float) -> float:
    if not np.isfinite(z):
        return 0.0
    z2 = z * z
    return z2 / (z2 + t * t)


@njit(cache=True, nogil=True)
def signal_chunk(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray,
                 cfg: np.ndarray, p: np.ndarray, score_out: np.ndarray, kind_out: np.ndarray,
                 z_last: np.ndarray) -> int:
    """Score and learn a chunk in order; returns the number of samples scoring >= 0.5.

    Why scalars: the parameters are read into locals once and each component runs on its state's values
    (``robust.z_score``, ``cusum.cusum_core``, ...), not on the arrays. Through the arrays, every parameter was
    re-read after each state store (the compiler cannot prove ``p`` and ``st`` apart), the guard's learning call
    took two atomic reference-count pairs per sample, and the rate stage stayed an out-of-line call with fifteen
    arguments. The arithmetic is the same, operation for operation: the results are bit-identical.
    ``signal_frame`` without its frame bookkeeping (which it skips when ``route`` has no rows).
    """
    no_i = np.empty(0, dtype=np.int64)
    return signal_frame(ts_ns, signal, value, quality, st, cfg, p, score_out, kind_out, z_last,
                        np.empty((0, R_WIDTH), dtype=np.int64), np.empty(0, dtype=np.float64), np.zeros(1, np.int64),
                        no_i, no_i, np.empty(0, dtype=np.float64), np.empty(0, dtype=np.uint8), no_i, no_i,
                        np.empty(0, dtype=np.float64), no_i, 0, np.zeros(OC_WIDTH, dtype=np.float64), 0)


@njit(cache=True, nogil=True)
def signal_frame(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, st: np.ndarray,
                 cfg: np.ndarray, p: np.ndarray, score_out: np.ndarray, kind_out: np.ndarray, z_last: np.ndarray,
                 route: np.ndarray, count_out: np.ndarray, frame_out: np.ndarray,
                 dev_good: np.ndarray, dev_any: np.ndarray, x_last: np.ndarray, seen: np.ndarray,
                 oc_stamp: np.ndarray, oc_hot: np.ndarray, oc_members: np.ndarray, hold_until: np.ndarray,
                 oc_frame: int, oc_p: np.ndarray, hold_ns: int) -> int:
    """``signal_chunk`` and the frame's small bookkeeping passes in one pass; returns samples scoring >= 0.5.

    Why: each of those passes read the frame's columns and a per-signal table again and cost a kernel call; here
    they ride on the signal pass (the stack's 15,000-signal frame: ~2-3 ns a sample each, and ``settle_gate``
    read a strided column of ``st`` -- a cache line per sample -- for the learned-sample count). Each does
    exactly what its own kernel does, in the same order, so the results are bit-identical (tested against the
    composition of those kernels). Per sample, with ``route[s]`` the signal's row (``R_*``; ``route`` with no
    rows: none of this, ``signal_chunk``):
    - ``count_out[s]`` = the level stage's learned-sample count after the sample (what ``alarms.settle_gate``
      reads as ``count``; contiguous per signal, valid for the signals in this frame);
    - ``devices.device_polls`` into ``dev_good``/``dev_any`` for device ``route[s, R_DEVICE]`` (-1 none);
    - ``pca.update_last``: ``x_last[s]`` (when ``route[s, R_LAST]``) and ``seen`` for the machine
      ``route[s, R_MEMBER]`` (-1 none);
    - ``opchange.machine_moves`` for the machine ``route[s, R_OC]`` (-1 none), counted as the frame goes: each
      signal once per frame (``oc_stamp`` == ``oc_frame``) with its level z at the end of the frame (a later
      sample of the same signal corrects its count), then after the frame every machine with enough moving
      members (``oc_p``: ``OC_Z_HOT``, ``OC_MIN_FRACTION``, ``OC_MIN_SIGNALS``; ``oc_members`` per machine) is
      held until the frame's latest timestamp + ``hold_ns`` (``hold_until``; ``opchange.mark_machines``), and
      ``oc_hot``, scratch, is left at 0 -- unless ``oc_p[OC_MARK]`` is 0: then the counts stay in ``oc_hot`` and
      the caller marks later (the at-rest stage reads ``hold_until`` as it was before the marking).
    ``frame_out[0]`` receives the frame's latest timestamp (``ts_ns.max()``; -2^62 for an empty frame).

    Two passes over the frame, each in arrival order: level, change, the level's learning and the bookkeeping,
    then stuck, rate, range and BAD on top of the first pass's score and kind. Why: the stages' state columns are
    disjoint and what the second pass reads from the first (the resolution floor, from the level's location
    before it learned) is kept per sample, so each signal's samples see exactly the state they saw in one pass
    (bit-identical), while each loop body is small enough for the CPU to overlap consecutive samples' division
    chains (one long body left them serial: 57 -> 52 ns/sample at 1 Hz, CPU time, bench/RESULTS.md).
    """
    l_alpha = p[O_LEVEL + robust.P_ALPHA]
    l_k = p[O_LEVEL + robust.P_HUBER_K]
    l_warm = p[O_LEVEL + robust.P_WARMUP]
    l_min = p[O_LEVEL + robust.P_MIN_SCALE]
    c_k = p[O_CUSUM + cusum.P_K]
    c_h = p[O_CUSUM + cusum.P_H]
    c_clip = p[O_CUSUM + cusum.P_Z_CLIP]
    c_cap = p[O_CUSUM + cusum.P_CAP]
    c_rho = p[O_CUSUM + cusum.P_RHO_ALPHA]
    s_beta = p[O_STUCK + stuck.P_BETA]
    s_tol = p[O_STUCK + stuck.P_TOL]
    s_dec = p[O_STUCK + stuck.P_DECADES]
    s_floor = p[O_STUCK + stuck.P_FLOOR]
    s_warm = p[O_STUCK + stuck.P_WARMUP]
    r_alpha = p[O_RATE + robust.P_ALPHA]
    r_k = p[O_RATE + robust.P_HUBER_K]
    r_warm = p[O_RATE + robust.P_WARMUP]
    r_min = p[O_RATE + robust.P_MIN_SCALE]
    r_gap = p[O_RATE + rate.P_GAP_FACTOR]
    lt = p[S_LEVEL_T]
    rt = p[S_RATE_T]
    margin = p[S_MARGIN]
    zc = p[S_ZCLIP]
    bad_ns = p[S_BAD_S] * 1e9
    guard = p[S_GUARD]
    guard_at = p[S_GUARD_AT]
    rate_span = p[S_RATE_SPAN]
    rel_res = p[S_REL_RES]
    gather = route.shape[0] > 0
    z_hot = oc_p[OC_Z_HOT]
    t_max = np.int64(-(2 ** 62))
    n = signal.shape[0]
    res_k = np.empty(n, dtype=np.float64)  # per sample: the resolution the rate stage floors at (pass 2)
    # Pass 1: level and change (their state columns), the level's learning, z_last and the frame bookkeeping.
    for k in range(n):
        x = value[k]
        s = signal[k]
        q = quality[k]
        usable = q != 2 and np.isfinite(x)
        z_before = 0.0
        if gather:
            t_k = ts_ns[k]
            t_max = max(t_max, t_k)
            dv = route[s, R_DEVICE]
            if dv >= 0:  # devices.device_polls
                if t_k > dev_any[dv]:
                    dev_any[dv] = t_k
                if usable and t_k > dev_good[dv]:
                    dev_good[dv] = t_k
            m = route[s, R_MEMBER]  # pca.update_last
            if m >= 0:
                seen[m] = 1
            if usable and route[s, R_LAST] != 0:
                x_last[s] = x
            z_before = z_last[s]
        if not usable:
            if gather:
                count_out[s] = st[s, B_LEVEL + robust.COUNT]
        elif cfg[s, C_FROZEN] != 0.0:
            z_last[s] = 0.0
            if gather:
                count_out[s] = st[s, B_LEVEL + robust.COUNT]
        else:
            mask = int(cfg[s, C_MASK])
            best = 0.0
            kind = 0
            hot = 0.0  # the larger of the level and change scores: guards the level's learning
            loc = st[s, B_LEVEL + robust.LOC]
            scale = st[s, B_LEVEL + robust.SCALE]
            count = st[s, B_LEVEL + robust.COUNT]
            z = robust.z_score(loc, scale, count, x, l_warm, l_min)
            # resolution: the register's step, and at least rel_res of the value (a float32 register's last bit)
            res = max(cfg[s, C_RES], rel_res * abs(loc))
            res_k[k] = res
            if res > 0.0:
                sc0 = max(scale, l_min)
                z = z * sc0 / res if sc0 < res else z
            if mask & EN_LEVEL:
                sc = _squash(z, lt)
                kind = K_LEVEL if sc > best else kind
                best = max(best, sc)
                hot = sc
            if mask & EN_CHANGE:
                sc, sp, sn, sm, sv = cusum.cusum_core(z, st[s, B_CUSUM + cusum.POS], st[s, B_CUSUM + cusum.NEG],
                                                      st[s, B_CUSUM + cusum.SMEAN], st[s, B_CUSUM + cusum.SVAR],
                                                      c_k, c_h, c_clip, c_cap, c_rho)
                st[s, B_CUSUM + cusum.POS] = sp
                st[s, B_CUSUM + cusum.NEG] = sn
                st[s, B_CUSUM + cusum.SMEAN] = sm
                st[s, B_CUSUM + cusum.SVAR] = sv
                kind = K_CHANGE if sc > best else kind
                best = max(best, sc)
                hot = max(hot, sc)
            if q == 0:
                a_own = cfg[s, C_ALPHA]  # a per_part signal's own (slower) level rate; 0: the stack's
                loc, scale, count = robust.learn_step(loc, scale, count, x, a_own if a_own > 0.0 else l_alpha, l_k,
                                                      l_warm, l_min, guard if hot >= guard_at else 1.0)
                st[s, B_LEVEL + robust.LOC] = loc
                st[s, B_LEVEL + robust.SCALE] = scale
                st[s, B_LEVEL + robust.COUNT] = count
            if gather:
                count_out[s] = count
            if np.isfinite(z):
                z_last[s] = zc if z > zc else (-zc if z < -zc else z)
            else:
                z_last[s] = 0.0
            score_out[k] = best
            kind_out[k] = kind
        if gather and q != 2:  # opchange.machine_moves' count, with the z as it stands after this sample
            m = route[s, R_OC]
            if m >= 0:
                hot_now = 1 if abs(z_last[s]) >= z_hot else 0
                if oc_stamp[s] != oc_frame:
                    oc_stamp[s] = oc_frame
                    oc_hot[m] += hot_now
                else:
                    oc_hot[m] += hot_now - (1 if abs(z_before) >= z_hot else 0)
    # Pass 2: stuck, rate and range (their own state columns) on top of pass 1's score, then data quality (BAD).
    n_high = 0
    for k in range(n):
        x = value[k]
        s = signal[k]
        q = quality[k]
        if q == 2 or not np.isfinite(x):
            last = st[s, B_RATE + rate.LAST_TS]
            d = float(ts_ns[k]) - last
            if bad_ns > 0.0 and np.isfinite(last) and d > 0.0:
                sc = d * d / (d * d + bad_ns * bad_ns)
                score_out[k] = sc
                kind_out[k] = K_BAD
                if sc >= 0.5:
                    n_high += 1
            else:
                score_out[k] = 0.0
                kind_out[k] = 0
        elif cfg[s, C_FROZEN] != 0.0:
            t = float(ts_ns[k])
            if not t < st[s, B_RATE + rate.LAST_TS]:
                st[s, B_RATE + rate.LAST_V] = x
                st[s, B_RATE + rate.LAST_TS] = t
            score_out[k] = 0.0
            kind_out[k] = 0
        else:
            t = float(ts_ns[k])
            learn = q == 0
            mask = int(cfg[s, C_MASK])
            best = score_out[k]
            kind = kind_out[k]
            if mask & EN_STUCK:
                sc, last, run, p_rep, s_seen = stuck.stuck_core(
                    x, learn, st[s, B_STUCK + stuck.LAST], st[s, B_STUCK + stuck.RUN], st[s, B_STUCK + stuck.P_REP],
                    st[s, B_STUCK + stuck.SEEN], s_beta, s_tol, s_dec, s_floor, s_warm)
                st[s, B_STUCK + stuck.LAST] = last
                st[s, B_STUCK + stuck.RUN] = run
                st[s, B_STUCK + stuck.P_REP] = p_rep
                st[s, B_STUCK + stuck.SEEN] = s_seen
                kind = K_STUCK if sc > best else kind
                best = max(best, sc)
            if mask & EN_RATE:
                # floor read before the slope is learned (score before learn)
                r_scale = st[s, B_RATE + rate.STATS + robust.SCALE]
                per = st[s, B_RATE + rate.PERIOD]
                sc0 = max(r_scale, r_min)
                zr, last_v, last_ts, per_new, r_loc, r_scale, r_count = rate.rate_core(
                    x, t, learn, st[s, B_RATE + rate.LAST_V], st[s, B_RATE + rate.LAST_TS], per,
                    st[s, B_RATE + rate.STATS + robust.LOC], r_scale, st[s, B_RATE + rate.STATS + robust.COUNT],
                    r_alpha, r_k, r_warm, r_min, r_gap)
                st[s, B_RATE + rate.LAST_V] = last_v
                st[s, B_RATE + rate.LAST_TS] = last_ts
                st[s, B_RATE + rate.PERIOD] = per_new
                st[s, B_RATE + rate.STATS + robust.LOC] = r_loc
                st[s, B_RATE + rate.STATS + robust.SCALE] = r_scale
                st[s, B_RATE + rate.STATS + robust.COUNT] = r_count
                step = res_k[k]
                span = cfg[s, C_HIGH] - cfg[s, C_LOW]
                if span > 0.0:  # False for NaN limits
                    step = max(step, rate_span * span)
                if step > 0.0 and per > 0.0 and sc0 * per < step:
                    zr = zr * sc0 * per / step
                sc = _squash(zr, rt)
                kind = K_RATE if sc > best else kind
                best = max(best, sc)
            elif not t < st[s, B_RATE + rate.LAST_TS]:
                # the latest usable sample's time, which the BAD score reads, is kept for every signal
                st[s, B_RATE + rate.LAST_V] = x
                st[s, B_RATE + rate.LAST_TS] = t
            if mask & EN_RANGE:
                sc = limits.limit_score(x, cfg[s, C_LOW], cfg[s, C_HIGH], margin)
                kind = K_RANGE if sc > best else kind
                best = max(best, sc)
            score_out[k] = best
            kind_out[k] = kind
            if best >= 0.5:
                n_high += 1
    frame_out[0] = t_max
    if gather and oc_p[OC_MARK] != 0.0:
        opchange.mark_machines(oc_hot, oc_members, t_max, oc_p[OC_MIN_FRACTION], oc_p[OC_MIN_SIGNALS], hold_ns,
                               hold_until)
    return n_high


@njit(cache=True, nogil=True)
def silent_scan(st: np.ndarray, since_ns: float, now_ns: float, silent_ns: float, rows_out: np.ndarray,
                score_out: np.ndarray, bound_out: np.ndarray) -> int:
    """Signals without a usable sample for more than ``silent_ns`` at ``now_ns`` (the SILENT judgement).

    ``d = now_ns - max(last, since_ns)`` with ``last`` the rate stage's last timestamp (NaN, never seen: not
    silent); a row with ``d > silent_ns`` goes to ``rows_out`` with score ``d^2 / (d^2 + silent_ns^2)``; returns
    how many. ``bound_out[0]`` receives the earliest ``max(last, since_ns)`` of every other row (``since_ns`` if
    any was never seen: a first sample, even a back-filled old one, is no earlier than that), so the caller
    knows no row can turn silent before ``now - bound_out[0] > silent_ns`` (last timestamps only grow) and
    skips the scan until then. Why a kernel: the numpy version took five passes over a strided column.
    """
    n = 0
    bound = math.inf
    for s in range(st.shape[0]):
        last = st[s, B_RATE + rate.LAST_TS]
        if not np.isfinite(last):
            bound = min(bound, since_ns)
            continue
        m = max(last, since_ns)
        d = now_ns - m
        if d > silent_ns:
            rows_out[n] = s
            score_out[n] = d * d / (d * d + silent_ns * silent_ns)
            n += 1
        else:
            bound = min(bound, m)
    bound_out[0] = bound
    return n
