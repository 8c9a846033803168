"""Leak-test agent: every pressure-decay cycle of every leak-test station measured, and each station's drift.

Per station (machines of ``templates``), from its pressure trace, part and chamber temperatures and
phase timers (``LeakTestSettings``):

1. the kernel ``edge.kernels.leaktest.leak_cycles`` segments each cycle (fill, stabilise, measure,
   vent) and fits the pressure decay over the measure phase;
2. :class:`edge.agents.leaktest_track.LeakTracker` compensates the decay for temperature, judges the
   part against ``limit_pa_s`` and tracks the station's drift;
3. each cycle yields derived samples at the cycle's end, ``<station>.<name>``: ``leak_rate_pa_s``
   (compensated), ``decay_raw_pa_s``, ``thermal_pa_s`` (the compensation), ``leak_pass`` (1 pass,
   0 fail), ``leak_excess_pa_s`` (over the station's baseline), ``fill_s``, ``stabilise_s``,
   ``measure_s``, ``vent_s``, ``leak_valid`` (0: the measure phase was not a clean decay or had no
   plausible temperature, so the cycle is reported but not judged: no pass/fail, no leak rate, not
   tracked), ``temp_flags`` (why the temperatures were not trusted: the kernel's ``TF_*`` bits, 0 = fine);
4. a drift episode (passing parts whose leak rate creeps up: a fixture or seal leak) is an
   events-lane alarm ``kind: leak_drift`` on the station, with ``since_ns`` (the change point),
   ``excess_pa_s``, ``growth_pa_s_per_h`` and a ``detail`` sentence; it closes when the excess is gone.
   With ``hold_target`` set, an opening episode also asks the gateway's allow-listed actions
   (``edge.actions``) to set that target (``{station}.hold``) to 1: the edge decides, within what the
   ``actions:`` section allows (dry run by default); releasing the hold is the operator's.

State (kernel cycle state, tracker state, counters) is checkpointed by the runner.
"""

from __future__ import annotations

import numpy as np

from edge.agents.base import Agent, AgentContext, DerivedSignal, Emitter
from edge.frames import Frame
from edge.kernels import leaktest as lk

from .leaktest_settings import LeakTestSettings
from .leaktest_track import (
    C_END_S,
    C_EXCESS,
    C_FILL_S,
    C_LEAK,
    C_MEAS_S,
    C_PASS,
    C_RAW,
    C_ROW,
    C_STAB_S,
    C_TFLAGS,
    C_THERMAL,
    C_VALID,
    C_VENT_S,
    Episode,
    LeakTracker,
)

__all__ = ["DERIVED", "LeakTestAgent"]

# (name, unit, result column) of the derived signals, per station in this order
DERIVED = (("leak_rate_pa_s", "Pa/s", C_LEAK), ("decay_raw_pa_s", "Pa/s", C_RAW), ("thermal_pa_s", "Pa/s", C_THERMAL),
           ("leak_pass", "", C_PASS), ("leak_excess_pa_s", "Pa/s", C_EXCESS), ("fill_s", "s", C_FILL_S),
           ("stabilise_s", "s", C_STAB_S), ("measure_s", "s", C_MEAS_S), ("vent_s", "s", C_VENT_S),
           ("leak_valid", "", C_VALID), ("temp_flags", "", C_TFLAGS))
MAX_CYCLES_PER_FRAME = 4096


class LeakTestAgent(Agent):
    name = "leak_test"
    state_version = 3  # 2: the kernel keeps sums of squares (fit residual); 3: temperature plausibility

    def __init__(self, ctx: AgentContext, settings: LeakTestSettings) -> None:
        s = self.settings = settings
        machines = ctx.machines_of(settings.templates)
        names = [s.pressure, s.part_temp, s.chamber_temp, s.stabilise_time, s.measure_time]
        sel = ctx.select(machines, names)
        keep = sel[:, 0] >= 0  # a station without a pressure trace has no cycles to measure
        machines, sel = machines[keep], sel[keep]
        self.stations = [ctx.table.machine_ids[m] for m in machines.tolist()]
        n_sig = len(ctx.table)
        self.role = np.zeros(n_sig, dtype=np.int64)
        self.row = np.zeros(n_sig, dtype=np.int64)
        roles = (lk.R_PRESSURE, lk.R_PART_T, lk.R_CHAMBER_T, lk.R_STAB_S, lk.R_MEAS_S)
        for j, r in enumerate(roles):
            have = sel[:, j] >= 0
            self.role[sel[have, j]] = r
            self.row[sel[have, j]] = np.flatnonzero(have)
        self._consumes = np.sort(sel[sel >= 0])
        self.params = np.zeros(lk.N_PARAMS)
        self.params[[lk.PA_P_ON, lk.PA_RISE, lk.PA_VENT, lk.PA_MAX_GAP_S, lk.PA_STAB_S, lk.PA_MEAS_S, lk.PA_T_MIN,
                     lk.PA_T_MAX, lk.PA_JUMP_K, lk.PA_RAMP_K_S, lk.PA_SUSPECT_S, lk.PA_STUCK_N]] = (
            s.p_on_bar, s.rise_bar_s, s.vent_bar_s, s.max_gap_s, s.stabilise_s, s.measure_s, s.temp_min_c,
            s.temp_max_c, s.temp_jump_k, s.temp_ramp_k_s, s.temp_suspect_s, s.temp_stuck_samples)
        self.cycle_state = lk.new_state(len(self.stations))
        self.counters = np.zeros(lk.N_COUNTERS)
        self.tracker = LeakTracker(len(self.stations), settings)
        self._out = np.zeros((MAX_CYCLES_PER_FRAME, lk.N_OUT))
        self.cycles = np.zeros(1)  # cycles measured (checkpointed)
        self._cols = np.array([c for _, _, c in DERIVED], dtype=np.int64)

    def consumes(self) -> np.ndarray:
        return self._consumes

    def derived(self) -> list[DerivedSignal]:
        return [DerivedSignal(st, name, unit) for st in self.stations for name, unit, _ in DERIVED]

    def process(self, frame: Frame, events: np.ndarray, out: Emitter) -> None:
        if len(frame) == 0:
            return
        n = lk.leak_cycles(frame.ts_ns, frame.signal, frame.value, frame.quality, self.role, self.row, self.params,
                           self.cycle_state, self.counters, self._out)
        if n == 0:
            return
        self.cycles[0] += n
        res, episodes = self.tracker.update(self._out[:n])
        nd = len(DERIVED)
        ts = np.repeat(np.round(res[:, C_END_S] * 1e9).astype(np.int64), nd)
        local = (res[:, C_ROW].astype(np.int64)[:, None] * nd + np.arange(nd)).ravel().astype(np.uint32)
        value = res[:, self._cols].ravel()
        ok = np.isfinite(value)
        out.samples(ts[ok], local[ok], value[ok])
        for ep in episodes:
            out.event(self._event(ep))

    def _event(self, ep: Episode) -> dict[str, object]:
        st = self.stations[ep.station]
        since = np.datetime_as_string(np.datetime64(ep.since_ns, "ns"), unit="s")
        if ep.opened:
            detail = (f"{st}: leak rate of passing parts up {ep.excess_pa_s:.1f} Pa/s over the station's baseline "
                      f"since {since}Z, growing {ep.growth_pa_s_per_h:+.1f} Pa/s per hour: check the fixture seals")
        else:
            detail = f"{st}: leak rate back at the station's baseline (peak excess {ep.peak_pa_s:.1f} Pa/s)"
        return {"type": "alarm", "state": "open" if ep.opened else "closed", "kind": "leak_drift", "machine": st,
                "signal": f"{st}.leak_rate_pa_s", "start_ns": ep.since_ns,
                "end_ns": None if ep.opened else ep.ts_ns,
                "peak": round(min(1.0, max(0.0, ep.peak_pa_s) / self.settings.limit_pa_s), 4),
                "since_ns": ep.since_ns, "detected_ns": ep.ts_ns, "excess_pa_s": round(ep.excess_pa_s, 3),
                "growth_pa_s_per_h": round(ep.growth_pa_s_per_h, 3), "detail": detail,
                **({"action": {"target": self.settings.hold_target.replace("{station}", st), "value": 1}}
                   if ep.opened and self.settings.hold_target else {})}

    def state(self) -> dict[str, np.ndarray]:
        return {"cycle_state": self.cycle_state, "counters": self.counters, "tracker": self.tracker.state,
                "cycles": self.cycles}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "stations": len(self.stations), "cycles": int(self.cycles[0]),
                "aborted": int(self.counters[lk.G_ABORTED]), "bad_samples": int(self.counters[lk.G_BAD]),
                "implausible_temperatures": int(self.counters[lk.G_TEMP_BAD]),
                "suspect_temperature_sensors": int(self.counters[lk.G_SUSPECT])}
