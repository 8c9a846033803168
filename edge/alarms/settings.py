"""Alarm-management settings (the edge config's ``alarms:`` section): incidents, suppression, shelving, floods.

Defaults follow ISA-18.2 / EEMUA 191 practice: a flood is more than 10 new incidents per area in
10 minutes; an incident that activates 3 times in a minute chatters; shelving is always timed and
bounded (8 h, one shift with margin), so nothing is silenced and forgotten.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AlarmMode(enum.StrEnum):
    """``incidents``: the alarm layer runs (signal alarms still go out as before); ``off``: it does not."""

    INCIDENTS = "incidents"
    OFF = "off"


class SuppressionMode(enum.StrEnum):
    """``state``: a machine that is off, starting, or in maintenance raises no process incident; ``off``: never."""

    STATE = "state"
    OFF = "off"


class ReactivationMode(enum.StrEnum):
    """When a machine alarms again within ``reactivate_window_s`` of its incident's clear, which alarms re-activate
    that incident instead of opening a new one. ``same_signal``: an alarm on a signal (or the machine, health or
    device alarm) that contributed to it; ``same_machine``: any alarm of the machine; ``off``: never (every alarm
    after the clear opens a new incident)."""

    SAME_SIGNAL = "same_signal"
    SAME_MACHINE = "same_machine"
    OFF = "off"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlarmSettings(_Strict):
    mode: AlarmMode = AlarmMode.INCIDENTS
    clear_delay_s: float = Field(
        default=60.0, ge=0, le=3600,
        description="an incident clears this long after its last contributor cleared (a contributor that "
        "re-opens within it continues the incident instead of closing and re-opening it); 60 s chosen on the "
        "simulated dev plant, seed 1 (bench/alarm_eval.py: incidents per fault 1.34 at 10 s, 1.23 at 60 s, "
        "1.20 at 120 s, time to annunciation unchanged)")
    reactivation: ReactivationMode = ReactivationMode.SAME_SIGNAL
    reactivate_window_s: float = Field(
        default=3600.0, ge=0, le=86_400,
        description="a cleared incident re-activates (same id, next seq, an ``update`` with active true, "
        "unacknowledged again) when its machine alarms again within this long of the clear (``reactivation`` says "
        "which alarms): a step's return to normal, or a calibration offset's removal, is the same episode as its "
        "onset, not a new alarm (ISA-18.2: one alarm per abnormal situation). An incident that began more than "
        "twice this long ago no longer re-activates. 3600 s chosen on seed 1 (demo plant, a quarter of its machines, "
        "bench/alarm_eval.py): incidents per annunciated fault 1.20 / 1.14 / 1.07 / 1.03 at 0 / 600 / 1800 / 3600 s "
        "at 0.001 faults per signal-hour (0.99 at 0.01), annunciation and its delay unchanged; the simulator's "
        "calibration offsets last up to 3600 s")
    restart_grace_s: float = Field(
        default=60.0, ge=0, le=3600,
        description="after a restart whose detectors lost an incident's alarms (a kill before their checkpoint), "
        "the incident clears only this long later, so an alarm re-opening meanwhile continues it")
    suppression: SuppressionMode = SuppressionMode.STATE
    state_settle_s: float = Field(
        default=900.0, ge=0, le=86_400,
        description="after a machine starts (its state signal leaves an off value), process incidents stay "
        "suppressed this long: the simulated plant ramps for 10 minutes and its temperatures lag behind")
    never_suppressed: Annotated[list[str], Field(min_length=0)] = Field(
        default=["bad", "silent", "stuck", "device"],
        description="alarm kinds (edge.kernels.kinds.Kind names) that state never suppresses: data quality")
    major_peak: float = Field(default=0.99, ge=0, le=1,
                              description="a contributor scoring at least this is a major deviation (priority)")
    shelve_max_s: float = Field(default=8 * 3600.0, gt=0, description="longest shelving an operator may ask for")
    chatter_count: int = Field(default=3, ge=2, description="activations within chatter_window_s that mean chattering")
    chatter_window_s: float = Field(default=60.0, gt=0)
    chatter_shelve_s: float = Field(default=3600.0, gt=0,
                                    description="a chattering machine's incidents are shelved this long (<= max)")
    flood_count: int = Field(default=10, ge=1, description="more new incidents than this per area in the window: flood")
    flood_window_s: float = Field(default=600.0, gt=0)
    flood_clear_count: int = Field(default=5, ge=0,
                                   description="the flood ends when the window holds at most this many")
    flood_keeps: str = Field(
        default="high",
        description="incidents of this priority or higher are annunciated during a flood (only lower ones are "
        "summarised); high chosen on seed 1 (demo plant, a quarter of its machines, 0.01 faults per signal-hour): "
        "faults on running machines annunciated 96.2 % with critical, 96.6 % with high (its 3 flood misses shown), "
        "the fault-free day's worst-area average unchanged but a burst's 10-minute peak higher (compressors 11 -> "
        "14: a flood's high-priority members are shown); no difference at 0.001 (bench/RESULTS.md, branch incidents)")
    max_signals: int = Field(default=10, ge=1, le=100, description="contributing signals listed per incident")
    max_retained: int = Field(default=1000, ge=10,
                              description="cleared unacknowledged incidents kept; the oldest are retired beyond it")
    transition_log_bytes: int = Field(
        default=0, ge=0,
        description="0: off; else every incident transition handed to the events lane is also appended (id, seq, "
        "ts_ns, transition; one JSON line) to state_dir/incident_transitions.log, rotated to .1 beyond this size: "
        "the edge's own record of what it sent, for an audit of the cloud's copy (tests/chaos uses it)")

    @model_validator(mode="after")
    def _consistent(self) -> AlarmSettings:
        from edge.kernels.kinds import Kind

        names = {k.name.lower() for k in Kind}
        for i, k in enumerate(self.never_suppressed):
            if k not in names:
                raise ValueError(f"never_suppressed[{i}]: {k!r} is not an alarm kind ({', '.join(sorted(names))})")
        if self.flood_keeps not in ("critical", "high", "low"):
            raise ValueError("flood_keeps: one of critical, high, low")
        if self.flood_clear_count >= self.flood_count:
            raise ValueError("flood_clear_count: must be below flood_count (hysteresis)")
        if self.chatter_shelve_s > self.shelve_max_s:
            raise ValueError("chatter_shelve_s: longer than shelve_max_s")
        return self
