"""The detector stack knows each machine's operating state (``settings.operating_state``): an off machine's signals
are neither learned nor judged (their data quality is), a start or stop holds process alarms for ``grace_s``, the
state travels in the result and the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detectors.events import Phase
from edge.detectors.settings import AnalyticsSettings, OffJudgement, OperatingStateSettings
from edge.detectors.stack import DetectorStack, running_indicators
from edge.kernels import opstate, robust, signal_stack
from edge.kernels.kinds import EN_ALL, EN_STATE, Kind
from plantwire.configfile import load_plant
from plantwire.plant import expand

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_767_571_200 * 10**9
# machine 0: running bit (0), load (1), temperature (2); machine 1: one signal (3) and no indicator
MACHINE_OF = np.array([0, 0, 0, 1], np.int64)
ENABLE = np.array([EN_STATE, EN_ALL, EN_ALL, EN_ALL], np.int64)


def _settings(grace_s: float = 600.0, off: OffJudgement = OffJudgement.OWN_BASELINE) -> AnalyticsSettings:
    return AnalyticsSettings(settle_s=0, alarm_settle=60,
                             operating_state=OperatingStateSettings(grace_s=grace_s, off=off))


def _values(k: int, on: bool, rng: np.random.Generator) -> np.ndarray:
    if on:
        return np.array([1.0, 40.0 + rng.normal(), 70.0 + 0.5 * rng.normal(), 5.0 + rng.normal()])
    return np.array([0.0, 0.2 * rng.normal(), 25.0 + 0.1 * rng.normal(), 5.0 + rng.normal()])


def _run(stack: DetectorStack, ks: range, on, rng, quality=None) -> list:
    opened = []
    sig = np.arange(4, dtype=np.uint32)
    for k in ks:
        q = np.zeros(4, np.uint8) if quality is None else quality(k)
        r = stack.process(sig, _values(k, on(k), rng), q, np.full(4, T0 + k * 10**9, np.int64))
        opened += [(k, int(e["entity"]), int(e["kind"])) for e in r.events if e["phase"] == Phase.OPEN]
    return opened


@pytest.mark.parametrize("off", list(OffJudgement))
def test_an_off_machine_raises_no_process_alarm_and_its_running_baseline_rests(off):
    rng = np.random.default_rng(1)
    stack = DetectorStack(4, MACHINE_OF, _settings(off=off), enable=ENABLE, running_of=np.array([0, -1, -1, -1]))
    assert _run(stack, range(0, 2000), lambda k: True, rng) == []
    r_state = stack.process(np.arange(4, dtype=np.uint32), _values(0, True, rng), np.zeros(4, np.uint8),
                            np.full(4, T0 + 2000 * 10**9, np.int64)).machine_state
    assert r_state.tolist() == [opstate.RUNNING, opstate.UNKNOWN]
    level_before = stack.state[1:3, signal_stack.B_LEVEL:signal_stack.B_LEVEL + robust.WIDTH].copy()
    # two hours off: load at 0, temperature at ambient -- far outside the running baseline, and not a fault
    opened = _run(stack, range(2001, 2001 + 2 * 3600), lambda k: False, rng)
    assert opened == []
    assert stack.m_state[0] == opstate.OFF
    running = stack.state if off is OffJudgement.FREEZE else stack.state_alt
    np.testing.assert_array_equal(running[1:3, signal_stack.B_LEVEL:signal_stack.B_LEVEL + robust.WIDTH],
                                  level_before)
    if off is OffJudgement.OWN_BASELINE:  # the off baseline learned the machine at rest
        assert abs(stack.state[2, signal_stack.B_LEVEL + robust.LOC] - 25.0) < 0.5
    # restart: held for grace_s (600 s), then judged against the running baseline, which still fits
    k0 = 2001 + 2 * 3600
    assert _run(stack, range(k0, k0 + 1200), lambda k: True, rng) == []
    # a real fault after the grace is found at once
    fault = _values(0, True, rng) + np.array([0, 25.0, 0, 0])
    r = stack.process(np.arange(4, dtype=np.uint32), fault, np.zeros(4, np.uint8),
                      np.full(4, T0 + (k0 + 1200) * 10**9, np.int64))
    assert [(int(e["entity"]), int(e["phase"])) for e in r.events] == [(1, Phase.OPEN)]


@pytest.mark.parametrize("off", list(OffJudgement))
def test_data_quality_is_judged_while_off(off):
    rng = np.random.default_rng(2)
    stack = DetectorStack(4, MACHINE_OF, _settings(off=off), enable=ENABLE, running_of=np.array([0, -1, -1, -1]))
    _run(stack, range(0, 2000), lambda k: True, rng)

    def bad_load(k: int) -> np.ndarray:
        return np.array([0, 2 if 3000 <= k < 3100 else 0, 0, 0], np.uint8)

    opened = _run(stack, range(2000, 3600), lambda k: False, rng, quality=bad_load)
    assert [(e, kd) for _, e, kd in opened] == [(1, int(Kind.BAD))]


def test_state_changes_hold_process_alarms_for_the_grace_and_the_state_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(3)
    s = _settings(grace_s=900, off=OffJudgement.FREEZE)
    stack = DetectorStack(4, MACHINE_OF, s, enable=ENABLE, running_of=np.array([0, -1, -1, -1]))
    _run(stack, range(0, 1000), lambda k: True, rng)
    assert stack.hold_until[0] == -1  # first sighting: no grace
    _run(stack, range(1000, 1010), lambda k: False, rng)
    assert stack.hold_until[0] == T0 + 1000 * 10**9 + 900 * 10**9
    assert stack.cfg[:, signal_stack.C_FROZEN].tolist() == [0.0, 1.0, 1.0, 0.0]
    stack.save(tmp_path / "d.npz")
    again = DetectorStack(4, MACHINE_OF, s, enable=ENABLE, running_of=np.array([0, -1, -1, -1]))
    again.restore(tmp_path / "d.npz")
    assert again.m_state.tolist() == [opstate.OFF, opstate.UNKNOWN]
    assert again.cfg[:, signal_stack.C_FROZEN].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_running_indicators_of_the_dev_plant():
    table = expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml"))
    ind, on_at, off_at = running_indicators(table, ["running"])
    assert (on_at == 0.5).all() and (off_at == 0.5).all()
    rows = np.flatnonzero(ind >= 0)
    assert rows.size > 0 and len(set(ind[rows].tolist())) == rows.size  # one per machine at most
    assert all(table.ids[r].endswith(".running") and table.kinds[r] == "state" for r in rows.tolist())
    assert all(table.machine_ids[int(ind[r])] == table.ids[r].rsplit(".", 1)[0] for r in rows.tolist())


def test_a_sensor_fault_on_an_off_machine_is_found_against_the_off_baseline(tmp_path):
    rng = np.random.default_rng(4)
    stack = DetectorStack(4, MACHINE_OF, _settings(grace_s=300), enable=ENABLE, running_of=np.array([0, -1, -1, -1]))
    _run(stack, range(0, 1000), lambda k: True, rng)
    assert _run(stack, range(1000, 2000), lambda k: False, rng) == []
    stack.save(tmp_path / "d.npz")  # the off baseline survives a restart too
    again = DetectorStack(4, MACHINE_OF, _settings(grace_s=300), enable=ENABLE, running_of=np.array([0, -1, -1, -1]))
    again.restore(tmp_path / "d.npz")
    np.testing.assert_array_equal(again.state_alt, stack.state_alt)
    fault = _values(0, False, rng) + np.array([0, 0, 5.0, 0])  # the idle temperature jumps 5 K (50 of its sigma)
    r = stack.process(np.arange(4, dtype=np.uint32), fault, np.zeros(4, np.uint8), np.full(4, T0 + 2000 * 10**9,
                                                                                            np.int64))
    assert [(int(e["entity"]), int(e["phase"])) for e in r.events] == [(2, Phase.OPEN)]


def test_a_machine_without_a_running_bit_takes_its_state_from_its_load_with_a_band():
    table = expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml"))
    ind, on_at, off_at = running_indicators(table, ["running"], {"power_active": 0.05})
    meters = [r for r in np.flatnonzero(ind >= 0).tolist() if table.ids[r].endswith(".power_active")]
    assert meters and all(table.kinds[r] != "state" for r in meters)
    r = meters[0]
    assert on_at[r] == table.low[r] + 0.05 * (table.high[r] - table.low[r]) and off_at[r] < on_at[r]
    bits = ind[np.flatnonzero(ind >= 0)]
    assert len(set(bits.tolist())) == bits.size  # still one indicator per machine
