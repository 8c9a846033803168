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
- COUNTER (hours, strokes, parts, energy): monotonic, quantised by the register type (integers round,
  so they step). Energy counters (``energy_total``, ``energy_active``, ``energy_reactive``) integrate the
  machine's load: ``base + rate * integral(level * efficiency)``, so a meter reads what the machine drew
  (idle nights, stops and failures included). Production counters of the templates in ``PRODUCTION``
  (parts, strokes, seams, cycles), and the result counters of the test stations in ``TESTERS``,
  integrate the *production* rate, which is the day shift's shape and 0 while failed: a machine idling
  at night draws power and makes nothing. Other counters (run hours, starts) are
  ``base + rate * mean_level * t``. (Before 2026-12-03 every
  counter was the last form, so energy and parts rose at the same rate day and night: realism for the
  energy agent, ``bench/energy_eval.py``.)
- RUNNING (``running`` bit): level > 0.05. FAULT_WORD (``fault_word``, ``alarm_word``): 0x10 while
  failed.
- Leak-test stations: ``test_pressure`` runs pressure-decay cycles (fill, stabilise, measure with
  a decay of ``decay_rate`` Pa/s, vent) of ``cycle_time`` seconds while parts come (``cycling``: the
  production shape above 0.5, so on shift; an idle or switched-off station at night stands vented, and
  its result counters stand with it -- before 2026-12-03 they cycled and counted day and night); a
  micro-leak event (faults) raises ``decay_rate``, ``leak_rate`` and ``helium_concentration`` and steepens the decay.
  Temperature (realism added 2026-12-03 for the leak-test agent, issue 18): each part arrives at its
  own temperature (``part_temp`` = the signal's slow sine plus a per-cycle offset uniform in
  ``PART_DT_K``, as parts come warm or cool from washing and brazing) and, in the fixture, relaxes
  towards the chamber: the gas in the part cools or warms with it, which the measured decay shows
  as ``P / T_abs * (part_temp - chamber_temp) / GAS_TAU_S`` Pa/s on top of the leak (the ideal gas
  law at constant volume). This is the dominant error of real pressure-decay testing and why
  testers compensate for temperature. ``test_pressure``'s noise in the template is that of a
  leak tester's transducer (50 Pa, not the 5 kPa of a plain gauge it had before), without which no
  decay of tens of Pa/s is measurable at all. ``valve_state`` follows the cycle (fill 1, stabilise and
  measure 2, vent 4) and reads 0 while the station stands (realism added 2026-12-03, issue 15 IDLE: it was
  a constant 5).

Energy faults (``EnergyPlan``, ground truth for ``bench/energy_eval.py``): a machine **left running idle**
on a night (its night level raised to ``NIGHT_IDLE_LEVEL`` between the given times: it draws power and,
off shift, makes nothing), and a compressor **losing efficiency** (a step: from ``start_s`` its power-draw
signals -- ``POWER_DRAW`` -- are ``1 + factor`` times what they were for the same load and output, as a
failing unloader valve or a fouled cooler does; its energy counter follows).

Wear to failure: a machine with wear has ``start_s`` and ``failure_s``; health rises linearly from
0 to 1 between them (its effect is nonlinear, as above), the true RUL is ``failure_s - t``. At
failure the machine stops (level 0, fault word set) for ``repair_s`` and then runs as new.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

import numpy as np

from plantwire.plant import PlantConfig, SignalTable

__all__ = ["POWER_DRAW", "PRODUCTION", "TEMPLATES", "TESTERS", "EnergyPlan", "Physics", "Role", "WearPlan",
           "machine_templates"]

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
    PART_TEMP = 8
    VALVE_STATE = 9


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

# Counters that integrate the load (energy) and templates whose counters integrate production (parts).
ENERGY_COUNTERS = frozenset({"energy_total", "energy_active", "energy_reactive"})
PRODUCTION = frozenset({"press", "conveyor", "welding_cell", "brazing_cell"})
# Test stations: they cycle only while parts come (the production shape above 0.5), and their result
# counters count those cycles; powered but without parts (an idle night) they stand, drawing idle power.
TESTERS = frozenset({"leak_test"})
# Load signals that draw electrical power: a machine that loses efficiency draws more on these.
POWER_DRAW = re.compile(r"^(motor_power|motor_current|power_active|power_apparent|current_l\d|heater_power_\d"
                        r"|fan_power|pump_current)$")
_LOAD = re.compile(r"(current|power_active|power_reactive|power_apparent|motor_power|heater_power|fan_power|flow"
                   r"|tonnage|torque|speed|strokes_per_min|demand|capacity|load_kg|wire_feed|weld_voltage)")
_THERMAL = re.compile(r"^(winding_temp|bearing_temp|oil_temp|discharge_temp|motor_temp|gearbox_temp|pump_temp"
                      r"|torch_temp|robot_joint_temp|coolant_out_temp|die_temp|exhaust_temp)")
_WEAR_HEATED = re.compile(r"^(winding_temp|bearing_temp|motor_temp|gearbox_temp|robot_joint_temp)")
_VIBRATION = re.compile(r"^vibration_rms(_(\d+))?$")
# A micro-leak of magnitude M (extra pressure decay, Pa/s) shows on these signals as M x factor.
_LEAK_EFFECT = {"decay_rate": 1.0, "leak_rate": 0.05, "helium_concentration": 0.5}
PART_DT_K = (-1.0, 2.5)  # per-part temperature offset at test, K (uniform)
GAS_TAU_S = 1200.0  # time constant of the test gas's temperature following the part's, s
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


@dataclass(frozen=True, slots=True)
class EnergyPlan:
    """Energy faults (module docstring): machines left running idle, and efficiency steps."""

    idle_machine: np.ndarray  # int64
    idle_start_s: np.ndarray
    idle_end_s: np.ndarray
    eff_machine: np.ndarray  # int64, at most one step per machine
    eff_start_s: np.ndarray
    eff_factor: np.ndarray  # extra draw, 0.2 = +20 %

    @staticmethod
    def empty() -> EnergyPlan:
        z = np.zeros(0)
        return EnergyPlan(z.astype(np.int64), z, z, z.astype(np.int64), z, z)

    @staticmethod
    def draw(templates: list[str], seed: int, epoch_ns: int, days: int, *, idle_nights_per_machine: float = 0.3,
             eff_fraction: float = 0.5, eff_after_days: float = 1.0, factor: tuple[float, float] = (0.15, 0.35),
             eff_templates: tuple[str, ...] = ("compressor",)) -> EnergyPlan:
        """Seeded faults over ``days``: each production machine is left idle on a night with the given
        probability per night (22:30 to 05:30), and ``eff_fraction`` of the ``eff_templates`` machines lose
        efficiency at a time uniform in [``eff_after_days``, ``days``) with a factor uniform in ``factor``."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE4E6]))
        epoch_s = epoch_ns / 1e9
        first_night = (math.floor(epoch_s / 86400) * 86400 + 22.5 * 3600) - epoch_s
        prod = [m for m, t in enumerate(templates) if t in PRODUCTION]
        im, i0, i1 = [], [], []
        for d in range(days):
            for m in prod:
                if rng.random() < idle_nights_per_machine:
                    im.append(m)
                    i0.append(first_night + d * 86400)
                    i1.append(first_night + d * 86400 + 7 * 3600)
        cand = np.array([m for m, t in enumerate(templates) if t in eff_templates], dtype=np.int64)
        pick = cand[rng.random(cand.size) < eff_fraction] if cand.size else cand
        start = rng.uniform(eff_after_days * 86400, max(days, eff_after_days + 0.1) * 86400, pick.size)
        fac = rng.uniform(factor[0], factor[1], pick.size)
        return EnergyPlan(np.array(im, dtype=np.int64), np.array(i0, dtype=float), np.array(i1, dtype=float),
                          pick, start, fac)


class _DayShape:
    """The day shift's shape (0 at night .. 1 on shift) and its integral, tabulated once per Physics."""

    def __init__(self) -> None:
        self.grid_s = np.arange(0.0, 86400.0 + 5.0, 5.0)
        f = self.shape(self.grid_s / 3600.0)
        self.cum = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) * 0.5 * 5.0)])
        self.per_day = float(self.cum[-1])

    @staticmethod
    def shape(tod_h: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-(tod_h - SHIFT_START_H) / RAMP_H * 4)) / (
                1.0 + np.exp(-(SHIFT_END_H - tod_h) / RAMP_H * 4))

    def integral(self, abs_s: np.ndarray) -> np.ndarray:
        """Integral of the shape from a fixed origin to absolute time ``abs_s`` (seconds since 1970)."""
        day = np.floor(abs_s / 86400.0)
        return day * self.per_day + np.interp(abs_s - day * 86400.0, self.grid_s, self.cum)


class Physics:
    """Closed-form values of the signals whose template has physics (see module docstring)."""

    def __init__(self, table: SignalTable, templates: list[str], seed: int, epoch_ns: int,
                 wear: WearPlan | None = None, energy: EnergyPlan | None = None) -> None:
        if len(templates) != len(table.machine_ids):
            raise ValueError(f"{len(templates)} machine templates for {len(table.machine_ids)} machines")
        self.table = table
        self.epoch_s = epoch_ns / 1e9
        nm = len(templates)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9B15]))
        phys = [TEMPLATES.get(t) for t in templates]
        self.coupled = np.array([p is not None for p in phys], dtype=bool)
        self.tester = np.array([t in TESTERS for t in templates], dtype=bool)
        self.producer = np.array([t in PRODUCTION for t in templates], dtype=bool)
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
        self.energy = energy if energy is not None else EnergyPlan.empty()
        self._shape = _DayShape()
        self._templates = list(templates)
        # Held machines (simulators.commands): a held station's own clock stands still.
        self.hold_since = np.full(nm, np.nan)  # simulated s the current hold began (NaN: not held)
        self.held_s = np.zeros(nm)  # total simulated s of past holds

        # Roles per signal row.
        n = len(table)
        role = np.zeros(n, dtype=np.int8)
        rate = np.zeros(n)
        band = np.zeros(n, dtype=np.int64)
        wear_heat = np.zeros(n)
        counter_kind = np.zeros(n, dtype=np.int8)  # 0 mean-level rate, 1 energy (load), 2 production
        draw = np.zeros(n, dtype=bool)  # power-draw load signals (efficiency)
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
                if name in ENERGY_COUNTERS:
                    counter_kind[r] = 1
                elif templates[m] in PRODUCTION or templates[m] in TESTERS:
                    counter_kind[r] = 2
            elif name == "running":
                role[r] = Role.RUNNING
            elif name in ("fault_word", "alarm_word"):
                role[r] = Role.FAULT_WORD
            elif templates[m] == "leak_test" and name == "test_pressure":
                role[r] = Role.LEAK_PRESSURE
            elif templates[m] == "leak_test" and name == "part_temp":
                role[r] = Role.PART_TEMP
            elif templates[m] == "leak_test" and name == "valve_state":
                role[r] = Role.VALVE_STATE
            elif vib:
                role[r], band[r] = Role.VIBRATION, int(vib.group(2) or 0)
            elif _THERMAL.match(name):
                role[r] = Role.THERMAL
                if _WEAR_HEATED.match(name):
                    wear_heat[r] = WEAR_HEATING_K
            elif _LOAD.search(name) and name != "power_factor":
                role[r] = Role.LOAD
                draw[r] = POWER_DRAW.match(name) is not None
        self.role = role
        self.counter_kind = counter_kind
        self.draw = draw
        self._pressure_row = {int(machine[r]): r for r in np.flatnonzero(role == Role.LEAK_PRESSURE).tolist()}
        self.rate = rate
        self.band_gain = np.array([_BAND_GAIN.get(b, 2.0) for b in band.tolist()])
        self.band_power = np.array([_BAND_POWER.get(b, 2.0) for b in band.tolist()])
        self.wear_heat = wear_heat
        # Leak-test helpers: the decay_rate and cycle_time rows of each machine (-1 if none).
        self.decay_row = np.full(nm, -1, dtype=np.int64)
        self.cycle_row = np.full(nm, -1, dtype=np.int64)
        self.part_row = np.full(nm, -1, dtype=np.int64)
        self.chamber_row = np.full(nm, -1, dtype=np.int64)
        # the per-signal phases of simulators.signals (same seed): temperatures' slow sines, recomputed here
        self._seed = int(seed)
        self._sig_phase = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).uniform(0.0, 2.0 * np.pi, n)
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
            elif name == "part_temp":
                self.part_row[m] = r
            elif name == "chamber_temp":
                self.chamber_row[m] = r
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
        if self.energy.idle_machine.size:
            night = np.where(self.left_idle(t_s, m), np.maximum(night, NIGHT_IDLE_LEVEL), night)
        lvl = night + (1.0 - night) * day
        return np.where(self.failed(t_s, m), 0.0, lvl)

    def left_idle(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """True where machine ``m`` is left running idle at ``t_s`` (EnergyPlan)."""
        e = self.energy
        out = np.zeros(np.broadcast(t_s, m).shape, dtype=bool)
        for k in range(e.idle_machine.size):
            out |= (m == e.idle_machine[k]) & (t_s >= e.idle_start_s[k]) & (t_s < e.idle_end_s[k])
        return out

    def efficiency(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Power drawn relative to a healthy machine for the same work (1 + factor after an efficiency step)."""
        e = self.energy
        out = np.ones(np.broadcast(t_s, m).shape)
        for k in range(e.eff_machine.size):
            out = np.where((m == e.eff_machine[k]) & (t_s >= e.eff_start_s[k]), 1.0 + e.eff_factor[k], out)
        return out

    def production(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Production rate 0..1 of machines ``m`` (the day shift's shape; 0 while failed)."""
        tod_h = np.mod(self.epoch_s + t_s, 86400.0) / 3600.0
        return np.where(self.failed(t_s, m), 0.0, self._shape.shape(tod_h))

    def _window(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Integral of the day shape over [a, b] (simulated seconds; b >= a)."""
        return self._shape.integral(self.epoch_s + b) - self._shape.integral(self.epoch_s + a)

    def production_integral(self, t_s: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Integral of ``production`` from 0 to ``t_s``."""
        t = np.maximum(t_s, 0.0)
        total = self._window(np.zeros_like(t), t)
        f, rep_s = self.wear_fail[m], self.repair_s[m]
        hit = np.isfinite(f) & (t > f)
        fa = np.where(hit, f, 0.0)
        fb = np.where(hit, np.minimum(t, f + rep_s), 0.0)
        return total - np.where(hit, self._window(fa, fb), 0.0)

    def level_integral(self, t_s: np.ndarray, m: np.ndarray, *, weighted: bool = False) -> np.ndarray:
        """Integral of ``level`` (times ``efficiency`` when ``weighted``) from 0 to ``t_s``, closed form.

        Where an idle window and a failure overlap, the idle window's extra is counted (an approximation
        the energy bench does not meet: its plans keep them apart)."""
        t = np.maximum(np.asarray(t_s, dtype=np.float64), 0.0)
        m = np.asarray(m)
        night = self.night[m]
        zero = np.zeros_like(t)
        total = night * t + (1.0 - night) * self._window(zero, t)
        f, rep_s = self.wear_fail[m], self.repair_s[m]
        hit = np.isfinite(f) & (t > f)
        fa = np.where(hit, f, 0.0)
        fb = np.where(hit, np.minimum(t, f + rep_s), 0.0)
        total = total - np.where(hit, night * (fb - fa) + (1.0 - night) * self._window(fa, fb), 0.0)
        e = self.energy
        for k in range(e.idle_machine.size):
            sel = (m == e.idle_machine[k]) & (t > e.idle_start_s[k])
            if not sel.any():
                continue
            a = np.full_like(t, e.idle_start_s[k])
            b = np.clip(t, a, e.idle_end_s[k])
            extra = np.maximum(NIGHT_IDLE_LEVEL - night, 0.0) * ((b - a) - self._window(a, b))
            total = total + np.where(sel, extra, 0.0)
        if weighted:
            for k in range(e.eff_machine.size):
                sel = (m == e.eff_machine[k]) & (t > e.eff_start_s[k])
                if not sel.any():
                    continue
                t_e = np.full_like(t, e.eff_start_s[k])
                base = self.level_integral(t_e, m)
                total = total + np.where(sel, e.eff_factor[k] * (total - base), 0.0)
        return total

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
        kd = k & self.draw[r]
        if kd.any() and self.energy.eff_machine.size:
            v[kd] *= self.efficiency(t[kd], m[kd])
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
        if k.any():
            ck = self.counter_kind[r[k]]
            mk = m[k]
            tk = self.own_time(t[k], mk)  # a held machine's counters stand still
            mean_rate = self.duty[mk] * np.maximum(tk, 0.0)
            integral = np.where(ck == 1, self.level_integral(tk, mk, weighted=True),
                                np.where(ck == 2, self.production_integral(tk, mk), mean_rate))
            v[k] = base[k] + self.rate[r[k]] * integral
        k = role == Role.RUNNING
        v[k] = (level[k] > 0.05).astype(np.float64)
        k = role == Role.FAULT_WORD
        v[k] = np.where(self.failed(t[k], m[k]), float(FAULT_WORD_FAILED), 0.0)
        k = role == Role.LEAK_PRESSURE
        if k.any():
            v[k] = self.leak_pressure(t[k], m[k], base[k], amp[k], tb.high[r[k]], level[k], 0.0)
        k = role == Role.VALVE_STATE
        if k.any():
            v[k] = self.valve_state(t[k], m[k], level[k])
        k = role == Role.PART_TEMP
        if k.any():
            v[k] = self._sine(r[k], t[k]) + self.part_offset_k(t[k], m[k])
        out[sel] = v
        return out

    def _sine(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        tb = self.table
        return tb.base[rows] + tb.amplitude[rows] * np.sin(2.0 * np.pi / tb.period_s[rows] * t + self._sig_phase[rows])

    def _cycle(self, t: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cycle number, position 0..1 in the cycle) of leak-test machines on their own clock."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        x = (self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s) / cycle_s
        return np.floor(x), x - np.floor(x)

    def part_offset_k(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Temperature offset of the part under test (one draw per cycle, a hash of seed, machine and cycle)."""
        c, _ = self._cycle(t, m)
        key = (m.astype(np.uint64) + np.uint64(self._seed & 0xFFFF) * np.uint64(0x10001))
        key *= np.uint64(0xBF58476D1CE4E5B9)
        x = c.astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ key
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
        frac = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return PART_DT_K[0] + (PART_DT_K[1] - PART_DT_K[0]) * frac

    def thermal_decay_pa_s(self, t: np.ndarray, m: np.ndarray, peak_bar: np.ndarray) -> np.ndarray:
        """Apparent decay (Pa/s) from the part's gas relaxing towards the chamber temperature (0 without rows)."""
        pr, cr = self.part_row[m], self.chamber_row[m]
        ok = (pr >= 0) & (cr >= 0)
        part = self._sine(np.maximum(pr, 0), t) + self.part_offset_k(t, m)
        chamber = self._sine(np.maximum(cr, 0), t)
        dt_k = part - chamber
        return np.where(ok, peak_bar * 1e5 / (273.15 + chamber) * dt_k / GAS_TAU_S, 0.0)

    def cycling(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """True where test stations ``m`` run test cycles: parts came when the current cycle began (production
        above half its rate then) and the station is not held. A station without parts does not cycle (before
        2026-12-03 it cycled whenever switched on, night idle included, which no tester does: realism, issue 18).
        A cycle that has begun runs to its end (a tester finishes the part in its fixture; until 2026-12-03 19:30
        the shift's end cut a cycle off mid-test and its start began one mid-test, a pressure jumping from 0 to
        30 bar or back within one second: realism, issue 15 IDLE); a hold still vents at once."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        p = np.mod(self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s, cycle_s) / cycle_s
        return (self.production(t - p * cycle_s, m) > 0.5) & ~self.is_held(m)

    def idle(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """True where machines ``m`` are powered but not producing: test stations switched on without parts (or
        held), production machines (``PRODUCTION``: their part counters stand) idling off shift. Ground truth for
        the evaluation of the detectors' IDLE state (``bench/sim_eval.py``, ``bench/idle_eval.py``)."""
        on = self.level(t, m) > 0.05
        return on & np.where(self.tester[m], ~self.cycling(t, m), self.producer[m] & (self.production(t, m) <= 0.5))

    def measure_s(self, t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Seconds since the measuring phase of leak-test machines ``m`` began (0 outside it)."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        p = np.mod(self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s, cycle_s) / cycle_s
        return np.where((p < 0.9) & self.cycling(t, m), np.clip(p - 0.45, 0.0, 0.45), 0.0) * cycle_s

    def valve_state(self, t: np.ndarray, m: np.ndarray, level: np.ndarray) -> np.ndarray:
        """The station's valve word over its cycle: fill valve 1 (fill), test circuit isolated 2 (stabilise,
        measure), vent valve 4 (vent); 0 standing (no part under test: valves de-energised). Before 2026-12-03 the
        word read a constant 5 day and night; a real station's valves follow its cycle (realism, issue 15: the
        station's own statement that it stands idle, ``OperatingStateSettings.idle``)."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        p = np.mod(self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s, cycle_s) / cycle_s
        word = np.select([p < 0.18, p < 0.9], [1.0, 2.0], default=4.0)
        return np.where((level > 0.05) & self.cycling(t, m), word, 0.0)

    def leak_pressure(self, t: np.ndarray, m: np.ndarray, base: np.ndarray, amp: np.ndarray, high: np.ndarray,
                      level: np.ndarray, extra_decay_pa_s: np.ndarray | float) -> np.ndarray:
        """Pressure-decay test cycle: fill 18 %, stabilise 27 %, measure 45 % (decaying), vent 10 %."""
        cyc_row = self.cycle_row[m]
        cycle_s = np.where(cyc_row >= 0, self.table.base[np.maximum(cyc_row, 0)], 45.0)
        dec_row = self.decay_row[m]
        decay = np.where(dec_row >= 0, self.table.base[np.maximum(dec_row, 0)], 2.0) + extra_decay_pa_s
        peak = 0.9 * np.fmin(high, base + amp)
        decay = decay + self.thermal_decay_pa_s(t, m, peak)
        p = np.mod(self.own_time(t, m) + self.phase[m] / (2 * np.pi) * cycle_s, cycle_s) / cycle_s
        measure_s = np.clip(p - 0.45, 0.0, 0.45) * cycle_s
        v = np.select([p < 0.18, p < 0.45, p < 0.9],
                      [peak * p / 0.18, peak, peak - decay * 1e-5 * measure_s],
                      default=peak * (1.0 - (p - 0.9) / 0.1))
        # a held station, or one without parts (off shift, switched off or failed), stands with its part vented
        return np.where((level > 0.05) & self.cycling(t, m), v, 0.0)
