"""The energy agent: what each machine, line and area draws, against what it produces.

Per machine (every machine of the configured templates that has a power source or an energy counter),
and summed per line and per area, once per ``interval_s`` (default one minute), as derived signals
``<owner>.energy.<name>``:

- ``power_kw``: mean active power over the interval -- measured (``power``), or computed from current,
  voltage and power factor (``sqrt(3) V I pf``; nominal V and pf where a machine has none);
- ``energy_kwh``: energy of the interval, from the machine's energy counter when it has one (what the
  meter bills: increments, with wrap and reset handled in the kernel), else integrated from power;
- ``idle_kwh``: the part of it drawn while not producing: a machine with a production counter is idle
  once no good part came for ``idle_after_s`` while it still draws more than ``idle_power_fraction`` of
  its working power; a machine without one counts what it draws while its running bit is off;
- ``demand_kw`` and ``demand_peak_kw``: at the end of each ``demand_window_s`` block (15 minutes, aligned
  to the clock, as utilities meter it), the block's mean power, and the highest block of the billing
  month so far (the figure a demand charge is computed from);
- ``shift_kwh``, ``day_kwh``: running totals of the current shift and day (``shift_starts_h``,
  ``utc_offset_h``); the last value before the reset is the shift's or day's total;
- machines only: ``energy_per_part_kwh`` (energy / good parts of the interval, where parts were made)
  and ``baseline_kw`` (what this machine drew before for the same load, below).

**Baseline and excess.** Per machine, the interval's mean power is learnt against its load (the mean of
a load signal such as capacity or strokes per minute; else parts per interval; else the running
fraction) in ``baseline_bins`` bins of the load's range, apart for intervals it runs and stands (its running
bit, where it has one), and within each bin as a straight line (exponentially weighted means of load,
power, load squared and load x power: the bin's least-squares slope): a piecewise-linear curve of energy
against load and output, as an energy baseline is regressed on its relevant variables (ISO 50006). The
line matters: a bin spans a tenth of the load's range, over which a compressor's power moves by +-18 %,
which hid efficiency losses under 25 % (``bench/RESULTS.md``, "the missed efficiency losses").
An interval is judged before it is learnt (a bin needs ``baseline_min_count`` intervals, the machine
``baseline_intervals``). Excess is an accumulating test, a one-sided CUSUM of the ratio of measured to
baseline power: ``S = max(0, S + r - excess_ratio / 2)`` with ``r = power / baseline - 1`` (clipped to
+-1; an interval over by less than ``excess_kwh`` adds no positive evidence), so a loss of
``excess_ratio`` or more accumulates by at least ``excess_ratio / 2`` per interval and opens an
``energy_excess`` event when ``S`` reaches ``excess_cusum_h`` (a 15 % loss after ~27 one-minute intervals at
the default 2.0, a 30 % one after ~9), while the scatter of a healthy machine (a few %) drains it back to 0.
``clear_intervals`` in a row within ``excess_ratio / 2`` of the baseline close it. Intervals over
``excess_ratio / 2`` are never learnt, nor any while an episode is open, so a machine that lost efficiency
stays in excess instead of teaching the baseline its new consumption (the consecutive-interval rule this
replaced learnt every interval just under its threshold, and a 16-24 % loss vanished into the baseline).
Long idling opens ``energy_idle``.

**Steady operation only.** An interval is judged, and learnt, only while the machine operates steadily
(``steady_intervals``, ``steady_tolerance``; ``_steady``): its running state unchanged and its mean load and
power over the last few intervals where they were over the few before, as energy baselines are fitted on
steady operation. In a ramp the load reading lags the power, which was every false ``energy_excess`` left
(shift starts and ends); an interval out of steady operation neither adds to the CUSUM nor counts towards
closing an open episode.

Time is the samples' own (``ts_ns``): an interval closes when a sample at or after its end arrives, so
the agent replays recorded data (``bench/energy_eval.py``) exactly as it runs live. Samples arriving
after their interval closed count in the open one. Per-sample work is ``edge.kernels.energy``; closing an
interval is numpy over machines.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import numpy as np

from edge.agents.base import Agent, AgentContext, DerivedSignal, Emitter
from edge.agents.energy_settings import EnergySettings
from edge.frames import Frame
from edge.kernels import energy as K

ENTITY_SIGNALS = ("power_kw", "energy_kwh", "idle_kwh", "demand_kw", "demand_peak_kw", "shift_kwh", "day_kwh")
MACHINE_SIGNALS = (*ENTITY_SIGNALS, "energy_per_part_kwh", "baseline_kw")
UNITS = {"power_kw": "kW", "energy_kwh": "kWh", "idle_kwh": "kWh", "demand_kw": "kW", "demand_peak_kw": "kW",
         "shift_kwh": "kWh", "day_kwh": "kWh", "energy_per_part_kwh": "kWh", "baseline_kw": "kW"}
S_POWER, S_ENERGY, S_IDLE, S_DEMAND, S_PEAK, S_SHIFT, S_DAY, S_EPP, S_BASE = range(9)
AREA_PREFIX = "area."


def _first(names: list[str], have: dict[str, int]) -> int:
    for n in names:
        if n in have:
            return have[n]
    return -1


class EnergyAgent(Agent):
    name = "energy"
    # 2: baseline bins split by running state; 3: a line per bin, CUSUM of the excess; 4: baselines learnt in steady
    # operation only -- same arrays, but a version-3 baseline may hold a shift's ramp (a leak tester's bin learnt
    # at a third of its working power judged every shift as excess), so older checkpoints are refused and the
    # agent starts cold (logged by the runner as a cold-start reason)
    state_version = 4

    def __init__(self, ctx: AgentContext, settings: EnergySettings) -> None:
        self.s = settings
        table = ctx.table
        n = len(table)
        by_machine: dict[int, dict[str, int]] = {}
        for idx, (sid, m) in enumerate(zip(table.ids, table.machine.tolist(), strict=True)):
            by_machine.setdefault(m, {})[sid[len(table.machine_ids[m]) + 1:]] = idx
        cand = ctx.machines_of(settings.templates).tolist()
        self.role = np.zeros(n, dtype=np.int8)
        self.row = np.zeros(n, dtype=np.int64)
        rows: list[dict[str, int]] = []
        machines: list[int] = []
        for m in cand:
            have = by_machine.get(m, {})
            sig = {
                "power": _first(settings.power, have), "current": _first(settings.current, have),
                "voltage": _first(settings.voltage, have), "pf": _first(settings.power_factor, have),
                "counter": _first(settings.energy_counter, have), "parts": _first(settings.good_parts, have),
                "run": _first(settings.running, have), "load": _first(settings.load, have),
            }
            if sig["power"] < 0 and sig["current"] < 0 and sig["counter"] < 0:
                continue
            machines.append(m)
            rows.append(sig)
        self.machines = np.asarray(machines, dtype=np.int64)
        nm = len(machines)
        if nm == 0:
            raise ValueError(f"no machine of templates {settings.templates} has a power, current or energy "
                             "counter signal of the configured names")
        role_of = {"power": K.R_POWER, "current": K.R_CURRENT, "voltage": K.R_VOLTAGE, "pf": K.R_PF,
                   "counter": K.R_COUNTER, "parts": K.R_PARTS, "run": K.R_RUN, "load": K.R_LOAD}
        for r, sig in enumerate(rows):
            for key, idx in sig.items():
                if idx >= 0:
                    self.role[idx] = role_of[key]
                    self.row[idx] = r
        col = {k: np.array([sig[k] for sig in rows], dtype=np.int64) for k in role_of}
        self.has_power = (col["power"] >= 0) | (col["current"] >= 0)
        self.computed = ((col["power"] < 0) & (col["current"] >= 0)).astype(np.uint8)
        self.has_counter = col["counter"] >= 0
        self.has_parts = col["parts"] >= 0
        self.has_run = col["run"] >= 0
        self.has_load = col["load"] >= 0
        self.load_high = np.where(self.has_load, table.high[np.maximum(col["load"], 0)], np.nan)
        self._consumes = np.flatnonzero(self.role > 0)
        self.params = np.zeros(K.N_PARAMS)
        self.params[K.PA_PHASE_K] = math.sqrt(3.0) if settings.phases == 3 else 1.0
        self.params[K.PA_V_NOM] = settings.nominal_voltage_v
        self.params[K.PA_PF_NOM] = settings.nominal_power_factor
        self.params[K.PA_WRAP] = settings.counter_wrap_kwh
        self.params[K.PA_RESET_TOL] = settings.counter_reset_kwh
        self.params[K.PA_MAX_STEP] = settings.max_counter_step_kwh
        self.params[K.PA_MAX_GAP_NS] = settings.max_gap_s * 1e9

        # Lines and areas.
        self.machine_ids = [table.machine_ids[m] for m in machines]
        line_names: list[str] = []
        line_of = np.zeros(nm, dtype=np.int64)
        for i, mid in enumerate(self.machine_ids):
            line = next((ln for ln, pats in settings.lines.items() if any(fnmatch.fnmatchcase(mid, p) for p in pats)),
                        mid.rsplit(".", 1)[0] if "." in mid else mid)
            if line not in line_names:
                line_names.append(line)
            line_of[i] = line_names.index(line)
        area_names: list[str] = []
        area_of = np.zeros(len(line_names), dtype=np.int64)
        for j, line in enumerate(line_names):
            area = next((a for a, pats in settings.areas.items() if any(fnmatch.fnmatchcase(line, p) for p in pats)),
                        settings.site_area)
            if area not in area_names:
                area_names.append(area)
            area_of[j] = area_names.index(area)
        self.line_names, self.area_names = line_names, area_names
        self.line_of, self.area_of = line_of, area_of
        nl, na = len(line_names), len(area_names)
        self.n_entities = nm + nl + na
        owners = self.machine_ids + line_names + [AREA_PREFIX + a for a in area_names]
        self._derived: list[DerivedSignal] = []
        self.local = np.full((self.n_entities, len(MACHINE_SIGNALS)), -1, dtype=np.int64)
        for e, owner in enumerate(owners):
            names = MACHINE_SIGNALS if e < nm else ENTITY_SIGNALS
            for k, nm_ in enumerate(names):
                self.local[e, k] = len(self._derived)
                self._derived.append(DerivedSignal(owner, f"energy.{nm_}", UNITS[nm_]))

        # State (checkpointed).
        ne, nb = self.n_entities, settings.baseline_bins
        self.last = np.full((nm, K.N_LAST), np.nan)
        self.last_ts = np.zeros((nm, K.N_LAST_TS), dtype=np.int64)
        self.acc = np.zeros((nm, K.N_ACC))
        self.clock = np.zeros(6, dtype=np.int64)  # t_end, block, month, shift, day, intervals closed
        self.block_e = np.zeros(ne)
        self.peak = np.zeros(ne)
        self.shift_e = np.zeros(ne)
        self.day_e = np.zeros(ne)
        self.base_kw = np.zeros((nm, 2 * nb))  # load bins while stopped, then while running: mean power
        self.base_n = np.zeros((nm, 2 * nb))
        self.base_x = np.zeros((nm, 2 * nb))  # the bin's weighted means of load, load^2, load x power
        self.base_xx = np.zeros((nm, 2 * nb))
        self.base_xy = np.zeros((nm, 2 * nb))
        self.cusum = np.zeros(nm)  # the excess CUSUM (ratio-intervals)
        self.cusum_start = np.zeros(nm, dtype=np.int64)  # ns: start of the interval it last left 0
        self.learnt = np.zeros(nm)
        self.x_max = np.zeros(nm)
        self.p_ref = np.zeros(nm)
        self.over = np.zeros(nm)  # consecutive intervals over (>0) or within (<0) the baseline
        self.excess_start = np.zeros(nm, dtype=np.int64)  # ns, 0 while no excess episode is open
        self.excess_peak = np.zeros(nm)
        self.idle_s = np.zeros(nm)  # seconds idle in a row
        self.idle_start = np.zeros(nm, dtype=np.int64)
        self.idle_kwh_episode = np.zeros(nm)
        # The steadiness window: interval means, a ring by intervals closed. Not checkpointed: after a restart
        # every machine is unsteady until the window has filled again, and a change of steady_intervals keeps
        # the learnt baselines.
        w = 2 * settings.steady_intervals
        self.hist_x = np.full((nm, w), np.nan)  # load, relative to its range
        self.hist_p = np.full((nm, w), np.nan)  # power, kW
        self.hist_run = np.full((nm, w), np.nan)  # running state (1 running, 0 stopped)

    # -- the seam ---------------------------------------------------------------------------------
    def consumes(self) -> np.ndarray:
        return self._consumes

    def derived(self) -> list[DerivedSignal]:
        return self._derived

    def state(self) -> dict[str, np.ndarray]:
        names = ("last", "last_ts", "acc", "clock", "block_e", "peak", "shift_e", "day_e", "base_kw", "base_n",
                 "base_x", "base_xx", "base_xy", "cusum", "cusum_start",
                 "learnt", "x_max", "p_ref", "over", "excess_start", "excess_peak", "idle_s", "idle_start",
                 "idle_kwh_episode")
        return {k: getattr(self, k) for k in names}

    def describe(self) -> dict[str, Any]:
        return {"machines": int(self.machines.size), "lines": len(self.line_names), "areas": len(self.area_names),
                "derived": len(self._derived), "computed_power": int(self.computed.sum()),
                "counters": int(self.has_counter.sum()), "parts": int(self.has_parts.sum())}

    def process(self, frame: Frame, events: np.ndarray, out: Emitter) -> None:
        if len(frame) == 0:
            return
        interval_ns = round(self.s.interval_s * 1e9)
        clock = self.clock
        ts = frame.ts_ns
        if clock[0] == 0:
            clock[0] = (int(ts.min()) // interval_ns + 1) * interval_ns
        sig, val, q = frame.signal, frame.value, frame.quality
        while True:
            before = ts < clock[0]
            if before.all():
                self._accumulate(ts, sig, val, q)
                return
            if before.any():
                self._accumulate(ts[before], sig[before], val[before], q[before])
            after = ~before
            ts, sig, val, q = ts[after], sig[after], val[after], q[after]
            self._close(int(clock[0]), out)
            first = int(ts.min())
            clock[0] += interval_ns
            window_ns = round(self.s.demand_window_s * 1e9)
            if first >= int(clock[0]) + window_ns:  # a long gap (restart, outage): no empty intervals
                clock[0] = (first // interval_ns + 1) * interval_ns
                self.block_e[:] = 0.0
                for h in (self.hist_x, self.hist_p, self.hist_run):  # steady again only after a full window
                    h[:] = np.nan

    # -- internals --------------------------------------------------------------------------------
    def _accumulate(self, ts: np.ndarray, sig: np.ndarray, val: np.ndarray, q: np.ndarray) -> None:
        K.energy_accumulate(ts, sig, val, q, self.role, self.row, self.computed, self.params, self.last,
                            self.last_ts, self.acc)

    def _close(self, t_end: int, out: Emitter) -> None:
        """Close the interval ending at ``t_end``: figures per machine, line and area, baseline, events."""
        s = self.s
        acc = self.acc
        nm = self.machines.size
        interval_h = s.interval_s / 3600.0
        with np.errstate(invalid="ignore", divide="ignore"):
            p_mean = np.where(acc[:, K.P_N] > 0, acc[:, K.P_SUM] / np.maximum(acc[:, K.P_N], 1), np.nan)
            use_cnt = self.has_counter & (acc[:, K.CNT_N] > 0)
            energy = np.where(use_cnt, acc[:, K.E_CNT],
                              np.where(self.has_power & (acc[:, K.P_N] > 0), acc[:, K.E_INT], np.nan))
            power = np.where(np.isfinite(p_mean), p_mean, energy / interval_h)
            parts = np.where(self.has_parts, acc[:, K.PARTS_D], np.nan)
            epp = np.where(parts > 0, energy / parts, np.nan)
            run_frac = np.where(acc[:, K.RUN_N] > 0, acc[:, K.RUN_SUM] / np.maximum(acc[:, K.RUN_N], 1), np.nan)
            load = np.where(acc[:, K.LOAD_N] > 0, acc[:, K.LOAD_SUM] / np.maximum(acc[:, K.LOAD_N], 1), np.nan)
        # Idle: drawing power while not producing.
        idle_after_ns = s.idle_after_s * 1e9
        last_part = self.last_ts[:, K.LT_PARTS]
        producing = self.has_parts & (last_part > 0) & ((t_end - last_part) <= idle_after_ns)
        on = np.isfinite(power) & (power > np.maximum(s.idle_power_fraction * self.p_ref, s.off_power_kw))
        idle = np.where(self.has_parts, np.where(~producing & on, np.nan_to_num(energy), 0.0),
                        np.where(np.isfinite(run_frac), np.nan_to_num(energy) * (1.0 - np.nan_to_num(run_frac)),
                                 0.0))
        learn_ref = (producing | (~self.has_parts & (np.nan_to_num(run_frac) > 0.5))) & np.isfinite(power)
        self.p_ref[learn_ref] += 0.05 * (power[learn_ref] - self.p_ref[learn_ref])
        # Baseline: judge, then learn what is not over it.
        x = np.where(self.has_load, load, np.where(self.has_parts, parts, run_frac))
        finite_x = np.isfinite(x) & np.isfinite(power)
        self.x_max[finite_x] = np.maximum(self.x_max[finite_x], x[finite_x])
        x_ref = np.where(np.isfinite(self.load_high) & (self.load_high > 0), self.load_high, self.x_max)
        nb = s.baseline_bins
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.clip(np.floor(np.where(x_ref > 0, x / x_ref, 0.0) * nb), 0, nb - 1)
        b = np.where(np.isfinite(b), b, 0).astype(np.int64)
        # A machine's own state splits the curve: what it draws stopped is not what it draws running at the
        # same reading of its load or parts counter (a counter can move while a station stands).
        running = np.nan_to_num(run_frac, nan=1.0) > 0.5
        b += np.where(running, nb, 0)
        r = np.arange(nm)
        steady = self._steady(x, x_ref, power, running)
        expected = self._expected(r, b, x, x_ref)
        # Excess is more than the baseline *for the same work*: an interval of a machine whose work is its parts
        # count that made no part is idle (the idle rule's), not judged: at a start, or a run-down, it draws
        # before the first part or after the last, which its night's idle baseline would call excess.
        no_work = self.has_parts & ~self.has_load & ~(parts > 0)
        judged = (finite_x & (self.base_n[r, b] >= s.baseline_min_count) & (self.learnt >= s.baseline_intervals)
                  & ~no_work & steady)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(judged & (expected > 0), power / expected - 1.0, 0.0)
        big_enough = (power - expected) * interval_h > s.excess_kwh
        over = judged & (ratio > s.excess_ratio) & big_enough
        k_ref = 0.5 * s.excess_ratio
        z = np.clip(ratio, -1.0, 1.0)
        z = np.where(judged, np.where((z > 0) & ~big_enough, np.minimum(z, k_ref), z), k_ref)
        was_zero = self.cusum <= 0.0
        self.cusum = np.maximum(0.0, self.cusum + z - k_ref)
        started = was_zero & (self.cusum > 0.0)
        self.cusum_start[started] = t_end - round(s.interval_s * 1e9)
        within = z <= k_ref
        # an interval out of steady operation is no evidence either way: it neither counts towards closing an
        # open episode nor is learnt (a baseline is fitted on steady operation, as energy baselines are)
        self.over = np.where(~steady, self.over,
                             np.where(within, np.minimum(self.over, 0) - 1, np.maximum(self.over, 0) + 1))
        learn = finite_x & within & (self.excess_start == 0) & steady
        self._learn(r[learn], b[learn], x[learn], power[learn])
        self.learnt[learn] += 1
        self._excess_events(t_end, over, ratio, power, expected, out)
        self._idle_events(t_end, idle, power, out)

        # Machines, lines, areas.
        e_m = np.nan_to_num(energy)
        nl, na = len(self.line_names), len(self.area_names)
        e_l = np.bincount(self.line_of, weights=e_m, minlength=nl)
        i_l = np.bincount(self.line_of, weights=idle, minlength=nl)
        p_l = np.bincount(self.line_of, weights=np.nan_to_num(power), minlength=nl)
        e_all = np.concatenate([e_m, e_l, np.bincount(self.area_of, weights=e_l, minlength=na)])
        i_all = np.concatenate([idle, i_l, np.bincount(self.area_of, weights=i_l, minlength=na)])
        p_all = np.concatenate([power, p_l, np.bincount(self.area_of, weights=p_l, minlength=na)])
        e_valid = np.concatenate([np.isfinite(energy), np.ones(nl + na, dtype=bool)])
        self._totals(t_end, e_all)
        ne = self.n_entities
        cols: list[tuple[int, np.ndarray, np.ndarray]] = [
            (S_POWER, p_all, np.isfinite(p_all)),
            (S_ENERGY, e_all, e_valid),
            (S_IDLE, i_all, e_valid),
            (S_SHIFT, self.shift_e, np.ones(ne, dtype=bool)),
            (S_DAY, self.day_e, np.ones(ne, dtype=bool)),
        ]
        window_ns = round(s.demand_window_s * 1e9)
        self.block_e += e_all
        if t_end % window_ns == 0:
            demand = self.block_e * (3600.0 / s.demand_window_s)
            month = self._month(t_end - 1)
            if month != self.clock[2]:
                self.clock[2] = month
                self.peak[:] = 0.0
            np.maximum(self.peak, demand, out=self.peak)
            cols.append((S_DEMAND, demand, np.ones(ne, dtype=bool)))
            cols.append((S_PEAK, self.peak.copy(), np.ones(ne, dtype=bool)))
            self.block_e[:] = 0.0
        pad = np.full(ne - nm, np.nan)
        cols.append((S_EPP, np.concatenate([epp, pad]), np.concatenate([np.isfinite(epp), np.zeros(ne - nm, bool)])))
        base_out = np.where(judged, expected, np.nan)
        cols.append((S_BASE, np.concatenate([base_out, pad]),
                     np.concatenate([np.isfinite(base_out), np.zeros(ne - nm, bool)])))
        for k, values, ok in cols:
            ok = ok & np.isfinite(values) & (self.local[:, k] >= 0)
            out.samples(t_end, self.local[ok, k].astype(np.uint32), values[ok].astype(np.float64))
        acc[:, : K.N_INTERVAL] = 0.0
        self.clock[5] += 1

    def _steady(self, x: np.ndarray, x_ref: np.ndarray, power: np.ndarray, running: np.ndarray) -> np.ndarray:
        """Record this interval in the steadiness window and say which machines operate steadily.

        Steady: the running state the same over the window's ``2 k`` intervals, and the mean load and the mean
        power of the newest ``k`` within ``steady_tolerance`` of the ``k`` before. Why: in a ramp (a shift's start
        or end, a start-up) the load reading lags the power -- a tester draws before its first part is counted,
        a press still draws while its output falls -- so an interval met a bin learnt at another operating
        point: 12 false ``energy_excess`` per seed at 05:53-06:14 and 22:06-22:09 (bench/RESULTS.md), and a
        baseline learnt in the ramp then judged the whole shift as excess. Means over ``k`` intervals, not single
        intervals, so a duty cycle within them (a compressor's 5-minute load cycle) does not read as a ramp.
        An efficiency step moves the power too: it is judged once the window is past the step (``2 k``
        intervals later). Any NaN in the window (no data, or after a gap) is not steady."""
        k = self.s.steady_intervals
        if k == 0:
            return np.ones(x.shape, dtype=bool)
        w = 2 * k
        pos = int(self.clock[5]) % w  # the ring position: intervals closed so far (checkpointed, the ring is not)
        scale = np.where(x_ref > 0, x_ref, 1.0)  # no range yet: the load has been 0 (or NaN) throughout
        self.hist_x[:, pos] = x / scale
        self.hist_p[:, pos] = power
        self.hist_run[:, pos] = running
        new = (pos - np.arange(k)) % w
        old = (pos - k - np.arange(k)) % w
        tol = self.s.steady_tolerance
        # a parts count moves in whole parts: two k-interval means differ by up to 2 / k parts at a steady rate
        quantum = np.where(self.has_parts & ~self.has_load, 2.0 / k, 0.0) / scale
        with np.errstate(invalid="ignore"):
            dx = np.abs(self.hist_x[:, new].mean(axis=1) - self.hist_x[:, old].mean(axis=1))
            p_new, p_old = self.hist_p[:, new].mean(axis=1), self.hist_p[:, old].mean(axis=1)
            p_scale = np.maximum(np.maximum(np.abs(p_new), np.abs(p_old)), self.p_ref)
            same_state = self.hist_run.min(axis=1) == self.hist_run.max(axis=1)
            return same_state & (dx <= tol + quantum) & (np.abs(p_new - p_old) <= tol * p_scale)

    def _expected(self, r: np.ndarray, b: np.ndarray, x: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
        """The baseline's power at load ``x`` in bin ``b``: the bin's mean, moved along its least-squares line
        (slope 0 while the bin's loads hardly vary, as for an integer parts count, or it has few intervals)."""
        mx, my = self.base_x[r, b], self.base_kw[r, b]
        var = self.base_xx[r, b] - mx * mx
        cov = self.base_xy[r, b] - mx * my
        bin_w = np.where(x_ref > 0, x_ref, 1.0) / self.s.baseline_bins
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where((var > (1e-3 * bin_w) ** 2) & (self.base_n[r, b] >= self.s.baseline_min_count),
                             cov / var, 0.0)
            line = my + slope * (x - mx)
        return np.maximum(np.where(np.isfinite(line), line, my), 0.0)

    def _learn(self, r: np.ndarray, b: np.ndarray, x: np.ndarray, power: np.ndarray) -> None:
        """Learn intervals into their bins: exponentially weighted means (a running mean up to the forgetting's
        horizon of ``1 / (1 - baseline_forgetting)`` intervals, then forgetting)."""
        self.base_n[r, b] += 1
        w = 1.0 / np.minimum(self.base_n[r, b], 1.0 / max(1e-9, 1.0 - self.s.baseline_forgetting))
        for arr, v in ((self.base_kw, power), (self.base_x, x), (self.base_xx, x * x), (self.base_xy, x * power)):
            arr[r, b] += w * (v - arr[r, b])

    def _totals(self, t_end: int, e_all: np.ndarray) -> None:
        """Shift and day running totals; the interval belongs to the shift/day its start falls in."""
        local_s = (t_end - 1) / 1e9 + self.s.utc_offset_h * 3600.0
        day = int(local_s // 86400)
        tod_h = (local_s - day * 86400) / 3600.0
        starts = sorted(self.s.shift_starts_h)
        k = sum(1 for h in starts if h <= tod_h)
        shift = day * len(starts) + k - 1  # before the first start: the previous day's last shift
        if day != self.clock[4]:
            self.clock[4] = day
            self.day_e[:] = 0.0
        if shift != self.clock[3]:
            self.clock[3] = shift
            self.shift_e[:] = 0.0
        self.day_e += e_all
        self.shift_e += e_all

    def _month(self, t_ns: int) -> int:
        local = np.datetime64(int(t_ns + self.s.utc_offset_h * 3.6e12), "ns")
        return int(local.astype("datetime64[M]").astype(np.int64))

    def _doc(self, kind: str, m: int, state: str, start_ns: int, end_ns: int | None, peak: float,
             **extra: Any) -> dict[str, Any]:
        mid = self.machine_ids[m]
        return {"type": "alarm", "state": state, "kind": kind, "machine": mid, "signal": f"{mid}.energy.power_kw",
                "start_ns": int(start_ns), "end_ns": None if end_ns is None else int(end_ns),
                "peak": round(float(peak), 4), **extra}

    def _excess_events(self, t_end: int, over: np.ndarray, ratio: np.ndarray, power: np.ndarray,
                       expected: np.ndarray, out: Emitter) -> None:
        s = self.s
        interval_ns = round(s.interval_s * 1e9)
        open_ = self.excess_start > 0
        self.excess_peak = np.where(open_ & over, np.maximum(self.excess_peak, ratio), self.excess_peak)
        for m in np.flatnonzero(~open_ & (self.cusum >= s.excess_cusum_h)).tolist():
            start = int(self.cusum_start[m])  # where the accumulation began: the change point
            self.excess_start[m] = start
            self.excess_peak[m] = ratio[m]
            out.event(self._doc("energy_excess", m, "open", start, None, ratio[m], detected_ns=int(t_end),
                                power_kw=round(float(power[m]), 3), baseline_kw=round(float(expected[m]), 3)))
        for m in np.flatnonzero(open_ & (self.over <= -s.clear_intervals)).tolist():
            end = t_end + int(self.over[m]) * interval_ns  # over < 0: intervals within since the end
            out.event(self._doc("energy_excess", m, "closed", int(self.excess_start[m]), end, self.excess_peak[m]))
            self.excess_start[m] = 0
            self.excess_peak[m] = 0.0
            self.cusum[m] = 0.0

    def _idle_events(self, t_end: int, idle: np.ndarray, power: np.ndarray, out: Emitter) -> None:
        s = self.s
        is_idle = self.has_parts & (idle > 0)
        self.idle_s = np.where(is_idle, self.idle_s + s.interval_s, 0.0)
        self.idle_kwh_episode = np.where(is_idle, self.idle_kwh_episode + idle, self.idle_kwh_episode)
        open_ = self.idle_start > 0
        for m in np.flatnonzero(~open_ & (self.idle_s >= s.idle_event_s)).tolist():
            self.idle_start[m] = t_end - int(self.idle_s[m] * 1e9)
            out.event(self._doc("energy_idle", m, "open", int(self.idle_start[m]), None, power[m]))
        for m in np.flatnonzero(open_ & ~is_idle).tolist():
            out.event(self._doc("energy_idle", m, "closed", int(self.idle_start[m]), t_end - int(s.interval_s * 1e9),
                                self.idle_kwh_episode[m], idle_kwh=round(float(self.idle_kwh_episode[m]), 3)))
            self.idle_start[m] = 0
        self.idle_kwh_episode = np.where(is_idle, self.idle_kwh_episode, 0.0)
