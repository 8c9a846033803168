"""Energy accounting per machine: power, integrated energy, counter increments, parts, running, load.

One pass over a frame's samples (only the energy agent's signals), in arrival order, updating per-machine
state and the open interval's accumulators; the agent closes intervals in numpy (once a minute).

Roles of a signal (``role[signal]``, 0 = not ours) and what a finite, not-BAD sample does to its machine
``row[signal]``:
- ``R_POWER`` (kW, measured) / ``R_CURRENT`` (A, rows whose power is computed): the new power ``p``
  (from current: ``phase_k * V * I * pf / 1000`` with the machine's last voltage and power factor, or the
  nominal ones while it has none). The energy since the previous power sample, ``p_prev * dt``, is added
  to ``E_INT`` (left Riemann sum) when ``0 < dt <= max_gap_ns``; a longer gap is not guessed across and
  is counted in ``GAPS``. ``P_SUM``/``P_N`` average the interval's power.
- ``R_VOLTAGE``, ``R_PF``: remembered for the computed power.
- ``R_COUNTER`` (kWh, cumulative): the increment from the previous reading goes to ``E_CNT``. A decrease
  is a wrap when ``wrap > 0`` and the previous reading was in the upper half of the range and the new
  one in the lower (``wrap - prev + v``, ``WRAPS``), a reset when larger than ``reset_tol`` (the new
  reading counts from 0: ``+v``, ``RESETS``), and jitter otherwise (nothing added, the previous reading
  kept). An increment above ``max_step`` is a glitch: not added, ``GLITCHES``, re-anchored on it.
- ``R_PARTS`` (good parts, cumulative): increments to ``PARTS_D`` (a decrease is a reset: ``+v``); the
  time of the last increment is kept (``LT_PARTS``) to tell producing from idle.
- ``R_RUN``: ``RUN_SUM``/``RUN_N`` (fraction of samples running, value > 0.5).
- ``R_LOAD``: ``LOAD_SUM``/``LOAD_N`` (mean load over the interval).
NaN/inf values and BAD quality (2) change nothing and are counted in ``BAD``.
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit

R_POWER, R_CURRENT, R_VOLTAGE, R_PF, R_COUNTER, R_PARTS, R_RUN, R_LOAD = 1, 2, 3, 4, 5, 6, 7, 8
# last[row, :]
L_P, L_V, L_PF, L_CNT, L_PARTS, N_LAST = 0, 1, 2, 3, 4, 5
# last_ts[row, :]
LT_P, LT_PARTS, N_LAST_TS = 0, 1, 2
# acc[row, :] -- the open interval (reset by the agent when it closes one) ...
(E_INT, P_SUM, P_N, E_CNT, CNT_N, PARTS_D, RUN_SUM, RUN_N, LOAD_SUM, LOAD_N,
 # ... and running totals (never reset)
 GAPS, WRAPS, RESETS, GLITCHES, BAD, N_ACC) = range(16)
N_INTERVAL = GAPS  # columns 0..N_INTERVAL-1 are per interval
# params[:]
PA_PHASE_K, PA_V_NOM, PA_PF_NOM, PA_WRAP, PA_RESET_TOL, PA_MAX_STEP, PA_MAX_GAP_NS, N_PARAMS = range(8)

NS_PER_H = 3.6e12


@njit(cache=True, nogil=True)
def energy_accumulate(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                      role: np.ndarray, row: np.ndarray, computed: np.ndarray, params: np.ndarray,
                      last: np.ndarray, last_ts: np.ndarray, acc: np.ndarray) -> None:
    """Update ``last``, ``last_ts`` and ``acc`` (see the module docstring) with one chunk of samples."""
    phase_k = params[PA_PHASE_K]
    wrap = params[PA_WRAP]
    reset_tol = params[PA_RESET_TOL]
    max_step = params[PA_MAX_STEP]
    max_gap = params[PA_MAX_GAP_NS]
    for k in range(signal.shape[0]):
        s = signal[k]
        rl = role[s]
        if rl == 0:
            continue
        r = row[s]
        v = value[k]
        if quality[k] == 2 or not np.isfinite(v):
            acc[r, BAD] += 1.0
            continue
        t = ts_ns[k]
        if rl == R_POWER or rl == R_CURRENT:
            if rl == R_CURRENT:
                if computed[r] == 0:
                    continue
                volt = last[r, L_V] if np.isfinite(last[r, L_V]) else params[PA_V_NOM]
                pf = last[r, L_PF] if np.isfinite(last[r, L_PF]) else params[PA_PF_NOM]
                p = phase_k * volt * v * pf / 1000.0
            else:
                p = v
            prev = last[r, L_P]
            if np.isfinite(prev):
                dt = float(t - last_ts[r, LT_P])
                if dt > 0.0 and dt <= max_gap:
                    acc[r, E_INT] += prev * dt / NS_PER_H
                elif dt > max_gap:
                    acc[r, GAPS] += 1.0
            last[r, L_P] = p
            last_ts[r, LT_P] = t
            acc[r, P_SUM] += p
            acc[r, P_N] += 1.0
        elif rl == R_VOLTAGE:
            last[r, L_V] = v
        elif rl == R_PF:
            last[r, L_PF] = v
        elif rl == R_COUNTER:
            prev = last[r, L_CNT]
            if np.isfinite(prev):
                d = v - prev
                if d < 0.0:
                    if wrap > 0.0 and prev > 0.5 * wrap and v < 0.5 * wrap:
                        d = wrap - prev + v
                        acc[r, WRAPS] += 1.0
                    elif -d > reset_tol:
                        d = v
                        acc[r, RESETS] += 1.0
                    else:
                        continue  # jitter: keep the higher reading
                if d > max_step:
                    acc[r, GLITCHES] += 1.0
                    d = 0.0
                acc[r, E_CNT] += d
                acc[r, CNT_N] += 1.0
            last[r, L_CNT] = v
        elif rl == R_PARTS:
            prev = last[r, L_PARTS]
            if np.isfinite(prev):
                d = v - prev if v >= prev else v
                if d > 0.0:
                    acc[r, PARTS_D] += d
                    last_ts[r, LT_PARTS] = t
            last[r, L_PARTS] = v
        elif rl == R_RUN:
            acc[r, RUN_SUM] += 1.0 if v > 0.5 else 0.0
            acc[r, RUN_N] += 1.0
        elif rl == R_LOAD:
            acc[r, LOAD_SUM] += v
            acc[r, LOAD_N] += 1.0
