"""IDLE in the detector stack (``settings.operating_state.idle``): a machine powered but not producing -- its running
bit on, its cycling pressure vented -- is neither learned nor judged like an off one, its next cycle is a start
(held for ``grace_s``), and the state survives a checkpoint; the plant's leak testers declare it by their valve
word and every other machine with a running bit may find it in its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.detectors.events import Phase
from edge.detectors.settings import AnalyticsSettings, IdleSettings, IdleSource, OperatingStateSettings
from edge.detectors.stack import DetectorStack, activity_signals, running_indicators
from edge.kernels import opstate, rate, signal_stack
from edge.kernels.kinds import EN_ALL, EN_STATE, Kind
from plantwire.configfile import load_plant
from plantwire.plant import expand

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_767_571_200 * 10**9
FRAME_S = 60  # samples batched per frame: a minute of 1 Hz data (keeps the test at a second)
# one machine: running bit (0), test pressure cycling 0..34 bar every 45 s (1, range 0..45), a steady supply (2)
MACHINE_OF = np.zeros(3, np.int64)
ENABLE = np.array([EN_STATE, EN_ALL, EN_ALL], np.int64)
LOW, HIGH = np.array([np.nan, 0.0, 0.0]), np.array([np.nan, 45.0, 60.0])


def _stack(source: IdleSource) -> DetectorStack:
    s = AnalyticsSettings(settle_s=0, alarm_settle=60, operating_state=OperatingStateSettings(
        grace_s=600, idle=IdleSettings(source=source, idle_after_s=300)))
    act_p = np.full((3, opstate.P_WIDTH), np.nan)
    act_p[1:, opstate.P_BAND] = 0.2 * (HIGH[1:] - LOW[1:])
    act_p[1:, opstate.P_REST] = LOW[1:]
    return DetectorStack(3, MACHINE_OF, s, enable=ENABLE, low=LOW, high=HIGH, running_of=np.array([0, -1, -1]),
                         activity_of=np.array([-1, 0, 0]), activity_p=act_p)


def _run(stack: DetectorStack, t0_s: int, t1_s: int, cycling: bool, rng: np.random.Generator) -> list:
    """Feed [t0_s, t1_s) in frames of a minute; the alarm openings (t, signal)."""
    opened = []
    for a in range(t0_s, t1_s, FRAME_S):
        t = np.arange(a, min(a + FRAME_S, t1_s))
        p = (t % 45) / 45.0
        press = np.where(p < 0.18, 34 * p / 0.18, np.where(p < 0.9, 34.0 - 0.5 * p, 33.55 * (1 - (p - 0.9) / 0.1)))
        press = press if cycling else np.zeros(t.size)
        v = np.stack([np.ones(t.size), np.abs(press + 0.0005 * rng.normal(size=t.size)),
                      40 + 0.05 * rng.normal(size=t.size)], axis=1).ravel()
        ts = np.repeat(T0 + t * 10**9, 3).astype(np.int64)
        sig = np.tile(np.arange(3, dtype=np.uint32), t.size)
        r = stack.process(sig, v, np.zeros(v.size, np.uint8), ts)
        opened += [(int((e["ts_start"] - T0) // 10**9), int(e["entity"]), int(e["kind"])) for e in r.events
                   if e["phase"] == Phase.OPEN]
    return opened


def test_a_station_standing_powered_with_its_part_vented_is_idle_and_its_next_cycle_raises_no_alarm(tmp_path):
    rng = np.random.default_rng(1)
    stack = _stack(IdleSource.DATA)
    assert _run(stack, 0, 3600, True, rng) == []
    assert stack.m_state[0] == opstate.RUNNING
    assert stack.act_i[1, opstate.I_CYCLER] == 1 and stack.act_i[2, opstate.I_CYCLER] == 0
    rate_cols = slice(signal_stack.B_RATE + rate.PERIOD, signal_stack.B_RATE + rate.WIDTH)  # all it learns
    rate_before = stack.state[1, rate_cols].copy()
    # the night: running bit on, pressure vented at 0 for three hours
    assert _run(stack, 3600, 3600 + 3 * 3600, False, rng) == []
    assert stack.m_state[0] == opstate.IDLE
    # the bit itself is never frozen; the steady supply reads the same idle as cycling (its rest noise and value
    # are its running ones): thawed by the at-rest stage (``at_rest.same_*``), the running stack goes on judging it
    assert stack.cfg[:, signal_stack.C_FROZEN].tolist() == [0.0, 1.0, 0.0]
    since = stack.m_since[0]
    assert 3600 + 300 < (since - T0) / 1e9 <= 3600 + 300 + FRAME_S
    # the running baseline rested and is as it was at the last cycle: the rate stage did not learn "flat" (not even
    # over the idle_after_s of waiting)
    np.testing.assert_allclose(stack.state[1, rate_cols], rate_before, rtol=0.05)
    stack.save(tmp_path / "d.npz")
    again = _stack(IdleSource.DATA)
    again.restore(tmp_path / "d.npz")
    assert again.m_state[0] == opstate.IDLE and again.cfg[:, signal_stack.C_FROZEN].tolist() == [0.0, 1.0, 1.0]
    np.testing.assert_array_equal(again.act_i, stack.act_i)
    # the morning: cycles again -- a start (held for the grace), then judged against the rested baseline, quiet
    t_start = 3600 + 3 * 3600
    assert _run(again, t_start, t_start + 1800, True, rng) == []
    assert again.m_state[0] == opstate.RUNNING
    woke_s = (again.m_since[0] - T0) / 1e9 - t_start  # the first fill passing a fifth of the range: 3 s in
    assert 0 < woke_s < 10 and again.hold_until[0] == again.m_since[0] + 600 * 10**9


def test_without_idle_the_night_is_learned_as_flat_and_the_first_cycles_alarm():
    """The false-alarm class IDLE removes (what this test would see if IDLE broke)."""
    rng = np.random.default_rng(1)
    stack = _stack(IdleSource.OFF)
    _run(stack, 3600, 3600 + 3 * 3600, False, rng)
    assert stack.m_state[0] == opstate.RUNNING
    assert _run(stack, 0, 3600, True, rng) == []
    opened = _run(stack, 3600 + 3 * 3600, 3600 + 3 * 3600 + 600, True, rng)
    assert (3600 + 3 * 3600 + 1, 1, int(Kind.RATE)) in opened  # the first fill: a slope never seen all night


def test_activity_signals_of_the_dev_plant():
    table = expand(load_plant(ROOT / "configs" / "dev" / "plant.yaml"))
    testers = [r for r, sid in enumerate(table.ids) if ".leak_test" in sid]
    valves = [r for r in testers if table.ids[r].endswith(".valve_state")]
    pressure = [r for r in testers if table.ids[r].endswith(".test_pressure")]
    press = [r for r, sid in enumerate(table.ids) if sid.endswith(".tonnage")]
    assert valves and pressure and press
    for source, declared, data_rows in [(IdleSource.BOTH, True, False), (IdleSource.DECLARED, True, False),
                                        (IdleSource.DATA, False, True), (IdleSource.OFF, False, False)]:
        ops = OperatingStateSettings(idle=IdleSettings(source=source))
        running_of, _, _ = running_indicators(table, ops.running_signals, ops.load_signals)
        act_of, act_p = activity_signals(table, ops.idle, running_of)
        assert (act_of[valves] >= 0).all() == declared
        assert (act_p[valves, opstate.P_IDLE] == 0.0).all() == declared
        assert (act_of[pressure] >= 0).all() == data_rows
        assert (act_of[running_of >= 0] == -1).all()  # a running indicator is never an activity signal
        # machines without a declared signal take the data rule
        assert (act_of[press] >= 0).all() == (source in (IdleSource.BOTH, IdleSource.DATA))


def test_a_checkpoint_from_before_idle_restores_warm_and_learns_its_cycle_signals_again(tmp_path):
    rng = np.random.default_rng(2)
    stack = _stack(IdleSource.DATA)
    _run(stack, 0, 1800, True, rng)
    assert stack.act_i[1, opstate.I_CYCLER] == 1
    stack.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:  # as written before IDLE existed: no act_* arrays
        old = {k: z[k] for k in z.files if not k.startswith("act_")}
    np.savez(tmp_path / "old.npz", **old)
    again = _stack(IdleSource.DATA)
    again.restore(tmp_path / "old.npz")
    np.testing.assert_array_equal(again.state, stack.state)  # warm
    assert again.m_state[0] == opstate.RUNNING and again.act_i[1, opstate.I_CYCLER] == 0 and again.m_last[0] == -1
    _run(again, 1800, 3600, True, rng)
    assert again.act_i[1, opstate.I_CYCLER] == 1


def test_an_idle_machine_restored_without_its_learned_cycle_signals_runs_again(tmp_path):
    """A checkpoint whose IDLE state does not fit (written before the cycle signals' run duration): the machine is
    taken as running, not left IDLE -- the data rule learns cycle signals only while a machine runs, so nothing could
    have ended the spell -- and the next cycle is judged."""
    rng = np.random.default_rng(3)
    stack = _stack(IdleSource.DATA)
    _run(stack, 0, 1800, True, rng)
    _run(stack, 1800, 1800 + 900, False, rng)
    assert stack.m_state[0] == opstate.IDLE
    stack.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as z:  # the IDLE state of an older layout: act_i one column narrower
        old = {k: z[k] for k in z.files}
    old["act_i"] = old["act_i"][:, :3]
    np.savez(tmp_path / "old.npz", **old)
    again = _stack(IdleSource.DATA)
    again.restore(tmp_path / "old.npz")
    assert again.m_state[0] == opstate.RUNNING and again.cfg[:, signal_stack.C_FROZEN].tolist() == [0.0, 0.0, 0.0]
    _run(again, 2700, 2700 + 1800, True, rng)  # cycling again: its cycle signal is learned anew
    assert again.act_i[1, opstate.I_CYCLER] == 1 and again.m_state[0] == opstate.RUNNING
