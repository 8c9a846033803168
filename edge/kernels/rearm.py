"""Signal alarms with a re-arm memory: one onset per excursion, not one per burst of it.

Why: ``alarms.alarm_chunk`` closes an alarm after ``off_count`` quiet samples and opens a new one at the next
sample over ``on_threshold``. A signal whose disturbance comes in bursts -- a load that surges again minutes
after it settled, a bursty count -- therefore announces the same excursion again and again. Measured on NAB
v1.1 with the shipped defaults (``bench/nab_eval.py``, issue 15): 2,030 alarm onsets outside the labelled
windows, most of them such re-openings of a signal that had just closed, against 101 windows found. ISA-18.2
calls these repeating alarms; the operator has already seen the excursion.

Rule: for ``rearm_n`` of the entity's own samples after its alarm closed, a new opening is announced only if
its score exceeds the peak of the episode that closed (it is worse than what the operator saw); other
samples at or below that peak are treated as below ``on_threshold`` (no event, no state), so the window is
measured from the last announced episode's close and cannot be stretched by the repeats it suppresses.
Kinds in ``exempt`` (a bit per kind; the stack sets RANGE, BAD, SILENT, DEVICE) are never suppressed: a
value outside the configured range (or beyond any seen, the likelihood stage's novelty) and a dead sensor
are facts each time, not a statistic's repeat -- and a range score saturates at 1, which nothing exceeds.
(A score of exactly 1 is no such fact: a level z on a signal whose learned scale is ~0 rounds to 1; measured
on NAB, exempting every score of 1 put back 35 repeats on one file, ``ec2_disk_write_bytes_1ef3de``.) The
window counts samples, like ``on_count``/``off_count`` and the baselines' learning rates: after
``rearm_n`` samples the level baseline (``alpha`` 0.01 per sample) has relaxed from the episode several
times over, and a new excursion is news again.
``rearm_n`` 0 is exactly ``alarms.alarm_chunk``.

State: the alarm's own ``fst``/``its`` (``alarms.init_state``) plus ``rst`` float64 (n, ``R_WIDTH``) =
samples since the entity's last close (inf: never closed), peak of that closed episode (``init_state``).
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit
from edge.kernels import alarms

R_SINCE = 0
R_PEAK = 1
R_WIDTH = 2


def exempt_mask(kinds: tuple[int, ...]) -> int:
    """The ``exempt`` argument: one bit per kind never held back."""
    m = 0
    for k in kinds:
        m |= 1 << int(k)
    return m


def init_state(n: int) -> np.ndarray:
    r = np.zeros((n, R_WIDTH), dtype=np.float64)
    r[:, R_SINCE] = np.inf
    return r


@njit(cache=True, nogil=True)
def alarm_chunk_rearm(ts_ns: np.ndarray, entity: np.ndarray, score: np.ndarray, kind: np.ndarray, n_in: int,
                      fst: np.ndarray, its: np.ndarray, rst: np.ndarray, p: np.ndarray, rearm_n: float, exempt: int,
                      ev_entity: np.ndarray, ev_phase: np.ndarray, ev_ts_start: np.ndarray,
                      ev_ts_end: np.ndarray, ev_peak: np.ndarray, ev_kind: np.ndarray) -> int:
    """``alarms.alarm_chunk`` with the re-arm rule; returns events produced (may exceed capacity)."""
    cap = ev_entity.shape[0]
    j = 0
    on = p[alarms.P_ON]
    off = p[alarms.P_OFF]
    on_count = p[alarms.P_ON_COUNT]
    off_count = p[alarms.P_OFF_COUNT]
    for k in range(n_in):
        j = rearm_step(j, cap, entity[k], score[k], ts_ns[k], kind[k], fst, its, rst, on, off, on_count, off_count,
                       rearm_n, exempt, ev_entity, ev_phase, ev_ts_start, ev_ts_end, ev_peak, ev_kind)
    return j


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def rearm_step(j: int, cap: int, e: int, sc: float, t: int, kd: int, fst: np.ndarray, its: np.ndarray,
               rst: np.ndarray, on: float, off: float, on_count: float, off_count: float, rearm_n: float, exempt: int,
               ev_entity: np.ndarray, ev_phase: np.ndarray, ev_ts_start: np.ndarray, ev_ts_end: np.ndarray,
               ev_peak: np.ndarray, ev_kind: np.ndarray) -> int:
    """One sample (entity ``e``, score ``sc`` at ``t``, kind ``kd``) through the re-arm alarm; returns events so far.

    The loop body of ``alarm_chunk_rearm``, shared with ``signal_alarms.gate_alarm_frame``.
    """
    rst[e, R_SINCE] += 1.0
    if fst[e, alarms.ACTIVE] == 0.0:
        repeat = rst[e, R_SINCE] <= rearm_n and sc <= rst[e, R_PEAK] and (exempt >> kd) & 1 == 0
        if sc >= on and not repeat:
            if fst[e, alarms.ABOVE] == 0.0:
                its[e, alarms.T_START] = t
                fst[e, alarms.PEAK] = sc
                fst[e, alarms.PEAK_KIND] = kd
            elif sc > fst[e, alarms.PEAK]:
                fst[e, alarms.PEAK] = sc
                fst[e, alarms.PEAK_KIND] = kd
            fst[e, alarms.ABOVE] += 1.0
            if fst[e, alarms.ABOVE] >= on_count:
                fst[e, alarms.ACTIVE] = 1.0
                fst[e, alarms.QUIET] = 0.0
                j = alarms._emit(j, cap, e, alarms.OPEN, its[e, alarms.T_START], -1, fst[e, alarms.PEAK],
                                 int(fst[e, alarms.PEAK_KIND]), ev_entity, ev_phase, ev_ts_start, ev_ts_end,
                                 ev_peak, ev_kind)
        else:
            fst[e, alarms.ABOVE] = 0.0
    else:
        if sc > fst[e, alarms.PEAK]:
            fst[e, alarms.PEAK] = sc
            fst[e, alarms.PEAK_KIND] = kd
        if sc < off:
            if fst[e, alarms.QUIET] == 0.0:
                its[e, alarms.T_QUIET] = t
            fst[e, alarms.QUIET] += 1.0
            if fst[e, alarms.QUIET] >= off_count:
                j = alarms._emit(j, cap, e, alarms.CLOSE, its[e, alarms.T_START], its[e, alarms.T_QUIET],
                                 fst[e, alarms.PEAK], int(fst[e, alarms.PEAK_KIND]), ev_entity, ev_phase,
                                 ev_ts_start, ev_ts_end, ev_peak, ev_kind)
                rst[e, R_SINCE] = 0.0
                rst[e, R_PEAK] = fst[e, alarms.PEAK]
                fst[e, alarms.ACTIVE] = 0.0
                fst[e, alarms.ABOVE] = 0.0
                fst[e, alarms.QUIET] = 0.0
                fst[e, alarms.PEAK] = 0.0
        else:
            fst[e, alarms.QUIET] = 0.0
    return j
