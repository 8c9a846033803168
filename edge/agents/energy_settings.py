"""Settings of the energy agent (``agents.energy`` in the edge config); see ``edge.agents.energy``.

Signals are found by their name within each machine's template, first match wins, so one block serves
a plant of mixed templates: a machine with a measured power signal uses it; one without it but with
current (and voltage, power factor) has its power computed; one with an energy counter has its energy
taken from the counter's increments, else integrated from power.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edge.agents.base import AgentSettings


class EnergySettings(AgentSettings):
    templates: list[str] = Field(default_factory=lambda: ["*"], description="machine templates to account (globs)")
    power: list[str] = Field(default_factory=lambda: ["power_active", "motor_power", "total_power", "fan_power"],
                             description="measured active power signal (kW), first name a machine has")
    current: list[str] = Field(default_factory=lambda: ["motor_current", "current_l1", "pump_current", "current"],
                               description="phase current (A), used when a machine has no power signal")
    voltage: list[str] = Field(default_factory=lambda: ["voltage_l1", "voltage"],
                               description="line-to-line voltage (V); nominal_voltage_v when a machine has none")
    power_factor: list[str] = Field(default_factory=lambda: ["power_factor"],
                                    description="power factor; nominal_power_factor when a machine has none")
    nominal_voltage_v: float = Field(default=400.0, gt=0)
    nominal_power_factor: float = Field(default=0.85, gt=0, le=1)
    phases: int = Field(default=3, description="3: P = sqrt(3) V I pf; 1: P = V I pf")
    energy_counter: list[str] = Field(default_factory=lambda: ["energy_active", "energy_total"],
                                      description="cumulative active energy counter (kWh)")
    counter_wrap_kwh: float = Field(default=0.0, ge=0,
                                    description="value at which the energy counter wraps to 0 (0: never wraps)")
    counter_reset_kwh: float = Field(
        default=1.0, gt=0,
        description="a counter step down by more than this is a reset (the new reading counts from 0), "
                    "a smaller one is noise and ignored")
    max_counter_step_kwh: float = Field(
        default=1000.0, gt=0, description="an increment above this between two readings is a glitch, not energy")
    good_parts: list[str] = Field(default_factory=lambda: ["parts_good", "result_pass", "parts_count", "seam_count",
                                                           "cycle_count"],
                                  description="production counter of good parts")
    running: list[str] = Field(default_factory=lambda: ["running"], description="running state bit")
    load: list[str] = Field(default_factory=lambda: ["capacity", "strokes_per_min", "belt_speed", "speed"],
                            description="a load/output rate signal the baseline regresses on besides parts")
    interval_s: float = Field(default=60.0, ge=1, description="energy interval emitted per machine")
    demand_window_s: float = Field(default=900.0, ge=60, description="demand interval (utilities: 15 minutes)")
    shift_starts_h: list[float] = Field(default_factory=lambda: [6.0, 14.0, 22.0],
                                        description="shift start hours of day (UTC + utc_offset_h)")
    utc_offset_h: float = Field(default=0.0, ge=-14, le=14)
    lines: dict[str, list[str]] = Field(
        default_factory=dict,
        description="line id -> machine id globs; default: a machine's line is its id up to the last '.'")
    areas: dict[str, list[str]] = Field(default_factory=dict,
                                        description="area id -> line id globs (default: one area)")
    site_area: str = Field(default="site", description="area id of lines no area names")
    off_power_kw: float = Field(default=0.1, ge=0, description="a machine drawing less than this is off, not idle")
    idle_power_fraction: float = Field(
        default=0.05, ge=0, le=1,
        description="a running machine that makes no parts draws idle energy; below this fraction of its "
                    "learnt working power it counts as off")
    idle_after_s: float = Field(default=300.0, gt=0,
                                description="a machine with a parts counter is idle once no part came for this long")
    idle_event_s: float = Field(default=1800.0, gt=0,
                                description="idle (drawing power, no parts) this long opens an energy_idle event")
    max_gap_s: float = Field(default=30.0, gt=0, description="power samples further apart are not integrated across")
    baseline_bins: int = Field(default=10, ge=1, le=64, description="load bins of the energy-vs-load baseline")
    baseline_min_count: int = Field(default=5, ge=1, description="intervals a bin needs before it is judged")
    baseline_intervals: int = Field(default=30, ge=2, description="intervals of learning before excess is judged")
    baseline_forgetting: float = Field(default=0.999, gt=0.9, le=1.0,
                                       description="recursive least squares forgetting per interval")
    excess_ratio: float = Field(default=0.15, gt=0,
                                description="the smallest loss of efficiency to find: energy > (1 + ratio) x baseline; "
                                            "the CUSUM's reference is half of it")
    excess_kwh: float = Field(default=0.01, ge=0,
                              description="an interval over the baseline by less than this adds no evidence of excess")
    excess_cusum_h: float = Field(
        default=2.0, gt=0,
        description="the excess CUSUM (sum of ratio - excess_ratio / 2 over intervals) that opens energy_excess; "
                    "2.0 chosen on bench/energy_eval.py seed 1 (fewest false events; bench/RESULTS.md)")
    clear_intervals: int = Field(default=10, ge=1, description="consecutive intervals within before it closes")
    steady_intervals: int = Field(
        default=5, ge=0, le=60,
        description="a machine's baseline is judged and learnt only in steady operation: its running state the "
                    "same for the last 2 x this many intervals, and the mean load and power of the last this-many "
                    "within steady_tolerance of the this-many before (0: every interval, no steadiness filter)")
    steady_tolerance: float = Field(
        default=0.1, gt=0, le=1,
        description="steadiness: the allowed change of the mean power (relative to the machine's working power) "
                    "and of the mean load (relative to its range; a parts count also gets 2 parts / "
                    "steady_intervals for its whole-part steps) between the two halves of the window; 5 and 0.1 "
                    "chosen on bench/energy_eval.py seed 1 (bench/RESULTS.md)")

    @model_validator(mode="after")
    def _check(self) -> EnergySettings:
        if self.phases not in (1, 3):
            raise ValueError("phases must be 1 or 3")
        if self.demand_window_s % self.interval_s:
            raise ValueError("demand_window_s must be a multiple of interval_s")
        if any(not 0 <= h < 24 for h in self.shift_starts_h):
            raise ValueError("shift_starts_h: hours in [0, 24)")
        return self
