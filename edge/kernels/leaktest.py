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
 S_SDT, S_NDT, S_PART, S_CHAMBER, S_STAB_S, S_MEAS_S, S_P0, S_SPP, N_ST) = range(22)
# out[k, :]
(O_ROW, O_END_S, O_FILL_S, O_STAB_S, O_MEAS_S, O_VENT_S, O_DECAY_PA_S, O_P_BAR, O_DT_K, O_N, O_T_MEAS0,
 O_RESID_PA, N_OUT) = range(13)
# params[:]
PA_P_ON, PA_RISE, PA_VENT, PA_MAX_GAP_S, PA_STAB_S, PA_MEAS_S, N_PARAMS = range(7)
# counters[:]
G_BAD, G_ABORTED, G_OVERFLOW, N_COUNTERS = range(4)


def new_state(stations: int) -> np.ndarray:
    st = np.zeros((stations, N_ST), dtype=np.float64)
    st[:, S_T_LAST] = np.nan
    st[:, S_PART] = np.nan
    st[:, S_CHAMBER] = np.nan
    st[:, S_STAB_S] = np.nan
    st[:, S_MEAS_S] = np.nan
    return st


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
        if quality[i] == 2 or not math.isfinite(v):
            counters[G_BAD] += 1.0
            continue
        k = row[sig]
        if r == R_PART_T:
            st[k, S_PART] = v
            continue
        if r == R_CHAMBER_T:
            st[k, S_CHAMBER] = v
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
        elif phase == FILL:
            r_fill = st[k, S_RISE]
            if rate < rise or rate < 0.5 * r_fill:
                phase = STAB
                t1 = min(max(t_last + max(v - p_last, 0.0) / r_fill, t_last), t)
                st[k, S_T_FILL1] = t1
                st[k, S_T_FILL0] = t1 - v / r_fill
            else:
                st[k, S_RISE] = max(r_fill, rate)
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
                    n_out += 1
                else:
                    counters[G_OVERFLOW] += 1.0
                if v < 0.5 * p_on:
                    phase = IDLE
                else:  # the next part is filling already
                    phase = FILL
                    st[k, S_RISE] = rate
        elif phase == LOST:
            if v < 0.5 * p_on or rate < -vent:  # vented or venting: the next rise is a new cycle
                phase = IDLE
        st[k, S_PHASE] = phase
        st[k, S_T_LAST] = t
        st[k, S_P_LAST] = v
    return n_out
