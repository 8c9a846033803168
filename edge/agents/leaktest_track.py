"""Per cycle, per station: temperature compensation, pass/fail, and the drift of passing parts' leak rate.

Pure (arrays in, arrays out, state in arrays), so the agent and ``bench/leak_eval.py`` run the same code.
Cycles are rare (one per station per ~45 s), so this is numpy and a loop over a frame's few cycles, not a
per-sample kernel.

- **Temperature compensation.** The gas in a part that is warmer than the chamber cools during the
  measure phase, and its pressure falls with it (ideal gas at constant volume): an apparent decay of
  ``P / T_abs * dT / tau`` Pa/s, with ``dT`` the part-minus-chamber temperature and ``tau`` the gas's
  thermal time constant, a property of part and fixture. ``x = P * 1e5 / T_abs * dT`` is known per
  cycle; the station's own ``1 / tau`` is the slope of raw decay on ``x`` over its recent cycles
  (an exponentially weighted least-squares fit, ``thermal_cycles`` long, learnt outside drift
  episodes), with ``1 / gas_tau_s`` as the prior until enough cycles spread ``x``. The compensated
  leak rate is ``raw - x / tau``.
- **Pass/fail** against ``limit_pa_s``.
- **Drift.** A station's baseline leak rate (EWMA over ``baseline_cycles``, learnt from cycles
  outside episodes and while the CUSUM is quiet) and a one-sided CUSUM of the excess, with reference
  ``detectable_pa_s / 2`` and threshold ``cusum_h * detectable_pa_s``. Crossing it opens an episode
  (after ``warmup_cycles``): the station, since when (the cycle after the CUSUM last stood at 0, its
  change-point estimate), the excess and its growth (least-squares slope of the excess over time since
  then, Pa/s per hour). It closes after ``close_cycles`` cycles with an excess under the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.kernels import leaktest as lk

from .leaktest_settings import Compensation, LeakTestSettings

__all__ = ["C_LEAK", "C_PASS", "C_TFLAGS", "C_VALID", "N_C", "Episode", "LeakTracker"]

# result columns per cycle
(C_ROW, C_END_S, C_FILL_S, C_STAB_S, C_MEAS_S, C_VENT_S, C_RAW, C_THERMAL, C_LEAK, C_PASS, C_EXCESS, C_VALID,
 C_TFLAGS, N_C) = range(14)
# state columns per station
(T_W, T_SX, T_SY, T_SXX, T_SXY, B_MU, B_N, S_CUSUM, S_ZERO_S, S_OPEN, S_OPEN_NS, S_SINCE_S, S_BELOW, S_PEAK,
 G_N, G_ST, G_SE, G_STT, G_STE, N_STATE) = range(20)
T_ABS0 = 273.15


@dataclass(frozen=True, slots=True)
class Episode:
    """A drift episode opening or closing on one station."""

    station: int
    opened: bool  # False: closed
    ts_ns: int  # when it opened / closed (the cycle's end)
    since_ns: int  # change-point estimate
    excess_pa_s: float
    growth_pa_s_per_h: float
    peak_pa_s: float


class LeakTracker:
    def __init__(self, stations: int, settings: LeakTestSettings) -> None:
        self.s = settings
        self.state = np.zeros((stations, N_STATE), dtype=np.float64)
        self.state[:, S_ZERO_S] = np.nan

    def update(self, cycles: np.ndarray) -> tuple[np.ndarray, list[Episode]]:
        """Result rows (``N_C`` columns) for the kernel's cycle rows, and the episodes that opened or closed."""
        s = self.s
        st = self.state
        res = np.full((cycles.shape[0], N_C), np.nan)
        episodes: list[Episode] = []
        k_ref = s.detectable_pa_s / 2.0
        h = s.cusum_h * s.detectable_pa_s
        a_t = 1.0 / s.thermal_cycles
        a_b = 1.0 / s.baseline_cycles
        for i in range(cycles.shape[0]):
            c = cycles[i]
            k = int(c[lk.O_ROW])
            row = st[k]
            end_s = c[lk.O_END_S]
            res[i, C_ROW], res[i, C_END_S] = k, end_s
            res[i, C_FILL_S:C_VENT_S + 1] = c[lk.O_FILL_S:lk.O_VENT_S + 1]
            raw = c[lk.O_DECAY_PA_S]
            res[i, C_RAW] = raw
            dt_k = c[lk.O_DT_K]
            flags = c[lk.O_TEMP_FLAGS]
            res[i, C_TFLAGS] = flags
            if c[lk.O_REBASE] > 0.0:  # a suspect thermometer's new level was accepted: relearn what is normal
                row[B_N], row[S_CUSUM] = 0.0, 0.0
            # A fit that is not a decay (spike, burst, step: the trace scatters about the line), an absurd rate, or
            # no plausible temperature to compensate with (bad, out of range, jumped, ramping, stuck, suspect: see
            # edge.kernels.leaktest): the cycle is reported but neither judged nor tracked, so a faulty
            # thermometer neither teaches the baseline nor raises a drift alarm.
            comp = s.compensation is not Compensation.OFF
            valid = (np.isfinite(raw) and c[lk.O_RESID_PA] <= s.max_resid_pa and abs(raw) <= 10.0 * s.limit_pa_s
                     and (not comp or (np.isfinite(dt_k) and flags == 0.0)))
            res[i, C_VALID] = 1.0 if valid else 0.0
            if not valid:
                continue
            x = c[lk.O_P_BAR] * 1e5 / T_ABS0 * dt_k if np.isfinite(dt_k) else 0.0
            w = row[T_W]
            inv_tau = 0.0 if s.compensation is Compensation.OFF else 1.0 / s.gas_tau_s
            if w > 10.0 and s.compensation is Compensation.LEARN:
                mx, my = row[T_SX] / w, row[T_SY] / w
                var = row[T_SXX] / w - mx * mx
                if var > (0.5 * 1e5 * 40.0 / T_ABS0) ** 2:  # x spread by at least ~0.5 K at test pressure
                    inv_tau = (row[T_SXY] / w - mx * my) / var
            thermal = inv_tau * x
            leak = raw - thermal
            res[i, C_THERMAL], res[i, C_LEAK] = thermal, leak
            res[i, C_PASS] = 1.0 if leak <= s.limit_pa_s else 0.0
            n = row[B_N]
            mu = row[B_MU] if n > 0 else leak
            excess = leak - mu
            res[i, C_EXCESS] = excess
            # While the baseline warms up (at start, and after a thermometer's new level was accepted) it only
            # learns: a CUSUM that ran up then would keep the baseline from ever learning (it learns while quiet).
            cus = max(0.0, row[S_CUSUM] + excess - k_ref) if n >= s.warmup_cycles else 0.0
            if row[S_CUSUM] == 0.0 and cus > 0.0:
                row[S_ZERO_S] = end_s
                row[G_N:G_STE + 1] = 0.0
            row[S_CUSUM] = cus
            if cus > 0.0 or row[S_OPEN]:  # the excess since the change point, for the growth rate
                tt = (end_s - row[S_ZERO_S]) / 3600.0 if np.isfinite(row[S_ZERO_S]) else 0.0
                row[G_N] += 1.0
                row[G_ST] += tt
                row[G_SE] += excess
                row[G_STT] += tt * tt
                row[G_STE] += tt * excess
            quiet = not row[S_OPEN] and cus < 0.5 * h
            if quiet and np.isfinite(dt_k):
                row[T_W] = (1 - a_t) * w + 1.0
                row[T_SX] = (1 - a_t) * row[T_SX] + x
                row[T_SY] = (1 - a_t) * row[T_SY] + raw
                row[T_SXX] = (1 - a_t) * row[T_SXX] + x * x
                row[T_SXY] = (1 - a_t) * row[T_SXY] + x * raw
            if quiet:
                a = max(a_b, 1.0 / (n + 1.0))
                row[B_MU] = mu + a * (leak - mu)
                row[B_N] = n + 1.0
            if not row[S_OPEN]:
                if cus > h and n >= s.warmup_cycles:
                    row[S_OPEN], row[S_OPEN_NS], row[S_SINCE_S] = 1.0, end_s * 1e9, row[S_ZERO_S]
                    row[S_PEAK], row[S_BELOW] = excess, 0.0
                    episodes.append(Episode(k, True, int(end_s * 1e9), int(row[S_ZERO_S] * 1e9), excess,
                                            self._growth(row), excess))
            else:
                row[S_PEAK] = max(row[S_PEAK], excess)
                row[S_BELOW] = row[S_BELOW] + 1.0 if excess < k_ref else 0.0
                if row[S_BELOW] >= s.close_cycles:
                    episodes.append(Episode(k, False, int(end_s * 1e9), int(row[S_SINCE_S] * 1e9), excess,
                                            self._growth(row), row[S_PEAK]))
                    row[S_OPEN], row[S_CUSUM], row[S_BELOW] = 0.0, 0.0, 0.0
        return res, episodes

    @staticmethod
    def _growth(row: np.ndarray) -> float:
        n = row[G_N]
        den = n * row[G_STT] - row[G_ST] ** 2
        if n < 2 or den <= 0:
            return 0.0
        return float((n * row[G_STE] - row[G_ST] * row[G_SE]) / den)
