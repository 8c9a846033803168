"""Settings of the leak-test agent (``agents.leak_test`` in the edge config); see ``edge.agents.leaktest``."""

from __future__ import annotations

import enum

from pydantic import Field

from edge.agents.base import AgentSettings


class Compensation(enum.StrEnum):
    """Temperature compensation of the decay: the station's own fit, the prior ``gas_tau_s`` only, or none."""

    LEARN = "learn"
    PRIOR = "prior"
    OFF = "off"


class LeakTestSettings(AgentSettings):
    templates: list[str] = Field(default_factory=lambda: ["leak_test"], description="leak-test station templates")
    pressure: str = Field(default="test_pressure", description="test pressure (bar gauge)")
    part_temp: str = Field(default="part_temp", description="part temperature (degC)")
    chamber_temp: str = Field(default="chamber_temp", description="chamber / fixture temperature (degC)")
    stabilise_time: str = Field(default="stabilise_time", description="the station's stabilisation timer (s)")
    measure_time: str = Field(default="measure_time", description="the station's measuring timer (s)")
    limit_pa_s: float = Field(default=100.0, gt=0, description="a part fails above this leak rate (Pa/s)")
    detectable_pa_s: float = Field(default=20.0, gt=0,
                                   description="smallest rise of a station's leak rate it must find (Pa/s)")
    cusum_h: float = Field(default=1.0, gt=0, description="drift alarm threshold, in units of detectable_pa_s "
                                                          "(chosen on one seed by bench/leak_eval.py)")
    max_resid_pa: float = Field(default=150.0, gt=0,
                                description="a measure phase whose pressure scatters more than this about the "
                                            "fitted decay (Pa) is not a decay: the cycle is not judged (a spike, "
                                            "a noise burst, a step in the trace)")
    close_cycles: int = Field(default=3, ge=1, description="cycles back under detectable/2 that close an episode")
    warmup_cycles: int = Field(default=30, ge=1, description="cycles before a station's baseline is trusted")
    baseline_cycles: float = Field(default=50.0, ge=2, description="EWMA window of the baseline leak rate (cycles)")
    thermal_cycles: float = Field(default=300.0, ge=10, description="EWMA window of the temperature fit (cycles)")
    compensation: Compensation = Field(default=Compensation.LEARN, description="temperature compensation")
    gas_tau_s: float = Field(default=1000.0, gt=0,
                             description="prior thermal time constant of the test gas, until the station's own is "
                                         "learned from its cycles")
    temp_min_c: float = Field(default=-10.0, description="a temperature below this is not plausible (degC): the "
                                                         "cycle is not compensated, judged nor tracked")
    temp_max_c: float = Field(default=80.0, description="a temperature above this is not plausible (degC)")
    temp_jump_k: float = Field(default=0.8, gt=0,
                               description="a temperature that moves more than this from one sample to the next "
                                           "(K; the chamber at any time, a part while in the fixture) makes the "
                                           "sensor suspect until it jumps back or temp_suspect_s passes")
    temp_ramp_k_s: float = Field(default=0.01, gt=0,
                                 description="a temperature changing faster than this over a cycle's stabilise and "
                                             "measure phases is a drifting sensor (K/s)")
    temp_suspect_s: float = Field(default=3600.0, gt=0,
                                  description="after this long suspect, a sensor's new level is accepted and the "
                                              "station relearns its baseline (s)")
    temp_stuck_samples: int = Field(default=20, ge=0,
                                    description="this many identical samples over a cycle's stabilise and measure "
                                                "phases: a stuck sensor (0: off, for sensors too coarse to show "
                                                "their noise)")
    hold_target: str | None = Field(
        default=None, description="when a drift episode opens, request this action target set to 1 "
                                  "(edge/actions; {station} is replaced by the station id), e.g. '{station}.hold'")
    p_on_bar: float = Field(default=1.0, gt=0, description="pressure above which a fill has started (bar)")
    rise_bar_s: float = Field(default=0.5, gt=0, description="pressure rise that is a fill (bar/s)")
    vent_bar_s: float = Field(default=0.5, gt=0, description="pressure fall that is a vent (bar/s)")
    max_gap_s: float = Field(default=5.0, gt=0, description="a longer gap in the trace abandons the cycle")
    stabilise_s: float = Field(default=12.0, gt=0, description="stabilisation time when the timer is not read")
    measure_s: float = Field(default=20.0, gt=0, description="measuring time when the timer is not read")
