"""Alarms: hysteresis and debounce turn per-sample scores into start and end events.

Why both: hysteresis (open at ``on_threshold``, close only below the lower ``off_threshold``) stops a
score hovering at the threshold from flapping; debounce (``on_count`` consecutive samples to open,
``off_count`` consecutive quiet samples to close) stops single noisy samples from opening alarms and
short dips from splitting one episode into many. A noisy signal therefore raises one event.

An entity (a signal, or a machine) emits an OPEN event when its alarm opens -- so the cloud hears
about it at once -- and a CLOSE event carrying the same start, the end, the peak score and the kind
at the peak. ``ts_end`` is the timestamp of the first sample of the quiet run that closed the alarm
(-1 on OPEN events). Events go into caller-owned columns; when they are full, further events are
counted as dropped and the state still advances, so a later close is never mismatched.

State: ``fst`` float64 (n, 5) = active, consecutive above, consecutive quiet, peak, kind at peak;
``its`` int64 (n, 2) = start timestamp, start of the current quiet run.
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit

ACTIVE = 0
ABOVE = 1
QUIET = 2
PEAK = 3
PEAK_KIND = 4
F_WIDTH = 5
T_START = 0
T_QUIET = 1
T_WIDTH = 2

P_ON = 0
P_OFF = 1
P_ON_COUNT = 2
P_OFF_COUNT = 3
N_PARAMS = 4

OPEN = 1
CLOSE = 2
HELD_KINDS = (1, 2, 4)  # Kind.LEVEL, CHANGE, RATE: what an operating change explains (see settle_gate)


def make_params(on_threshold: float = 0.5, off_threshold: float = 0.3, on_count: int = 1,
                off_count: int = 10) -> np.ndarray:
    if not 0.0 <= off_threshold <= on_threshold <= 1.0 or on_count < 1 or off_count < 1:
        raise ValueError("need 0 <= off_threshold <= on_threshold <= 1 and counts >= 1")
    return np.array([on_threshold, off_threshold, float(on_count), float(off_count)], dtype=np.float64)


def init_state(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, F_WIDTH), dtype=np.float64), np.zeros((n, T_WIDTH), dtype=np.int64)


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _emit(j: int, cap: int, e: int, phase: int, ts_start: int, ts_end: int, peak: float, kind: int,
          ev_entity: np.ndarray, ev_phase: np.ndarray, ev_ts_start: np.ndarray, ev_ts_end: np.ndarray,
          ev_peak: np.ndarray, ev_kind: np.ndarray) -> int:
    if j < cap:
        ev_entity[j] = e
        ev_phase[j] = phase
        ev_ts_start[j] = ts_start
        ev_ts_end[j] = ts_end
        ev_peak[j] = peak
        ev_kind[j] = kind
    return j + 1


@njit(cache=True, nogil=True)
def alarm_chunk(ts_ns: np.ndarray, entity: np.ndarray, score: np.ndarray, kind: np.ndarray, n_in: int,
                fst: np.ndarray, its: np.ndarray, p: np.ndarray, ev_entity: np.ndarray, ev_phase: np.ndarray,
                ev_ts_start: np.ndarray, ev_ts_end: np.ndarray, ev_peak: np.ndarray, ev_kind: np.ndarray) -> int:
    """Feed the first ``n_in`` (ts, entity, score, kind) in order; returns events produced (may exceed capacity)."""
    cap = ev_entity.shape[0]
    j = 0
    on = p[P_ON]
    off = p[P_OFF]
    on_count = p[P_ON_COUNT]
    off_count = p[P_OFF_COUNT]
    for k in range(n_in):
        e = entity[k]
        sc = score[k]
        t = ts_ns[k]
        if fst[e, ACTIVE] == 0.0:
            if sc >= on:
                if fst[e, ABOVE] == 0.0:
                    its[e, T_START] = t
                    fst[e, PEAK] = sc
                    fst[e, PEAK_KIND] = kind[k]
                elif sc > fst[e, PEAK]:
                    fst[e, PEAK] = sc
                    fst[e, PEAK_KIND] = kind[k]
                fst[e, ABOVE] += 1.0
                if fst[e, ABOVE] >= on_count:
                    fst[e, ACTIVE] = 1.0
                    fst[e, QUIET] = 0.0
                    j = _emit(j, cap, e, OPEN, its[e, T_START], -1, fst[e, PEAK], int(fst[e, PEAK_KIND]),
                              ev_entity, ev_phase, ev_ts_start, ev_ts_end, ev_peak, ev_kind)
            else:
                fst[e, ABOVE] = 0.0
        else:
            if sc > fst[e, PEAK]:
                fst[e, PEAK] = sc
                fst[e, PEAK_KIND] = kind[k]
            if sc < off:
                if fst[e, QUIET] == 0.0:
                    its[e, T_QUIET] = t
                fst[e, QUIET] += 1.0
                if fst[e, QUIET] >= off_count:
                    j = _emit(j, cap, e, CLOSE, its[e, T_START], its[e, T_QUIET], fst[e, PEAK],
                              int(fst[e, PEAK_KIND]), ev_entity, ev_phase, ev_ts_start, ev_ts_end, ev_peak, ev_kind)
                    fst[e, ACTIVE] = 0.0
                    fst[e, ABOVE] = 0.0
                    fst[e, QUIET] = 0.0
                    fst[e, PEAK] = 0.0
            else:
                fst[e, QUIET] = 0.0
    return j


@njit(cache=True, nogil=True)
def settle_gate(ts_ns: np.ndarray, entity: np.ndarray, score: np.ndarray, kind: np.ndarray, quality: np.ndarray,
                count: np.ndarray, first_ns: np.ndarray, settle_n: float, settle_ns: float, dq_kind_min: int,
                machine_of: np.ndarray, hold_until: np.ndarray, hold_all_until: int, out: np.ndarray) -> int:
    """Cold start by time and samples, and operating changes: ``out`` is ``score``, 0 while the entity settles.

    An entity has settled once it has learned ``settle_n`` samples (``count[e]``, its learned-sample count)
    *and* ``settle_ns`` have passed since its first usable sample (``first_ns[e]``, -1 = none yet; set here
    by the first sample whose quality is not bad). Why both: a count alone is 30 s at 10 Hz and 5 minutes at
    1 Hz, while what a baseline must have seen is the plant's duty cycle, which is a duration. Kinds from
    ``dq_kind_min`` up (data quality: BAD, SILENT) are never held back: a dead sensor is a fact, not a
    young estimate. Also held: process kinds (``HELD_KINDS``: level, change, rate) of an entity whose machine
    (``machine_of[e]``, -1 none) is in an operating change until ``hold_until[machine]`` (``opchange``), and
    of every entity up to ``hold_all_until`` (a gateway resuming from a checkpoint: its baselines are as old as
    its outage; -1 none). Returns how many samples were held back.
    """
    held = 0
    for k in range(entity.shape[0]):
        e = entity[k]
        t = ts_ns[k]
        f = first_ns[e]
        if f < 0 and quality[k] != 2:
            first_ns[e] = t
            f = t
        sc = score[k]
        m = machine_of[e]
        h = gate_held(sc, kind[k], t, f, count[e], m, hold_until[m if m >= 0 else 0], settle_n, settle_ns,
                      dq_kind_min, hold_all_until)
        out[k] = 0.0 if h else sc
        held += h
    return held


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def gate_held(sc: float, kd: int, t: int, f: int, count: float, m: int, hm: int, settle_n: float, settle_ns: float,
              dq_kind_min: int, hold_all_until: int) -> bool:
    """``settle_gate``'s judgement of one sample: held back (True) or through (the entity's first usable sample
    ``f``, its learned count ``count``, its machine ``m`` (-1 none) and that machine's hold ``hm``)."""
    # Every condition evaluated, combined with & and |: which kind a sample scored is a coin flip per sample,
    # and the short-circuit form's branches on it were mispredicted often enough to cost more than the loads.
    process = (kd == 1) | (kd == 2) | (kd == 4)
    young = (f < 0) | (count < settle_n) | (float(t - f) < settle_ns)
    hold = process & (((m >= 0) & (t <= hm)) | (t <= hold_all_until))
    return (sc > 0.0) & (kd < dq_kind_min) & (young | hold)
