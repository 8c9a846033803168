"""The stack judges a switched-off machine at rest (``operating_state.at_rest``, kind AT_REST): quiet on clipped and
constant rest values, an alarm when current flows in a stopped machine, nothing during the stop grace, and the rest
bands travel in the checkpoint (a checkpoint from before them restores everything else warm)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detectors import checkpoint
from edge.detectors.events import Phase
from edge.detectors.settings import AnalyticsSettings, AtRestSettings, OffJudgement, OperatingStateSettings
from edge.detectors.stack import DetectorStack
from edge.kernels import atrest, signal_stack
from edge.kernels.kinds import EN_ALL, EN_COUNTER, EN_STATE, Kind

T0 = 1_767_571_200 * 10**9
# machine 0: running bit (0), current clipped at 0 when off (1), temperature (2), run-hours counter (3)
MACHINE_OF = np.array([0, 0, 0, 0], np.int64)
ENABLE = np.array([EN_STATE, EN_ALL, EN_ALL, EN_COUNTER], np.int64)
LOW, HIGH = np.array([0, 0, 0, 0.0]), np.array([1, 100, 150, 1e6])
GRACE_S = 300.0
STOP = 200  # the machine runs for the first STOP seconds


def _stack(at_rest: AtRestSettings | None = None) -> DetectorStack:
    s = AnalyticsSettings(settle_s=0, alarm_settle=60, operating_state=OperatingStateSettings(
        grace_s=GRACE_S, off=OffJudgement.FREEZE, at_rest=at_rest or AtRestSettings(enabled=True)))
    return DetectorStack(4, MACHINE_OF, s, enable=ENABLE, low=LOW, high=HIGH, running_of=np.array([0, -1, -1, -1]))


def _run(stack: DetectorStack, ks: range, rng: np.random.Generator, extra=lambda k: 0.0,
         frozen: float | None = None) -> list:
    """Frames ``ks`` (the machine runs before STOP), the current plus ``extra(k)``, or held at ``frozen``."""
    opened = []
    sig = np.arange(4, dtype=np.uint32)
    for k in ks:
        on = k < STOP
        v = np.array([1.0, 40.0 + rng.normal(), 70.0 + 0.5 * rng.normal(), 100.0 + k / 3600]) if on else \
            np.array([0.0, max(0.0, 0.3 * rng.normal()), 25.0 + 0.1 * rng.normal(), 100.0 + STOP / 3600])
        v[1] = v[1] + extra(k) if frozen is None else frozen
        r = stack.process(sig, v, np.zeros(4, np.uint8), np.full(4, T0 + k * 10**9, np.int64))
        opened += [(k, int(e["entity"]), int(e["kind"])) for e in r.events if e["phase"] == Phase.OPEN]
    return opened


@pytest.mark.slow
def test_a_current_on_a_stopped_machine_alarms_at_rest_and_clipped_rest_values_do_not():
    rng = np.random.default_rng(5)
    stack = _stack()
    # running, then stopped for 3 h: the stop itself (grace) and the clipped rest noise raise nothing
    assert _run(stack, range(0, STOP + 3 * 3600), rng) == []
    assert stack.rest_state[3, atrest.LEARNED_S] == 0.0  # a counter has no rest band (range only)
    k0 = STOP + 3 * 3600
    opened = _run(stack, range(k0, k0 + 60), rng, extra=lambda k: 8.0 if k >= k0 + 10 else 0.0)
    assert [(e, kd) for _, e, kd in opened] == [(1, int(Kind.AT_REST))] and opened[0][0] <= k0 + 12


def test_nothing_is_judged_or_learned_during_the_stop_grace_and_the_band_survives_a_checkpoint(tmp_path):
    """The default run's smoke: stop, grace, 10 minutes at rest, a current flowing, checkpoint round trips."""
    rng = np.random.default_rng(6)
    stack = _stack(AtRestSettings(enabled=True, warm_s=300))
    # a current still decaying in the grace after the stop is neither judged nor learned
    assert _run(stack, range(0, STOP + int(GRACE_S)), rng, extra=lambda k: 20.0 if k >= STOP else 0.0) == []
    assert stack.rest_state[1, atrest.LEARNED_S] == 0.0
    k0 = STOP + int(GRACE_S) + 600
    assert _run(stack, range(STOP + int(GRACE_S), k0), rng) == []
    assert stack.rest_state[1, atrest.LEARNED_S] > 500
    opened = _run(stack, range(k0, k0 + 5), rng, extra=lambda k: 8.0)
    assert [(e, kd) for _, e, kd in opened] == [(1, int(Kind.AT_REST))]
    stack.save(tmp_path / "d.npz")
    again = _stack(AtRestSettings(enabled=True, warm_s=300))
    again.restore(tmp_path / "d.npz")
    np.testing.assert_array_equal(again.rest_state, stack.rest_state)
    # the running level's extremes, kept while the machine ran (the start test's running level), travel too
    assert 35.0 < stack.rest_run[1, atrest.RUN_LO] <= stack.rest_run[1, atrest.RUN_HI] < 45.0
    assert np.isnan(stack.rest_run[[0, 3]]).all()  # the running bit and the counter are not judged at rest
    np.testing.assert_array_equal(again.rest_run, stack.rest_run)
    # a checkpoint from before the at-rest stage: everything else warm, the rest bands learn again
    with np.load(tmp_path / "d.npz") as z:
        old = {k: z[k] for k in z.files if k not in ("rest_state", "__version__", "__fingerprint__")}
    checkpoint.save(tmp_path / "old.npz", int(np.load(tmp_path / "d.npz")["__version__"]), stack.fingerprint, old)
    older = _stack(AtRestSettings(enabled=True, warm_s=300))
    older.restore(tmp_path / "old.npz")
    np.testing.assert_array_equal(older.state, stack.state)
    assert np.isnan(older.rest_state[:, atrest.PERIOD]).all()
    with np.load(tmp_path / "d.npz") as z:  # and one from before the running level's extremes: kept again later
        no_run = {k: z[k] for k in z.files if k not in ("rest_run", "__version__", "__fingerprint__")}
    checkpoint.save(tmp_path / "norun.npz", int(np.load(tmp_path / "d.npz")["__version__"]), stack.fingerprint,
                    no_run)
    norun = _stack(AtRestSettings(enabled=True, warm_s=300))
    norun.restore(tmp_path / "norun.npz")
    np.testing.assert_array_equal(norun.rest_state, stack.rest_state)
    assert np.isnan(norun.rest_run).all()
    # bands saved before the start test's smoothed deviation (7 columns): kept, the deviation starts at 0
    checkpoint.save(tmp_path / "bands7.npz", int(np.load(tmp_path / "d.npz")["__version__"]), stack.fingerprint,
                    {**old, "rest_state": np.ascontiguousarray(stack.rest_state[:, :atrest.DEV])})
    seven = _stack(AtRestSettings(enabled=True, warm_s=300))
    seven.restore(tmp_path / "bands7.npz")
    np.testing.assert_array_equal(seven.rest_state[:, :atrest.DEV], stack.rest_state[:, :atrest.DEV])
    assert (seven.rest_state[:, atrest.DEV] == 0.0).all()


def test_a_frozen_current_on_a_stopped_machine_alarms_at_rest():
    """The current's sensor freezes at 0, a value its clipped rest noise reads half the time: the band cannot see it,
    the frozen-value test does (a run of zeros longer than 3x the longest the rest made). ~1,100 frames."""
    rng = np.random.default_rng(6)
    stack = _stack(AtRestSettings(enabled=True, warm_s=300))
    k0 = STOP + int(GRACE_S) + 600
    assert _run(stack, range(0, k0), rng) == []
    assert stack.rest_state[1, atrest.RUNS] >= 20 and stack.rest_state[1, atrest.RUN_MAX] < 15
    frozen = _run(stack, range(k0, k0 + 90), rng, frozen=0.0)
    assert [(e, kd) for _, e, kd in frozen] == [(1, int(Kind.AT_REST))] and frozen[0][0] <= k0 + 60


def _loads_stack() -> DetectorStack:
    """Machine 0: a running bit (0) and five load signals (1-5: currents, powers, a speed), each 0..100."""
    s = AnalyticsSettings(settle_s=0, alarm_settle=60, operating_state=OperatingStateSettings(
        grace_s=GRACE_S, off=OffJudgement.FREEZE, at_rest=AtRestSettings(enabled=True, warm_s=300)))
    n = 6
    return DetectorStack(n, np.zeros(n, np.int64), s, enable=np.array([EN_STATE] + [EN_ALL] * 5, np.int64),
                         low=np.zeros(n), high=np.full(n, 100.0), running_of=np.array([0, -1, -1, -1, -1, -1]))


def _ramp(stack: DetectorStack, ks: range, rng: np.random.Generator, level: callable, moving: list[int]) -> list:
    """Off at rest (loads clipped noise at 0), the ``moving`` loads at ``level(k)`` percent; the bit rises at 5 %."""
    opened = []
    sig = np.arange(6, dtype=np.uint32)
    for k in ks:
        v = np.maximum(0.0, 0.3 * rng.normal(size=6))
        v[moving] += level(k)
        v[0] = 1.0 if level(k) >= 5.0 else 0.0
        r = stack.process(sig, v, np.zeros(6, np.uint8), np.full(6, T0 + k * 10**9, np.int64))
        opened += [(k, int(e["entity"]), int(e["kind"])) for e in r.events if e["phase"] == Phase.OPEN]
    return opened


def test_loads_ramping_together_before_the_running_bit_are_a_start_and_one_load_alone_is_a_fault():
    """The start test: a machine whose five loads ramp up together for minutes before its running bit rises (the
    06:00 start) raises no at-rest alarm; the same ramp on one load alone (current creeping into a stopped machine)
    does. ~1 simulated hour at 6 signals."""
    def level(k: int) -> float:  # an exponential ramp from 0.01 % at k0 to 5 % (the running bit) ~6 minutes later
        return 0.0 if k < 1200 else 0.01 * np.exp((k - 1200) / 60.0)
    rng = np.random.default_rng(8)
    start = _ramp(_loads_stack(), range(0, 1700), rng, level, [1, 2, 3, 4, 5])
    assert [e for e in start if e[2] == int(Kind.AT_REST)] == []
    fault = _ramp(_loads_stack(), range(0, 1700), rng, lambda k: min(level(k), 4.0), [3])
    assert [(e, kd) for _, e, kd in fault] == [(3, int(Kind.AT_REST))]


def _start_after_a_day(run_fraction: float | None, moving: list[int], seed: int = 9) -> list:
    """Machine 0 runs (its five loads at 50, noise 0.5), stops, rests (load 1 a clean 0 like a quantised speed, the
    others noise 0.5 clipped at 0), then ``moving`` loads ramp up exponentially (time constant 150 s, the simulated
    plant's 06:00 start) while the bit stays 0 until 5 %. Returns the alarms opened at rest."""
    ar = AtRestSettings(enabled=True, warm_s=300) if run_fraction is None else AtRestSettings(
        enabled=True, warm_s=300, start_run_fraction=run_fraction)
    s = AnalyticsSettings(settle_s=0, alarm_settle=60, operating_state=OperatingStateSettings(
        grace_s=GRACE_S, off=OffJudgement.FREEZE, at_rest=ar))
    stack = DetectorStack(6, np.zeros(6, np.int64), s, enable=np.array([EN_STATE] + [EN_ALL] * 5, np.int64),
                          low=np.zeros(6), high=np.full(6, 100.0), running_of=np.array([0, -1, -1, -1, -1, -1]))
    rng = np.random.default_rng(seed)
    sig, q, opened = np.arange(6, dtype=np.uint32), np.zeros(6, np.uint8), []
    stop, ramp = 300, 300 + int(GRACE_S) + 400
    for k in range(ramp + 900):
        frac = 1.0 if k < stop else (5e-4 * np.exp((k - ramp) / 150.0) if k >= ramp else 0.0)
        noise = 0.5 * rng.normal(size=6)
        noise[1] = 0.0
        v = np.maximum(0.0, noise + np.where(np.isin(np.arange(6), moving) | (k < stop), 50.0 * frac, 0.0))
        v[0] = 1.0 if frac >= 0.05 else 0.0
        r = stack.process(sig, v, q, np.full(6, T0 + k * 10**9, np.int64))
        opened += [(k, int(e["entity"])) for e in r.events if e["phase"] == Phase.OPEN and e["kind"] == Kind.AT_REST]
        if k >= ramp and v[0] == 1.0:
            break
    return opened


def test_a_clean_load_leaving_its_tight_band_first_is_part_of_the_start():
    """A start moves every load by the same fraction of its running level, but a clean load's band (its floor, 0.5 %
    of the span: 1 % of its running level) is tighter than noisy loads' half bands (~1.7 %): with the half-band test
    alone it alarms before the start is seen (the 104 nightly false alarms of the whole demo plant before 06:00);
    counted on its way to the running level (``start_run_fraction``), the start is seen first. The same ramp on the
    clean load alone still alarms. 3 x ~1,700 frames of 6 signals."""
    assert _start_after_a_day(0.0, [1, 2, 3, 4, 5]) != []  # the failure the rule is for
    assert _start_after_a_day(None, [1, 2, 3, 4, 5]) == []  # shipped default
    assert [e for _, e in _start_after_a_day(None, [1])] == [1]


def test_skipping_the_pass_while_no_machine_rests_changes_nothing(monkeypatch):
    """The stack skips ``rest_chunk`` while no machine is OFF or IDLE (``opstate.count_resting``): the same frames with
    the pass always run give the same scores, events and rest state, through a stop, a rest and a restart."""
    ks = list(range(0, STOP + int(GRACE_S) + 400)) + list(range(10**5, 10**5 + 100))  # the gap: a restart at 10^5 s

    def run(stack: DetectorStack) -> list:
        rng = np.random.default_rng(11)
        out = []
        sig = np.arange(4, dtype=np.uint32)
        for k in ks:
            on = k < STOP or k >= 10**5
            v = np.array([1.0, 40.0 + rng.normal(), 70.0, 100.0]) if on else \
                np.array([0.0, 0.3 * rng.normal() + (8.0 if k > STOP + GRACE_S + 300 else 0.0), 25.0, 100.0])
            r = stack.process(sig, v, np.zeros(4, np.uint8), np.full(4, T0 + k * 10**9, np.int64))
            out.append((r.score.copy(), r.kind.copy(), r.events.copy()))
        return [*out, stack.rest_state.copy()]

    skipped = run(_stack(AtRestSettings(enabled=True, warm_s=100)))
    monkeypatch.setattr("edge.kernels.opstate.count_resting", lambda state, n: 1)
    always = run(_stack(AtRestSettings(enabled=True, warm_s=100)))
    assert any((e["kind"] == int(Kind.AT_REST)).any() for _, _, e in skipped[:-1])  # the pass did judge at rest
    for a, b in zip(skipped, always, strict=True):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            assert x.tobytes() == y.tobytes()


def _hall_run(same_ratio_min: float, end: int, seed: int = 11) -> tuple[DetectorStack, list, dict]:
    """Machine 0: a running bit (0), a load (1: 40 running, clipped noise at rest) and a pressure that follows the
    hall, not the machine (2: 6 + sin, period 300 s, the same running or off). Off 900 s (the rest is learned),
    running 900 s, stopped at 1,800 s (grace 300 s); from 2,200 s the pressure reads 2.5 amplitudes high.
    Returns the stack, the alarms opened after the stop and the frozen flags seen at 2,100 s. ``end`` frames."""
    ar = AtRestSettings(enabled=True, warm_s=300, same_learned_s=600, same_ratio_min=same_ratio_min)
    s = AnalyticsSettings(settle_s=0, alarm_settle=60, operating_state=OperatingStateSettings(
        grace_s=GRACE_S, off=OffJudgement.FREEZE, at_rest=ar))
    stack = DetectorStack(3, np.zeros(3, np.int64), s, enable=np.array([EN_STATE, EN_ALL, EN_ALL], np.int64),
                          low=np.zeros(3), high=np.array([1.0, 100.0, 20.0]), running_of=np.array([0, -1, -1]))
    rng = np.random.default_rng(seed)
    sig, q, opened, frozen = np.arange(3, dtype=np.uint32), np.zeros(3, np.uint8), [], {}
    for k in range(end):
        on = 900 <= k < 1800
        v = np.array([1.0 if on else 0.0, 40.0 + rng.normal() if on else max(0.0, 0.3 * rng.normal()),
                      6.0 + np.sin(2 * np.pi * k / 300) + 0.1 * rng.normal() + (2.5 if k >= 2200 else 0.0)])
        r = stack.process(sig, v, q, np.full(3, T0 + k * 10**9, np.int64))
        if k >= 1800:
            opened += [(k, int(e["entity"]), int(e["kind"])) for e in r.events if e["phase"] == Phase.OPEN]
        if k == 2100:
            frozen = {s_: float(stack.cfg[s_, signal_stack.C_FROZEN]) for s_ in (1, 2)}
    return stack, opened, frozen


def test_a_signal_that_reads_the_same_at_rest_keeps_its_running_judgement_while_the_machine_is_off():
    """``same_*`` (``atrest.thaw_independent``): at the stop, the pressure that follows the hall (its rest noise ~
    its running scale, its rest value at its running level) is thawed -- the running stack goes on learning and
    judging it, and its offset on the stopped machine opens an alarm (kind AT_REST) -- while the load
    (rest noise a few % of its running scale) stays frozen. With the thaw off both stay frozen. ~4,400 frames."""
    _, opened, frozen = _hall_run(0.7, 2300)
    assert frozen == {1: 1.0, 2: 0.0}
    assert [e for _, e, _ in opened] == [2] and 2200 <= opened[0][0] <= 2260
    # reported as AT_REST (``label_thawed``: a finding on a resting machine, which the alarm layer's off/idle
    # suppression must not hide) though the running stack found it: with the thaw off nothing opens by then
    assert opened[0][2] == int(Kind.AT_REST)
    _, opened_off, frozen_off = _hall_run(0.0, 2300)
    assert frozen_off == {1: 1.0, 2: 1.0} and opened_off == []
