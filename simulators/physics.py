"""Physics per machine template: shifts and duty cycles, load -> current -> temperature, counters, wear.

The plant file says which signals exist and their typical value (base, amplitude, noise, range);
this module says how the signals of one machine move *together*. It is keyed by template name and
signal name, so a plant file needs no simulator-only fields (PlantConfig forbids extras), and a
template it does not know keeps the plain per-signal sine.

Every machine has latent variables, evaluated as closed-form functions of simulated time (no state,
so any tick can be computed on its own and every process agrees):

- ``level`` (0..1): the shift pattern. Production runs two shifts, 06:00-22:00 (UTC, simulated
  clock) at full level, with 10-minute ramps; at night a machine either idles at a reduced level
  or is switched off (drawn per machine from the seed). A failed machine is at 0.
- ``cycle`` (0..1): the machine's own duty cycle, a sine with the template's period and a seeded
  phase.
- ``health`` (0 good .. 1 failure): wear progress, see below.

Roles (by signal name, within the templates listed in ``TEMPLATES``):

- LOAD (currents, powers, flows, forces, speeds): ``(base + amplitude * (2 cycle - 1)) * level``.
  All of a machine's load signals rise and fall together.
- THERMAL (winding, bearing, oil, motor ... temperatures): follow load through a first-order lag
  of ``lag_s`` (exact for the sine part: amplitude / sqrt(1 + (w tau)^2), phase atan(w tau); the
  shift level is taken ``lag_s`` earlier), between an ambient of min(base, 25) when off and base
  at full load; wear adds up to ``WEAR_HEATING_K`` kelvin (bearings and windings) as health^2.
- VIBRATION (``vibration_rms*``): scales with level; wear raises it. With four channels, they are
  read as bands of a spectrum that evolve differently with wear: 1 overall (health^2), 2 bearing
  defect band (rises first, health^1), 3 twice running speed (health^2), 4 high frequency (late,
  health^4).
- COUNTER (hours, strokes, parts, energy): ``base + rate * mean_level * t``, monotonic and
  quantised by the register type (integers round, so they step).
- RUNNING (``running`` bit): level > 0.05. FAULT_WORD (``fault_word``, ``alarm_word``): 0x10 while
  failed.
- Leak-test stations: ``test_pressure`` runs pressure-decay cycles (fill, stabilise, measure with
  a decay of ``decay_rate`` Pa/s, vent) of ``cycle_time`` seconds; a micro-leak event (faults)
  raises ``decay_rate``, ``leak_rate`` and ``helium_concentration`` and steepens the decay.

Wear to failure: a machine with wear has ``start_s`` and ``failure_s``; health rises linearly from
0 to 1 between them (its effect is nonlinear, as above), the true RUL is ``failure_s - t``. At
failure the machine stops (level 0, fault word set) for ``repair_s`` and then runs as new.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import numpy as np

from plantwire.plant import PlantConfig, SignalTable

__all__ = ["TEMPLATES", "Physics", "Role", "WearPlan", "machine_templates"]

WEAR_HEATING_K = 18.0
NIGHT_IDLE_LEVEL = 0.35
RAMP_H = 1.0 / 6.0
SHIFT_START_H, SHIFT_END_H = 6.0, 22.0
FAULT_WORD_FAILED = 0x10


class Role(enum.IntEnum):
    PLAIN = 0
    LOAD = 1
    THERMAL = 2
    VIBRATION = 3
    COUNTER = 4
    RUNNING = 5
    FAULT_WORD = 6
    LEAK_PRESSURE = 7


@dataclass(frozen=True, slots=True)
class TemplatePhysics:
    cycle_s: float  # duty-cycle period
    lag_s: float  # thermal time constant
    wears: bool  # rotating machinery that wears to failure
    counters: dict[str, float]  # signal name -> increments per second at full level


TEMPLATES: dict[str, TemplatePhysics] = {
    "compressor": TemplatePhysics(300.0, 600.0, True, {"run_hours": 1 / 3600, "energy_total": 11.0 / 3600,
                                                       "starts": 1 / 7200}),
    "press": TemplatePhysics(60.0, 900.0, True, {"stroke_count": 45 / 60, "parts_good": 0.99 * 45 / 60,
                                                 "parts_scrap": 0.01 * 45 / 60}),
    "conveyor": TemplatePhysics(180.0, 900.0, True, {"parts_count": 0.5}),
    "brazing_cell": TemplatePhysics(600.0, 1200.0, False, {"energy_total": 80.0 / 3600, "cycle_count": 1 / 60}),
    "leak_test": TemplatePhysics(45.0, 600.0, False, {"result_pass": 0.99 / 45, "result_fail": 0.01 / 45}),
    "energy_meter": TemplatePhysics(600.0, 600.0, False, {"energy_active": 72.0 / 3600,
                                                          "energy_reactive": 28.0 / 3600}),
    "welding_cell": TemplatePhysics(20.0, 600.0, True, {"seam_count": 1 / 52}),
}

_LOAD = re.compile(r"(current|power_active|power_reactive|power_apparent|motor_power|heater_power|fan_power|flow"
                   r"|tonnage|torque|speed|strokes_per_min|demand|capacity|load_kg|wire_feed|weld_voltage)")
_THERMAL = re.compile(r"^(winding_temp|bearing_temp|oil_temp|discharge_temp|motor_temp|gearbox_temp|pump_temp"
                      r"|torch_temp|robot_joint_temp|coolant_out_temp|die_temp|exhaust_temp)")
_WEAR_HEATED = re.compile(r"^(winding_temp|bearing_temp|motor_temp|gearbox_temp|robot_joint_temp)")
_VIBRATION = re.compile(r"^vibration_rms(_(\d+))?$")
# A micro-leak of magnitude M (extra pressure decay, Pa/s) shows on these signals as M x factor.
_LEAK_EFFECT = {"decay_rate": 1.0, "leak_rate": 0.05, "helium_concentration": 0.5}
_BAND_GAIN = {0: 3.0, 1: 3.0, 2: 5.0, 3: 2.5, 4: 4.0}
_BAND_POWER = {0: 2.0, 1: 2.0, 2: 1.0, 3: 2.0, 4: 4.0}


def machine_templates(plant: PlantConfig) -> list[str]:
    """Template name of every machine, in SignalTable.machine_ids order (expand's order)."""
    return [mg.template for mg in plant.machines for _ in range(mg.count)]


@dataclass(frozen=True, slots=True)
class WearPlan:
    """Machines that wear: machine index, start and failure (simulated s), repair time."""

    machine: np.ndarray  # int64
    start_s: np.ndarray
    failure_s: np.ndarray
    repair_s: np.ndarray
    fixed: np.ndarray  # bool: from the faults file (else drawn from the seed)

    @staticmethod
    def empty() -> WearPlan:
        z = np.zeros(0)
        return WearPlan(z.astype(np.int64), z, z, z, z.astype(bool))

    @staticmethod
    def draw(templates: list[str], seed: int, fraction: float, rul_days: tuple[float, float] = (2.0, 20.0),
             repair_s: float = 7200.0) -> WearPlan:
        """A seeded ``fraction`` of the wearing machines start at t=0 with RUL uniform in ``rul_days``."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3EA2]))
        wearing = np.array([i for i, t in enumerate(templates) if t in TEMPLATES and TEMPLATES[t].wears], np.int64)
        pick = wearing[rng.random(wearing.size) < fraction] if wearing.size else wearing
        rul = rng.uniform(rul_days[0] * 86400, rul_days[1] * 86400, pick.size)
        return WearPlan(pick, np.zeros(pick.size), rul, np.full(pick.size, repair_s), np.zeros(pick.size, bool))

    def merged(self, other: WearPlan) -> WearPlan:
        """``other`` replaces this plan's entries for the machines it names."""
        keep = ~np.isin(self.machine, other.machine)
        return WearPlan(*(np.concatenate([getattr(self, f)[keep], getattr(other, f)])
                          for f in ("machine", "start_s", "failure_s", "repair_s", "fixed")))


class Physics:
    """Closed-form values of the signals whose template has physics (see module docstring)."""

    def __init__(self, table: SignalTable, templates: list[str], seed: int, epoch_ns: int,
                 wear: WearPlan | None = None) -> None:
        if len(templates) != len(table.machine_ids):
            raise ValueError(f"{len(templates)} machine templates for {len(table.machine_ids)} machines")
        self.table = table
        self.epoch_s = epoch_ns / 1e9
        nm = len(templates)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9B15]))
        phys = [TEMPLATES.get(t) for t in templates]
        self.coupled = np.array([p is not None for p in phys], dtype=bool)
        cycle_s = np.array([p.cycle_s if p else 600.0 for p in phys])
        self.omega = 2 * np.pi / cycle_s
        self.phase = rng.uniform(0, 2 * np.pi, nm)
        self.night = np.where(rng.random(nm) < 0.4, 0.0, NIGHT_IDLE_LEVEL)
        self.lag_s = np.array([p.lag_s if p else 600.0 for p in phys])
        wt = self.omega * self.lag_s
        self.lag_gain = 1.0 / np.sqrt(1.0 + wt * wt)
        self.lag_phase = np.arctan(wt)
        self.duty = (self.night * (24 - (SHIFT_END_H - SHIFT_START_H)) + (SHIFT_END_H - SHIFT_START_H)) / 24 * 0.8
        # Wear per machine (inf = none).
        self.wear_start = np.full(nm, np.inf)
        self.wear_fail = np.full(nm, np.inf)
        self.repair_s = np.zeros(nm)
        wear = wear if wear is not None else WearPlan.empty()
        self.wear_start[wear.machine] = wear.start_s
        self.wear_fail[wear.machine] = wear.failure_s
        self.repair_s[wear.machine] = wear.repair_s
        self.wear = wear
        # Held machines (simulators.commands): a held station's own clock stands still.
        self.hold_since = np.full(nm, np.nan)  # simulated s the current hold began (NaN: not held)
        self.held_s = np.zeros(nm)  # total simulated s of past holds

        # Roles per signal row.
        n = len(table)
        role = np.zeros(n, dtype=np.int8)
        rate = np.zeros(n)
        band = np.zeros(n, dtype=np.int64)
        wear_heat = np.zeros(n)
        machine = table.machine
        for r, sid in enumerate(table.ids):
            m = int(machine[r])
            p = phys[m]
            if p is None:
                continue
            name = sid[len(table.machine_ids[m]) + 1 :]
            vib = _VIBRATION.match(name)
            if name in p.counters:
                role[r], rate[r] = Role.COUNTER, p.counters[name]
            elif name == "running":
                role[r] = Role.RUNNING
            elif name in ("fault_word", "alarm_word"):
                role[r] = Role.FAULT_WORD
            elif templates[m] == "leak_test" and name == "test_pressure":
                role[r] = Role.LEAK_PRESSURE
            elif vib:
                role[r], band[r] = Role.VIBRATION, int(vib.group(2) or 0)
            elif _THERMAL.match(name):
                role[r] = Role.THERMAL
                if _WEAR_HEATED.match(name):
                    wear_heat[r] = WEAR_HEATING_K
            elif _LOAD.search(name) and name != "power_factor":
                role[r] = Role.LOAD
        self.role = role
        self._pressure_row = {int(machine[r]): r for r in np.flatnonzero(role == Role.LEAK_PRESSURE).tolist()}
        self.rate = rate
        self.band_gain = np.array([_BAND_GAIN.get(b, 2.0) for b in band.tolist()])
        self.band_power = np.array([_BAND_POWER.get(b, 2.0) for b in band.tolist()])
        self.wear_heat = wear_heat
        # Leak-test helpers: the decay_rate and cycle_time rows of each machine (-1 if none).
        self.decay_row = np.full(nm, -1, dtype=np.int64)
        self.cycle_row = np.full(nm, -1, dtype=np.int64)
        self.leak_rows: dict[str, np.ndarray] = {n: np.full(nm, -1, dtype=np.int64) for n in _LEAK_EFFECT}
        for r, sid in enumerate(table.ids):
            m = int(machine[r])
            if templates[m] != "leak_test":
                continue
            name = sid[len(table.machine_ids[m]) + 1 :]
            if name == "decay_rate":
                self.decay_row[m] = r
            elif name == "cycle_time":
                self.cycle_row[m] = r
            if name in _LEAK_EFFECT:
                self.leak_rows[name][m] = r

    # -- holds (simulators.commands) ----------------------------------------------------------------
    def set_held(self, held: np.ndarray, t_s: float) -> None:
        """Machines ``held`` (bool per machine) are held from ``t_s`` on; the others are released at ``t_s``."""
        was = ~np.isnan(self.hold_since)
        release = was & ~held
        self.held_s[release] += np.maximum(t_s - self.hold_since[release], 0.0)
        self.hold_since[release] = np.nan
        self.hold_since[held & ~was] = t_s

    def own_time(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Time on machine ``m``'s own clock: the simulated time less the time it spent held."""
        since = self.hold_since[m]
        return np.where(np.isnan(since), t, np.minimum(t, since)) - self.held_s[m]

    def is_held(self, m: np.ndarray) -> np.ndarray:
        return ~np.isnan(self.hold_since[m])

    # -- latent variables --------------------------------------------------------------------------
    def level(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Shift level of machines ``m`` at times ``t_s`` (0 while failed)."""
        tod_h = np.mod(self.epoch_s + t_s, 86400.0) / 3600.0
        with np.errstate(over="ignore"):
            day = 1.0 / (1.0 + np.exp(-(tod_h - SHIFT_START_H) / RAMP_H * 4)) / (
                1.0 + np.exp(-(SHIFT_END_H - tod_h) / RAMP_H * 4))
        night = self.night[m]
        lvl = night + (1.0 - night) * day
        return np.where(self.failed(t_s, m), 0.0, lvl)

    def failed(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        f = self.wear_fail[m]
        return (t_s >= f) & (t_s < f + self.repair_s[m])

    def health(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Wear progress 0..1 (0 without wear, and again after the repair)."""
        start, fail = self.wear_start[m], self.wear_fail[m]
        with np.errstate(invalid="ignore", divide="ignore"):
            h = (t_s - start) / (fail - start)
        return np.where((t_s >= start) & (t_s < fail), np.clip(h, 0.0, 1.0), 0.0)

    def rul_s(self, t_s: float) -> np.ndarray:
        """True remaining useful life of every machine in the wear plan at ``t_s`` (NaN outside its life)."""
        w = self.wear
        return np.where((t_s >= w.start_s) & (t_s < w.failure_s), w.failure_s - t_s, np.nan)

    def micro_leak(self, t_s: float, machine: np.ndarray, magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, deltas) a micro-leak of ``magnitude`` Pa/s adds on leak-test ``machine`` at ``t_s``."""
        rows: list[np.ndarray] = []
        deltas: list[np.ndarray] = []
        for name, factor in _LEAK_EFFECT.items():
            r = self.leak_rows[name][machine]
            ok = r >= 0
            rows.append(r[ok])
            deltas.append(magnitude[ok] * factor)
        # the measured pressure decays faster during the measuring phase
        pr = np.array([self._pressure_row.get(int(mm), -1) for mm in machine.tolist()], dtype=np.int64)
        ok = pr >= 0
        rows.append(pr[ok])
        deltas.append(-magnitude[ok] * 1e-5 * self.measure_s(np.full(int(ok.sum()), t_s), machine[ok]))
        return np.concatenate(rows), np.concatenate(deltas)

    # -- values ------------------------------------------------------------------------------------
    def evaluate(self, t_s: np.ndarray | float, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the physics value of every row with a role into ``out`` (same shape as ``rows``).

        ``t_s`` is a scalar or one time per row. Rows without a role are left untouched.
        """
        role = self.role[rows]
        sel = np.flatnonzero(role != Role.PLAIN)
        if sel.size == 0:
            return out
        r = rows[sel]
        role = role[sel]
        t = np.broadcast_to(np.asarray(t_s, dtype=np.float64), rows.shape)[sel]
        m = self.table.machine[r]
        tb = self.table
        base, amp = tb.base[r], tb.amplitude[r]
        level = self.level(t, m)
        ang = self.omega[m] * t + self.phase[m]
        cycle = 0.5 + 0.5 * np.sin(ang)
        health = self.health(t, m)
        v = np.empty(sel.size)

        k = role == Role.LOAD
        v[k] = (base[k] + amp[k] * (2 * cycle[k] - 1)) * level[k]
        k = role == Role.THERMAL
        if k.any():
            mk = m[k]
            lag_level = self.level(t[k] - self.lag_s[mk], mk)
            lag_cycle = 0.5 + 0.5 * self.lag_gain[mk] * np.sin(ang[k] - self.lag_phase[mk])
            ambient = np.minimum(base[k], 25.0)
            v[k] = (ambient + (base[k] - ambient + amp[k] * (2 * lag_cycle - 1)) * (0.25 + 0.75 * lag_level)
                    + self.wear_heat[r[k]] * health[k] ** 2)
        k = role == Role.VIBRATION
        v[k] = ((base[k] + amp[k] * (2 * cycle[k] - 1)) * (0.2 + 0.8 * level[k])
                * (1.0 + self.band_gain[r[k]] * health[k] ** self.band_power[r[k]]))
        k = role == Role.COUNTER
        v[k] = base[k] + self.rate[r[k]] * self.duty[m[k]] * np.maximum(self.own_time(t[k], m[k]), 0.0)
        k = role == Role.RUNNING
        v[k] = (level[k] > 0.05).astype(np.float64)
        k = role == Role.FAULT_WORD
        v[k] = np.where(self.failed(t[k], m[k]), float(FAULT_WORD_FAILED), 0.0)
        k = role == Role.LEAK_PRESSURE
        if k.any():
            v[k] = self.leak_pressure(t[k], m[k], base[k], amp[k], tb.high[r[k]], level[k], 0.0)
        out[sel] = v
        return out

    def measure_s(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Seconds since the measuring phase of leak-test machines ``m`` began (0 outside it)."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        p = np.mod(self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s, cycle_s) / cycle_s
        return np.where((p < 0.9) & ~self.is_held(m), np.clip(p - 0.45, 0.0, 0.45), 0.0) * cycle_s

    def leak_pressure(self, t: np.ndarray, m: np.ndarray, base: np.ndarray, amp: np.ndarray, high: np.ndarray,
                      level: np.ndarray, extra_decay_pa_s: np.ndarray | float) -> np.ndarray:
        """Pressure-decay test cycle: fill 18 %, stabilise 27 %, measure 45 % (decaying), vent 10 %."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        dec_row = self.decay_row[m]
        decay = np.where(dec_row >= 0, self.table.base[np.maximum(dec_row, 0)], 2.0) + extra_decay_pa_s
        peak = 0.9 * np.fmin(high, base + amp)
        p = np.mod(self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s, cycle_s) / cycle_s
        measure_s = np.clip(p - 0.45, 0.0, 0.45) * cycle_s
        v = np.select([p < 0.18, p < 0.45, p < 0.9],
                      [peak * p / 0.18, peak, peak - decay * 1e-5 * measure_s],
                      default=peak * (1.0 - (p - 0.9) / 0.1))
        # a held station stops cycling with its part vented
        return np.where((level > 0.05) & ~self.is_held(m), v, 0.0)
