"""Pressure-decay test cycles of leak-test stations: segmentation and the decay fit, one pass per frame.

Samples arrive in order (only the leak-test agent's signals). ``role[signal]`` says what a sample is
and ``row[signal]`` which station it belongs to; a NaN/inf value or BAD quality (2) changes nothing
and is counted in ``G_BAD``. Temperatures and the station's phase timers are remembered per station;
each pressure sample moves the station's cycle state machine:

- ``IDLE`` -> ``FILL`` when the pressure reaches ``p_on_bar`` while rising faster than ``rise_bar_s``
  (a station found under pressure is mid-cycle and waits for the next one).
- ``FILL`` -> ``STAB`` when the rise slows below ``rise_bar_s`` or half the fastest rise of this
  fill; the end of the fill is placed where that fastest rise meets the plateau, and its start that
  rise back from vented (0 bar gauge), so the fill time does not depend on where samples fall.
- ``STAB`` -> ``MEAS`` once the station's stabilisation time (its ``stabilise_time`` signal, else
  ``stab_s_default``) has passed since the end of the fill, as the tester's own timer does.
- ``MEAS``: samples within the station's measure time (``measure_time`` signal, else
  ``meas_s_default``) go into a least-squares line p(t); the part-minus-chamber temperature and the
  pressure are averaged over them. A drop faster than ``vent_bar_s`` starts ``VENT``.
- ``VENT`` ends (and the cycle's result row is written) when the pressure is below ``p_on_bar / 2``
  or rises again (the next part's fill, which then starts at once).
- A gap longer than ``max_gap_s`` inside a cycle, or a vent during stabilisation, abandons the cycle
  (``LOST`` until it vents; counted in ``G_ABORTED``): a result from half a cycle would be a lie.

Temperature plausibility (a quality engineer does not compensate with a faulty thermometer): each
temperature sample is judged before it is used, and a cycle whose stabilise or measure phase saw a
doubtful temperature carries flags (``O_TEMP_FLAGS``; the agent then neither judges nor tracks it):

- ``TF_BAD`` (1): a BAD, NaN/inf or out-of-range (``t_min_c``..``t_max_c``) temperature. It makes the
  temperature unknown (not the last good value) and is counted in ``G_TEMP_BAD``.
- ``TF_JUMP`` (2): a sensor jumped by more than ``jump_k`` from one sample to the next (a chamber at any
  time, a part while it sits in the fixture: stabilise and measure of a cycle whose fill was seen
  rising over at least three pressure samples; a new part may differ from the last, and a station
  switched on mid-cycle shows a "fill" of one sample and then the next part's fill while it seems
  to measure). A fixture or a part in it cannot change temperature that fast: the sensor is *suspect* from
  then on (counted in ``G_SUSPECT``), and every cycle is flagged until it jumps back (a jump undoing
  the first by at least half, or a reading back within ``jump_k / 2`` of its level before the jump:
  the chamber at any time, allowing for ``ramp_k_s`` of true change; the part within the same
  cycle) or, after ``suspect_s``, its new level is accepted: the result row of the first cycle after
  that carries ``O_REBASE`` 1 (the agent relearns the station's baseline, in which a lasting offset
  then cancels). A jump within ``RAMP_MEMORY_S`` of a ramp (below) ends the ramp, not a new suspicion.
- ``TF_RAMP`` (4): the sensor's least-squares slope over the stabilise and measure phases exceeds
  ``ramp_k_s`` (a drifting sensor: faster than the fixture and part can change).
- ``TF_STUCK`` (8): at least ``stuck_n`` (> 0) samples over those phases, all identical: a live
  sensor's noise moves its last digit (0 turns the check off, for coarse sensors).
- ``TF_SUSPECT`` (16): a sensor was suspect during the cycle.

A result row (``out[k, :]``): station row, end time (s), fill, stabilise, measure and vent
durations (s), the raw decay ``-slope * 1e5`` (Pa/s; positive = pressure falling), mean pressure
(bar), mean part-minus-chamber temperature (K, NaN if unknown), measure samples, measure start
(s), and the standard deviation of the pressure about the fitted line (Pa; a spike, a burst of noise or
a step inside the measure phase shows there, so the agent can refuse a fit that is not a decay).
Temperature compensation and pass/fail are the agent's (per cycle, not per sample). At most
``out.shape[0]`` rows per call; further finished cycles are counted in ``G_OVERFLOW`` and lost.
"""

from __future__ import annotations

import math

import numpy as np

from edge.jit import njit

R_PRESSURE, R_PART_T, R_CHAMBER_T, R_STAB_S, R_MEAS_S = 1, 2, 3, 4, 5
IDLE, FILL, STAB, MEAS, VENT, LOST = 0, 1, 2, 3, 4, 5
# st[station, :]
(S_PHASE, S_T_LAST, S_P_LAST, S_RISE, S_T_FILL0, S_T_FILL1, S_T_MEAS0, S_T_VENT0, S_N, S_ST, S_SP, S_STT, S_STP,
 S_SDT, S_NDT, S_PART, S_CHAMBER, S_STAB_S, S_MEAS_S, S_P0, S_SPP) = range(21)
# per temperature sensor j (0 part, 1 chamber): column S_x + j
S_TL = 21  # last good value
S_TT = 23  # its time (s)
S_SUS = 25  # suspect (1) since a jump
S_OFF = 27  # the jump that made it suspect (K)
S_REF = 29  # its value before that jump
S_SUST = 31  # when it became suspect (s)
S_RAMPT = 33  # when it was last seen ramping (s)
S_QN, S_QT, S_QV, S_QTT, S_QTV, S_QVV, S_Q0 = 35, 37, 39, 41, 43, 45, 47  # fit sums over stabilise + measure
S_CLRT = 52  # when its last suspicion was cleared by a return (s)
S_TFLAG, S_REBASE, S_FILL_N, N_ST = 49, 50, 51, 54  # S_FILL_N: pressure samples seen rising in the fill
TF_BAD, TF_JUMP, TF_RAMP, TF_STUCK, TF_SUSPECT = 1, 2, 4, 8, 16
RAMP_MEMORY_S = 60.0
RETURN_LEVEL_S = 120.0
# out[k, :]
(O_ROW, O_END_S, O_FILL_S, O_STAB_S, O_MEAS_S, O_VENT_S, O_DECAY_PA_S, O_P_BAR, O_DT_K, O_N, O_T_MEAS0,
 O_RESID_PA, O_TEMP_FLAGS, O_REBASE, N_OUT) = range(15)
# params[:]
(PA_P_ON, PA_RISE, PA_VENT, PA_MAX_GAP_S, PA_STAB_S, PA_MEAS_S, PA_T_MIN, PA_T_MAX, PA_JUMP_K, PA_RAMP_K_S,
 PA_SUSPECT_S, PA_STUCK_N, N_PARAMS) = range(13)
# counters[:]
G_BAD, G_ABORTED, G_OVERFLOW, G_TEMP_BAD, G_SUSPECT, N_COUNTERS = range(6)


def new_state(stations: int) -> np.ndarray:
    st = np.zeros((stations, N_ST), dtype=np.float64)
    st[:, S_T_LAST] = np.nan
    st[:, S_PART] = np.nan
    st[:, S_CHAMBER] = np.nan
    st[:, S_STAB_S] = np.nan
    st[:, S_MEAS_S] = np.nan
    st[:, S_TL:S_TL + 2] = np.nan
    st[:, S_TT:S_TT + 2] = np.nan
    st[:, S_RAMPT:S_RAMPT + 2] = -np.inf
    st[:, S_CLRT:S_CLRT + 2] = -np.inf
    return st


@njit(cache=True, nogil=True)
def _slope(st: np.ndarray, k: int, j: int) -> float:
    """Least-squares slope (K/s) of sensor j over the cycle's stabilise and measure phases so far (NaN if < 5)."""
    n = st[k, S_QN + j]
    den = n * st[k, S_QTT + j] - st[k, S_QT + j] * st[k, S_QT + j]
    if n < 5.0 or den <= 0.0:
        return np.nan
    return (n * st[k, S_QTV + j] - st[k, S_QT + j] * st[k, S_QV + j]) / den


@njit(cache=True, nogil=True)
def _temperature(st: np.ndarray, k: int, j: int, t: float, v: float, good: bool, params: np.ndarray,
                 counters: np.ndarray) -> None:
    """Judge one temperature sample of sensor j (0 part, 1 chamber) of station k; keep it if plausible."""
    phase = int(st[k, S_PHASE])
    in_cycle = phase == STAB or phase == MEAS
    watched = st[k, S_FILL_N] >= 3.0  # the part's fill was seen: it is the part the cycle measures
    col = S_PART if j == 0 else S_CHAMBER
    if not good or v < params[PA_T_MIN] or v > params[PA_T_MAX]:
        counters[G_TEMP_BAD] += 1.0
        st[k, col] = np.nan  # unknown, not the last good value
        if in_cycle:
            st[k, S_TFLAG] = float(int(st[k, S_TFLAG]) | TF_BAD)
        return
    jump_k = params[PA_JUMP_K]
    last = st[k, S_TL + j]
    if last == last and t - st[k, S_TT + j] <= params[PA_MAX_GAP_S] and (j == 1 or (in_cycle and watched)):
        d = v - last
        if st[k, S_SUS + j] > 0.0:
            off = st[k, S_OFF + j]
            soon = t - st[k, S_SUST + j] <= RETURN_LEVEL_S and (j == 1 or st[k, S_SUST + j] >= st[k, S_T_FILL1])
            same = j == 1 or st[k, S_SUST + j] >= st[k, S_T_FILL1]  # the reading before the jump is comparable
            back = abs(v - st[k, S_REF + j])
            undo = abs(d + off) <= 0.5 * abs(off) and (
                not same or back <= 0.5 * abs(off) + params[PA_RAMP_K_S] * (t - st[k, S_SUST + j]))
            if undo or (soon and back <= 0.5 * jump_k):
                st[k, S_SUS + j] = 0.0
                st[k, S_CLRT + j] = t
                if in_cycle:
                    st[k, S_TFLAG] = float(int(st[k, S_TFLAG]) | TF_JUMP)
        elif abs(d) > jump_k:
            if in_cycle:
                st[k, S_TFLAG] = float(int(st[k, S_TFLAG]) | TF_JUMP)
            sl = _slope(st, k, j)
            ramping = (sl == sl and abs(sl) > params[PA_RAMP_K_S]) or t - st[k, S_RAMPT + j] <= RAMP_MEMORY_S
            if not ramping:  # after a ramp, a jump is the sensor coming back
                st[k, S_SUS + j] = 1.0
                st[k, S_OFF + j] = d
                if t - st[k, S_CLRT + j] > RETURN_LEVEL_S:  # else: one burst, judged against the level before it
                    st[k, S_REF + j] = last
                st[k, S_SUST + j] = t
                counters[G_SUSPECT] += 1.0
    if st[k, S_SUS + j] > 0.0 and t - st[k, S_SUST + j] > params[PA_SUSPECT_S]:
        st[k, S_SUS + j] = 0.0  # its new level is accepted: the station relearns its baseline
        st[k, S_REBASE] = 1.0
    st[k, S_TL + j] = v
    st[k, S_TT + j] = t
    st[k, col] = v
    if in_cycle:
        if st[k, S_QN + j] == 0.0:
            st[k, S_Q0 + j] = v
        x = t - st[k, S_T_FILL1]
        y = v - st[k, S_Q0 + j]
        st[k, S_QN + j] += 1.0
        st[k, S_QT + j] += x
        st[k, S_QV + j] += y
        st[k, S_QTT + j] += x * x
        st[k, S_QTV + j] += x * y
        st[k, S_QVV + j] += y * y
        if st[k, S_SUS + j] > 0.0:
            st[k, S_TFLAG] = float(int(st[k, S_TFLAG]) | TF_SUSPECT)


@njit(cache=True, nogil=True)
def _cycle_temp_flags(st: np.ndarray, k: int, t: float, params: np.ndarray) -> int:
    """The flags of the cycle ending now (ramp and stuck judged over its stabilise and measure phases)."""
    flags = int(st[k, S_TFLAG])
    for j in range(2):
        if st[k, S_SUS + j] > 0.0:
            flags |= TF_SUSPECT
        sl = _slope(st, k, j)
        if sl == sl and abs(sl) > params[PA_RAMP_K_S]:
            flags |= TF_RAMP
            st[k, S_RAMPT + j] = t
        stuck_n = params[PA_STUCK_N]
        if stuck_n > 0.0 and st[k, S_QN + j] >= stuck_n and st[k, S_QVV + j] == 0.0:
            flags |= TF_STUCK
    return flags


@njit(cache=True, nogil=True)
def _start_temp_window(st: np.ndarray, k: int) -> None:
    """Stabilisation begins: the temperature fit sums start over (the cycle's flags started at its fill)."""
    for j in range(2):
        st[k, S_QN + j] = 0.0
        st[k, S_QT + j] = 0.0
        st[k, S_QV + j] = 0.0
        st[k, S_QTT + j] = 0.0
        st[k, S_QTV + j] = 0.0
        st[k, S_QVV + j] = 0.0


@njit(cache=True, nogil=True)
def leak_cycles(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, role: np.ndarray,
                row: np.ndarray, params: np.ndarray, st: np.ndarray, counters: np.ndarray, out: np.ndarray) -> int:
    """Advance every station's cycle over the samples; returns the number of result rows written."""
    n_out = 0
    p_on = params[PA_P_ON]
    rise = params[PA_RISE]
    vent = params[PA_VENT]
    max_gap = params[PA_MAX_GAP_S]
    for i in range(ts_ns.shape[0]):
        sig = signal[i]
        r = role[sig]
        if r == 0:
            continue
        v = value[i]
        k = row[sig]
        if r == R_PART_T or r == R_CHAMBER_T:
            _temperature(st, k, r - R_PART_T, ts_ns[i] / 1e9, v, quality[i] != 2 and math.isfinite(v), params,
                         counters)
            continue
        if quality[i] == 2 or not math.isfinite(v):
            counters[G_BAD] += 1.0
            continue
        if r == R_STAB_S:
            st[k, S_STAB_S] = v
            continue
        if r == R_MEAS_S:
            st[k, S_MEAS_S] = v
            continue
        t = ts_ns[i] / 1e9
        t_last = st[k, S_T_LAST]
        p_last = st[k, S_P_LAST]
        gap = t - t_last if t_last == t_last else 0.0
        if gap < 0.0:  # out of order: not a pressure trace
            counters[G_BAD] += 1.0
            continue
        phase = int(st[k, S_PHASE])
        rate = (v - p_last) / gap if gap > 0.0 else 0.0
        if phase != IDLE and phase != LOST and gap > max_gap:
            phase = LOST
            counters[G_ABORTED] += 1.0
        if phase == IDLE:
            if v >= p_on and rate > rise and gap <= max_gap:  # a station found pressurised is mid-cycle: wait
                phase = FILL
                st[k, S_RISE] = rate
                st[k, S_TFLAG] = 0.0
                st[k, S_FILL_N] = 1.0
        elif phase == FILL:
            r_fill = st[k, S_RISE]
            if rate < rise or rate < 0.5 * r_fill:
                phase = STAB
                t1 = min(max(t_last + max(v - p_last, 0.0) / r_fill, t_last), t)
                st[k, S_T_FILL1] = t1
                st[k, S_T_FILL0] = t1 - v / r_fill
                _start_temp_window(st, k)
            else:
                st[k, S_RISE] = max(r_fill, rate)
                st[k, S_FILL_N] += 1.0
        elif phase == STAB:
            stab = st[k, S_STAB_S]
            if stab != stab:
                stab = params[PA_STAB_S]
            if rate < -vent:
                phase = LOST
                counters[G_ABORTED] += 1.0
            elif t >= st[k, S_T_FILL1] + stab:
                phase = MEAS
                st[k, S_T_MEAS0] = t
                st[k, S_N] = 0.0
                st[k, S_ST] = 0.0
                st[k, S_SP] = 0.0
                st[k, S_STT] = 0.0
                st[k, S_STP] = 0.0
                st[k, S_SDT] = 0.0
                st[k, S_NDT] = 0.0
                st[k, S_P0] = v  # pressures about the first one: the sums of squares stay well conditioned
                st[k, S_SPP] = 0.0
        if phase == MEAS:
            meas = st[k, S_MEAS_S]
            if meas != meas:
                meas = params[PA_MEAS_S]
            if rate < -vent and st[k, S_N] > 0.0:
                phase = VENT
                st[k, S_T_VENT0] = t_last
            elif t - st[k, S_T_MEAS0] <= meas + 1e-6:
                x = t - st[k, S_T_MEAS0]
                y = v - st[k, S_P0]
                st[k, S_N] += 1.0
                st[k, S_ST] += x
                st[k, S_SP] += y
                st[k, S_STT] += x * x
                st[k, S_STP] += x * y
                st[k, S_SPP] += y * y
                dt_k = st[k, S_PART] - st[k, S_CHAMBER]
                if dt_k == dt_k:
                    st[k, S_SDT] += dt_k
                    st[k, S_NDT] += 1.0
        elif phase == VENT:
            if v < 0.5 * p_on or rate > rise:
                n = st[k, S_N]
                if n_out < out.shape[0]:
                    den = n * st[k, S_STT] - st[k, S_ST] * st[k, S_ST]
                    slope = (n * st[k, S_STP] - st[k, S_ST] * st[k, S_SP]) / den if n >= 3.0 and den > 0.0 else np.nan
                    resid = np.nan
                    if slope == slope:
                        mx, my = st[k, S_ST] / n, st[k, S_SP] / n
                        syy = st[k, S_SPP] - n * my * my
                        sxy = st[k, S_STP] - n * mx * my
                        resid = math.sqrt(max(syy - slope * sxy, 0.0) / (n - 2.0)) * 1e5
                    end = t if v < 0.5 * p_on else t_last
                    out[n_out, O_ROW] = k
                    out[n_out, O_END_S] = end
                    out[n_out, O_FILL_S] = st[k, S_T_FILL1] - st[k, S_T_FILL0]
                    out[n_out, O_STAB_S] = st[k, S_T_MEAS0] - st[k, S_T_FILL1]
                    out[n_out, O_MEAS_S] = st[k, S_T_VENT0] - st[k, S_T_MEAS0]
                    out[n_out, O_VENT_S] = end - st[k, S_T_VENT0]
                    out[n_out, O_DECAY_PA_S] = -slope * 1e5
                    out[n_out, O_P_BAR] = st[k, S_P0] + st[k, S_SP] / n if n > 0.0 else np.nan
                    out[n_out, O_RESID_PA] = resid
                    out[n_out, O_DT_K] = st[k, S_SDT] / st[k, S_NDT] if st[k, S_NDT] > 0.0 else np.nan
                    out[n_out, O_N] = n
                    out[n_out, O_T_MEAS0] = st[k, S_T_MEAS0]
                    out[n_out, O_TEMP_FLAGS] = _cycle_temp_flags(st, k, t, params)
                    out[n_out, O_REBASE] = st[k, S_REBASE]
                    st[k, S_REBASE] = 0.0
                    n_out += 1
                else:
                    counters[G_OVERFLOW] += 1.0
                if v < 0.5 * p_on:
                    phase = IDLE
                else:  # the next part is filling already
                    phase = FILL
                    st[k, S_RISE] = rate
                    st[k, S_TFLAG] = 0.0
                    st[k, S_FILL_N] = 1.0
        elif phase == LOST:
            if v < 0.5 * p_on or rate < -vent:  # vented or venting: the next rise is a new cycle
                phase = IDLE
        st[k, S_PHASE] = phase
        st[k, S_T_LAST] = t
        st[k, S_P_LAST] = v
    return n_out
