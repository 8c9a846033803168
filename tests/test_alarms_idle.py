"""The alarm layer's state suppression says ``idle`` (issue 16 item 3): a machine the detectors hold IDLE (its running
bit on, its cycle at rest: ``opstate.update_activity``) raises no process incident the operator sees, data quality
still shows, and leaving idle is a start (``startup`` settling) -- also for a machine whose running bit stays on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.alarms.engine import STATE_IDLE, STATE_RUNNING, IncidentEngine
from edge.alarms.facts import MachineFacts
from edge.alarms.settings import AlarmSettings
from edge.detectors.events import EVENT_DTYPE, Phase, Scope
from edge.kernels import opstate
from edge.kernels.kinds import Kind
from plantwire.configfile import load_plant
from plantwire.plant import expand

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000
LT = "line2.leak_test01"


def _ev(entity: int, phase: Phase, kind: Kind, start_s: float, end_s: float = -1) -> np.ndarray:
    a = np.zeros(1, dtype=EVENT_DTYPE)
    a["ts_start"], a["ts_end"] = int(start_s * S), int(end_s * S) if end_s >= 0 else -1
    a["entity"], a["scope"], a["phase"], a["kind"], a["peak"], a["top"] = entity, Scope.SIGNAL, phase, kind, 0.9, -1
    return a


def test_an_idle_machine_is_suppressed_as_idle_and_its_return_to_work_settles():
    plant = load_plant(ROOT / "configs" / "dev" / "plant.yaml")
    table = expand(plant)
    facts = MachineFacts.from_plant(plant, table)
    e = IncidentEngine(table, facts, AlarmSettings(state_settle_s=60))
    m = table.machine_ids.index(LT)
    assert facts.state_signal[m] >= 0  # the tester has a running bit: on/off come from it, idle from the detectors
    run = np.array([table.ids.index(f"{LT}.running")], np.uint32)
    on = (run, np.ones(1), np.zeros(1, np.uint8))
    states = np.full(len(table.machine_ids), opstate.UNKNOWN, dtype=np.int8)
    states[m] = opstate.RUNNING
    e.on_state(*on, 1 * S)
    e.on_machine_state(states, 1 * S)
    assert e.state[m] == STATE_RUNNING
    states[m] = opstate.IDLE
    e.on_state(*on, 2 * S)
    e.on_machine_state(states, 2 * S)
    assert e.state[m] == STATE_IDLE
    e.on_state(*on, 3 * S)  # its running bit still reads 1: it stays idle
    assert e.state[m] == STATE_IDLE
    pressure = table.ids.index(f"{LT}.test_pressure")
    docs = e.on_events(_ev(pressure, Phase.OPEN, Kind.RATE, 4), 4 * S)
    assert docs[0]["transition"] == "suppress" and docs[0]["suppressed_by"] == "idle"
    at_rest = table.ids.index(f"{LT}.pump_current")  # the at-rest judgement is about the idle state: shown
    docs = e.on_events(_ev(at_rest, Phase.OPEN, Kind.AT_REST, 5), 5 * S)
    assert [d["transition"] for d in docs] == ["unsuppress"] and docs[0]["suppressed_by"] is None
    e.on_events(_ev(at_rest, Phase.CLOSE, Kind.AT_REST, 5, 6), 6 * S)
    e.on_events(_ev(pressure, Phase.CLOSE, Kind.RATE, 4, 6), 6 * S)
    e.tick(100 * S)
    # back to work: a start (settling for state_settle_s), then shown
    states[m] = opstate.RUNNING
    e.on_state(*on, 200 * S)
    e.on_machine_state(states, 200 * S)
    assert e.state[m] == STATE_RUNNING
    docs = e.on_events(_ev(pressure, Phase.OPEN, Kind.RATE, 201), 201 * S)
    assert docs[-1]["suppressed_by"] == "startup"
    assert [d["transition"] for d in e.tick(261 * S)] == ["unsuppress"]
    # the running bit drops while idle: off
    states[m] = opstate.IDLE
    e.on_machine_state(states, 300 * S)
    e.on_state(run, np.zeros(1), np.zeros(1, np.uint8), 301 * S)
    states[m] = opstate.OFF
    e.on_machine_state(states, 301 * S)
    assert e.state[m] == 1  # STATE_OFF
