"""IDLE (``opstate.update_activity``) against its reference in tests/naive.py, frame by frame after
``update_states``, on streams with NaN, inf, bad quality, constant runs, values stuck mid-range and running bits
that drop while a machine idles."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge.kernels import opstate, signal_stack

NS = 10**9
GRACE_NS = 30 * NS
IDLE_NS = 20 * NS
MIN_MOVES = 3
# 8 signals: machine 0 = running bit 0, declared valve word 1 (0 = idle), process 2; machine 1 = running bit 3,
# data-rule signals 4 (a wave 0..10 when cycling, band 2, rest 0) and 5 (steady), process 6; signal 7: no machine.
RUNNING_OF = np.array([0, -1, -1, 1, -1, -1, -1, -1], np.int64)
ACT_OF = np.array([-1, 0, -1, -1, 1, 1, -1, -1], np.int64)
MEMBERS = {0: [1, 2], 1: [4, 5, 6]}
M_PTR = np.array([0, 2, 5], np.int64)
M_SIG = np.array([1, 2, 4, 5, 6], np.int64)


def _act_p() -> np.ndarray:
    p = np.full((8, opstate.P_WIDTH), np.nan)
    p[1, opstate.P_IDLE] = 0.0
    p[4, opstate.P_BAND], p[4, opstate.P_REST] = 2.0, 0.0
    p[5, opstate.P_BAND], p[5, opstate.P_REST] = 2.0, 0.0
    return p


def _frames(seed: int, n_frames: int) -> list[tuple[np.ndarray, ...]]:
    """Segments of 10-90 s per machine: cycling, at rest, stuck mid-range (machine 1), switched off; plus noise."""
    rng = np.random.default_rng(seed)
    frames = []
    mode = [0, 0]  # 0 cycling, 1 rest, 2 stuck mid-range, 3 off
    left = [0, 0]
    for f in range(n_frames):
        for m in (0, 1):
            if left[m] <= 0:
                mode[m] = int(rng.choice(4, p=[0.45, 0.3, 0.1, 0.15]))
                left[m] = int(rng.integers(10, 90))
            left[m] -= 1
        v = rng.normal(size=8)
        v[0] = 0.0 if mode[0] == 3 else 1.0
        v[1] = [float(1 + f % 3), 0.0, 0.0, 0.0][mode[0]]
        v[3] = 0.0 if mode[1] == 3 else 1.0
        v[4] = [5.0 + 5.0 * np.sin(f * 1.3), 0.01 * rng.normal(), 5.0, 0.0][mode[1]]
        v[5] = 30.0 + 0.1 * rng.normal()
        r = rng.random()
        if r < 0.04:
            v[rng.choice([1, 4])] = np.nan
        elif r < 0.07:
            v[rng.choice([1, 4, 5])] = np.inf
        q = np.where(rng.random(8) < 0.04, 2, np.where(rng.random(8) < 0.04, 1, 0)).astype(np.uint8)
        order = rng.permutation(8)
        frames.append((np.full(8, 10**18 + f * NS, np.int64), order.astype(np.uint32), v[order], q[order]))
    return frames


@pytest.mark.parametrize("resume_ratio", [1e30, 0.05])  # always the full grace, a partial one (none: below)
def test_update_activity_matches_reference_frame_by_frame(resume_ratio):
    state, since, hold = np.zeros(2, np.int8), np.full(2, -1, np.int64), np.full(2, -1, np.int64)
    cfg = np.zeros((8, signal_stack.C_WIDTH))
    act_p = _act_p()
    act_v = np.full(8, np.nan)
    act_i = np.zeros((8, opstate.I_WIDTH), np.int64)
    act_i[:, opstate.I_MOVED] = -1
    act_i[1, opstate.I_CYCLER] = 1  # declared
    m_last = np.full(2, -1, np.int64)
    ref_v, ref_i, ref_last = act_v.copy(), act_i.copy(), m_last.copy()
    rng = np.random.default_rng(6)
    st_, snap = rng.normal(size=(8, 5)), np.zeros((8, 5))
    st_[2, 3] = np.nan  # NaN and inf travel with the snapshot
    st_[4, 0] = np.inf
    ref_st, ref_snap = st_.copy(), snap.copy()
    seen_idle = [0, 0]
    total = 0
    for ts, sig, v, q in _frames(5, 1200):
        ref_state, ref_since, ref_hold, ref_frozen, _ = naive.update_states(
            ts, sig, v, q, RUNNING_OF, state, since, hold, GRACE_NS, {0: [1, 2], 1: [4, 5, 6]})
        opstate.update_states(ts, sig, v, q, RUNNING_OF, np.full(8, 0.5), np.full(8, 0.5), state, since, hold,
                              GRACE_NS, M_PTR, M_SIG, cfg, signal_stack.C_FROZEN, opstate.FREEZE,
                              np.zeros((8, 3)), np.zeros((8, 3)), 0, 1)
        assert state.tolist() == ref_state and since.tolist() == ref_since and hold.tolist() == ref_hold
        r_state, r_since, r_hold, r_frozen, r_n = naive.update_activity(
            ts, sig, v, q, ACT_OF, act_p, ref_v, ref_i, ref_last, state, since, hold, GRACE_NS, IDLE_NS,
            MIN_MOVES, MEMBERS, snap=(ref_st, ref_snap, (1, 3)), resume_ratio=resume_ratio)
        ref_frozen.update(r_frozen)
        n = opstate.update_activity(ts, sig, v, q, ACT_OF, act_p, act_v, act_i, m_last, state, since, hold,
                                    GRACE_NS, IDLE_NS, MIN_MOVES, M_PTR, M_SIG, cfg, signal_stack.C_FROZEN, st_,
                                    snap, 1, 3, resume_ratio)
        assert n == r_n
        assert state.tolist() == r_state and since.tolist() == r_since and hold.tolist() == r_hold
        for s, fz in ref_frozen.items():
            assert cfg[s, signal_stack.C_FROZEN] == fz
        np.testing.assert_array_equal(act_v, ref_v)
        np.testing.assert_array_equal(act_i, ref_i)
        np.testing.assert_array_equal(m_last, ref_last)
        np.testing.assert_array_equal(st_, ref_st)
        np.testing.assert_array_equal(snap, ref_snap)
        st_ += 0.01  # the stack learns between frames
        ref_st += 0.01
        for m in (0, 1):
            seen_idle[m] += int(state[m] == opstate.IDLE)
            if state[m] == opstate.IDLE:
                assert cfg[MEMBERS[m], signal_stack.C_FROZEN].tolist() == [1.0] * len(MEMBERS[m])
        total += n
    assert total > 20 and min(seen_idle) > 100  # both rules really take both machines in and out of IDLE
    assert act_i[4, opstate.I_CYCLER] == 1 and act_i[5, opstate.I_CYCLER] == 0  # the wave is learned, steady is not


def test_a_wave_stuck_mid_range_or_constant_input_is_not_idle():
    """Data rule: a cycle signal frozen mid-range (a stuck sensor) keeps the machine RUNNING; one at rest makes it
    IDLE after idle_ns; a single move wakes it; constant input from the first sample never learns a cycle."""
    act_of = np.array([-1, 0], np.int64)
    p = np.full((2, opstate.P_WIDTH), np.nan)
    p[1, opstate.P_BAND], p[1, opstate.P_REST] = 2.0, 0.0
    state, since, hold = np.array([opstate.RUNNING], np.int8), np.zeros(1, np.int64), np.full(1, -1, np.int64)
    cfg = np.zeros((2, signal_stack.C_WIDTH))
    act_v, act_i, m_last = np.full(2, np.nan), np.zeros((2, opstate.I_WIDTH), np.int64), np.full(1, -1, np.int64)
    act_i[:, opstate.I_MOVED] = -1
    sig = np.ones(1, np.uint32)
    q = np.zeros(1, np.uint8)
    st_, snap = np.zeros((2, 3)), np.zeros((2, 3))

    def run(t0: int, values: np.ndarray) -> int:
        n = 0
        for i, x in enumerate(values.tolist()):
            n += opstate.update_activity(np.array([(t0 + i) * NS], np.int64), sig, np.array([x]), q, act_of, p, act_v,
                                         act_i, m_last, state, since, hold, GRACE_NS, IDLE_NS, MIN_MOVES,
                                         np.array([0, 1], np.int64), np.array([1], np.int64), cfg,
                                         signal_stack.C_FROZEN, st_, snap, 0, 1, 1.0)
        return n

    assert run(0, np.full(100, 7.0)) == 0 and act_i[1, opstate.I_CYCLER] == 0  # constant: never a cycle signal
    assert run(100, np.tile([0.0, 10.0], 20)) == 0 and act_i[1, opstate.I_CYCLER] == 1
    assert run(140, np.full(100, 5.0)) == 0 and state[0] == opstate.RUNNING  # stuck mid-range: not idle
    assert run(240, np.array([0.05])) == 0  # a move to rest: the last activity, the baseline's snapshot
    st_[1] = [1.0, 2.0, 3.0]  # learned since the last move, at rest: the change to IDLE restores all but columns 0, 1
    assert run(241, np.full(99, 0.05)) == 1 and state[0] == opstate.IDLE
    assert st_[1].tolist() == [1.0, 2.0, 0.0]
    assert cfg[1, signal_stack.C_FROZEN] == 1.0 and since[0] == 240 * NS + IDLE_NS + NS
    assert run(340, np.array([np.nan, np.inf, 0.0])) == 0 and state[0] == opstate.IDLE  # no news
    assert run(343, np.array([9.0])) == 1 and state[0] == opstate.RUNNING and hold[0] == 343 * NS + GRACE_NS
    assert cfg[1, signal_stack.C_FROZEN] == 0.0


def test_a_pause_resumes_with_a_grace_as_long_as_the_pause_and_a_long_spell_with_the_whole_grace():
    """The resume grace: min(grace, resume_ratio x the spell from the last activity before it) -- a station that paused
    22 s for parts is judged again 22 s after its next cycle began, one that stood idle for an hour after the full
    grace, and ratio 0 holds nothing on resuming (the start grace of OFF -> RUNNING is not this one's)."""
    p = _act_p()
    sig = np.ones(1, np.uint32)

    def resume_hold(pause_s: int, ratio: float) -> tuple[int, int]:
        state, since, hold = np.array([opstate.RUNNING], np.int8), np.zeros(1, np.int64), np.full(1, -1, np.int64)
        act_i = np.zeros((8, opstate.I_WIDTH), np.int64)
        act_i[1, opstate.I_CYCLER] = 1  # the declared valve word
        m_last = np.full(2, -1, np.int64)
        cfg, st_, snap = np.zeros((8, signal_stack.C_WIDTH)), np.zeros((8, 3)), np.zeros((8, 3))
        t_s = [100, *range(101, 101 + pause_s), 101 + pause_s]  # a cycle at 100, at rest, the next cycle
        x = [2.0, *([0.0] * pause_s), 1.0]
        for t, v in zip(t_s, x, strict=True):
            opstate.update_activity(np.array([t * NS], np.int64), sig, np.array([v]), np.zeros(1, np.uint8),
                                    ACT_OF, p, np.full(8, np.nan), act_i, m_last, state, since, hold, GRACE_NS,
                                    IDLE_NS, MIN_MOVES, M_PTR, M_SIG, cfg, signal_stack.C_FROZEN, st_, snap, 0, 1,
                                    ratio)
            if t == t_s[-2]:
                assert state[0] == opstate.IDLE
        assert state[0] == opstate.RUNNING
        return int(hold[0] - t_s[-1] * NS), int(since[0])

    assert resume_hold(21, 1.0)[0] == 22 * NS  # idle from 100 (the last cycle) to 122: 22 s
    assert resume_hold(21, 0.5)[0] == 11 * NS
    assert resume_hold(21, 0.0)[0] == 0
    assert resume_hold(3600, 1.0)[0] == GRACE_NS  # a long spell: the whole grace, never more
    assert resume_hold(3600, 1e30)[0] == GRACE_NS


def test_a_burst_of_moves_shorter_than_a_pause_does_not_teach_a_cycle_signal():
    """Data rule: ``min_moves`` moves in a row make a cycle signal only when the run covers ``idle_ns`` -- a fault's
    oscillation (on the simulated plant a 92 s oscillation of a brazing cell's heater power made the cell IDLE all
    night) moves as often as a cycle, but not for as long."""
    p = _act_p()
    sig = np.full(1, 4, np.uint32)  # machine 1's data-rule wave (band 2, rest 0)
    state, since, hold = np.array([0, opstate.RUNNING], np.int8), np.zeros(2, np.int64), np.full(2, -1, np.int64)
    act_v, act_i, m_last = np.full(8, np.nan), np.zeros((8, opstate.I_WIDTH), np.int64), np.full(2, -1, np.int64)
    act_i[:, opstate.I_MOVED] = -1
    cfg, st_, snap = np.zeros((8, signal_stack.C_WIDTH)), np.zeros((8, 3)), np.zeros((8, 3))

    def run(t0: int, values: list[float]) -> None:
        for i, x in enumerate(values):
            opstate.update_activity(np.array([(t0 + i) * NS], np.int64), sig, np.array([x]), np.zeros(1, np.uint8),
                                    ACT_OF, p, act_v, act_i, m_last, state, since, hold, GRACE_NS, IDLE_NS,
                                    MIN_MOVES, M_PTR, M_SIG, cfg, signal_stack.C_FROZEN, st_, snap, 0, 1, 1.0)

    run(0, [5.0, 0.0, 10.0] * 6)  # 17 moves in 17 s (> MIN_MOVES, < IDLE_NS 20 s): an oscillation
    assert act_i[4, opstate.I_RUN] == 17 and act_i[4, opstate.I_CYCLER] == 0
    run(18, [10.0] * 30)  # then quiet for longer than a pause: the run is over
    run(48, [0.0, 10.0] * 5)  # a new run of 10 s: still not
    assert act_i[4, opstate.I_RUN] == 10 and act_i[4, opstate.I_CYCLER] == 0
    run(58, [0.0, 10.0] * 6)  # the same run, now 21 s long: a cycle signal
    assert act_i[4, opstate.I_CYCLER] == 1
