"""Operating state per machine (``opstate.update_states``) and the frozen path of the fused signal kernel, against
their references in tests/naive.py (NaN, inf, bad quality and constant runs of the running indicator)."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from streams import mixed

from edge.kernels import cusum, opstate, rate, robust, signal_stack, stuck

GRACE_NS = 30_000_000_000


def _indicator_frames(seed: int, n_frames: int) -> list[tuple[np.ndarray, ...]]:
    """Frames of 6 signals: 0 and 3 are the running bits of machines 0 and 1 (with NaN, inf, bad samples and long
    constant runs), the rest process signals; timestamps 1 s apart."""
    rng = np.random.default_rng(seed)
    frames = []
    on = np.array([1.0, 0.0])
    for f in range(n_frames):
        if rng.random() < 0.1:
            on[rng.integers(2)] = 1.0 - on[rng.integers(2)]
        v = rng.normal(size=6)
        v[0], v[3] = on[0], on[1] * 0.8 + rng.uniform(-0.2, 0.4)  # machine 1's indicator crosses its band
        r = rng.random()
        if r < 0.05:
            v[0] = np.nan
        elif r < 0.08:
            v[3] = np.inf
        q = np.where(rng.random(6) < 0.05, 2, np.where(rng.random(6) < 0.05, 1, 0)).astype(np.uint8)
        order = rng.permutation(6)
        frames.append((np.full(6, 10**18 + f * 10**9, np.int64), order.astype(np.uint32), v[order], q[order]))
    return frames


@pytest.mark.parametrize("mode", [opstate.FREEZE, opstate.OWN_BASELINE])
def test_update_states_matches_reference_frame_by_frame(mode):
    running_of = np.array([0, -1, -1, 1, -1, -1], np.int64)
    members = {0: [1, 2], 1: [4, 5]}
    m_ptr = np.array([0, 2, 4], np.int64)
    m_sig = np.array([1, 2, 4, 5], np.int64)
    state = np.zeros(2, np.int8)
    since = np.full(2, -1, np.int64)
    hold = np.full(2, -1, np.int64)
    cfg = np.zeros((6, signal_stack.C_WIDTH))
    rng = np.random.default_rng(4)
    st_, alt = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    st_[2, 3] = alt[2, 3] = np.nan  # NaN and inf travel with their baseline
    alt[4, 0] = np.inf
    ref_st, ref_alt = st_.copy(), alt.copy()
    # machine 0: a running bit; machine 1: a load indicator with a band (on at 0.7, off below 0.3)
    on_at, off_at = np.full(6, 0.5), np.full(6, 0.5)
    on_at[3], off_at[3] = 0.7, 0.3
    total = 0
    for ts, sig, v, q in _indicator_frames(3, 300):
        ref_state, ref_since, ref_hold, ref_frozen, ref_n = naive.update_states(
            ts, sig, v, q, running_of, state, since, hold, GRACE_NS, members,
            swap=(ref_st, ref_alt, (1, 5)) if mode == opstate.OWN_BASELINE else None, on_at=on_at, off_at=off_at)
        n = opstate.update_states(ts, sig, v, q, running_of, on_at, off_at, state, since, hold, GRACE_NS, m_ptr,
                                  m_sig, cfg,
                                  signal_stack.C_FROZEN, mode, st_, alt, 1, 5)
        assert n == ref_n
        assert state.tolist() == ref_state and since.tolist() == ref_since and hold.tolist() == ref_hold
        for s, fz in ref_frozen.items():
            assert cfg[s, signal_stack.C_FROZEN] == fz
        np.testing.assert_array_equal(st_, ref_st)
        np.testing.assert_array_equal(alt, ref_alt)
        total += n
    assert total > 10  # the stream really switches machines on and off
    assert cfg[[0, 3], signal_stack.C_FROZEN].tolist() == [0.0, 0.0]  # indicators themselves are never frozen
    if mode == opstate.OWN_BASELINE:
        assert not cfg[:, signal_stack.C_FROZEN].any()


def test_first_sighting_sets_the_state_without_a_grace_and_constant_input_changes_nothing():
    running_of = np.array([0, -1], np.int64)
    state, since, hold = np.zeros(1, np.int8), np.full(1, -1, np.int64), np.full(1, -1, np.int64)
    cfg = np.zeros((2, signal_stack.C_WIDTH))
    args = (running_of, np.full(2, 0.5), np.full(2, 0.5), state, since, hold, GRACE_NS, np.array([0, 1], np.int64),
            np.array([1], np.int64), cfg,
            signal_stack.C_FROZEN, opstate.FREEZE, np.zeros((2, 3)), np.zeros((2, 3)), 0, 1)
    sig = np.zeros(50, np.uint32)
    ts = np.arange(50, dtype=np.int64) * 10**9
    assert opstate.update_states(ts, sig, np.zeros(50), np.zeros(50, np.uint8), *args) == 0
    assert state[0] == opstate.OFF and hold[0] == -1 and since[0] == 0 and cfg[1, signal_stack.C_FROZEN] == 1.0
    assert opstate.update_states(ts + 50 * 10**9, sig, np.ones(50), np.zeros(50, np.uint8), *args) == 1
    assert state[0] == opstate.RUNNING and hold[0] == 50 * 10**9 + GRACE_NS and cfg[1, signal_stack.C_FROZEN] == 0.0
    bad = np.full(50, np.nan)
    assert opstate.update_states(ts + 100 * 10**9, sig, bad, np.zeros(50, np.uint8), *args) == 0  # NaN: no news
    assert opstate.update_states(ts + 150 * 10**9, sig, np.zeros(50), np.full(50, 2, np.uint8), *args) == 0
    assert state[0] == opstate.RUNNING


N_SIG = 5


def _params() -> np.ndarray:
    return signal_stack.pack_params(
        robust.make_params(alpha=0.02, warmup=20), cusum.make_params(k=0.5, h=6.0), stuck.make_params(warmup=20),
        rate.make_params(warmup=20), level_threshold=5.0, rate_threshold=7.0, limit_margin=0.05,
        machine_z_clip=4.0, bad_s=0.5)


@pytest.mark.parametrize("mask", [63, 1 | 16, 8])
def test_frozen_signals_match_the_reference(mask):
    data = mixed(N_SIG, 400)
    cfg = np.zeros((N_SIG, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_LOW] = [-3.0, np.nan, 0.0, np.nan, np.nan]
    cfg[:, signal_stack.C_HIGH] = [9.0, 30.0, np.nan, np.nan, np.nan]
    cfg[:, signal_stack.C_MASK] = mask
    frozen = np.array([False, True, False, True, False])
    cfg[:, signal_stack.C_FROZEN] = frozen
    n = len(data["value"])
    st_ = signal_stack.init_state(N_SIG)
    score, kind, z_last = np.empty(n), np.empty(n, np.uint8), np.zeros(N_SIG)
    signal_stack.signal_chunk(data["ts"], data["signal"], data["value"], data["quality"], st_, cfg, _params(),
                              score, kind, z_last)
    ref_score, ref_kind, ref_z = naive.signal_chunk(
        data["ts"], data["signal"], data["value"], data["quality"], cfg[:, 0], cfg[:, 1], cfg[:, 2].astype(int),
        level={"alpha": 0.02, "warmup": 20}, cusum={"h": 6.0}, stuck={"warmup": 20}, rate={"warmup": 20},
        level_threshold=5.0, rate_threshold=7.0, n_signals=N_SIG, bad_s=0.5, frozen=frozen)
    np.testing.assert_allclose(score, ref_score, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(kind, ref_kind)
    np.testing.assert_allclose(z_last, ref_z, rtol=1e-9, atol=1e-12)
    fz = frozen[data["signal"]]
    ok = (data["quality"] != 2) & np.isfinite(data["value"])
    assert np.all(score[fz & ok] == 0.0) and np.all(kind[fz & ok] == 0)
    assert (kind[fz & ~ok] == 8).any()  # a frozen signal's bad samples are still judged (kind BAD)


def test_a_frozen_stretch_learns_nothing_but_its_last_sample():
    n = 400
    rng = np.random.default_rng(5)
    sig = np.zeros(n, np.uint32)
    ts = np.arange(n, dtype=np.int64) * 10**9
    cfg = np.zeros((1, signal_stack.C_WIDTH))
    cfg[0, signal_stack.C_MASK] = 63
    cfg[0, signal_stack.C_LOW], cfg[0, signal_stack.C_HIGH] = np.nan, np.nan
    st_ = signal_stack.init_state(1)
    out = (np.empty(n), np.empty(n, np.uint8), np.zeros(1))
    x = 50.0 + rng.normal(size=n)
    q = np.zeros(n, np.uint8)
    signal_stack.signal_chunk(ts[:200], sig[:200], x[:200], q[:200], st_, cfg, _params(), out[0][:200],
                              out[1][:200], out[2])
    before = st_.copy()
    cfg[0, signal_stack.C_FROZEN] = 1.0
    rest = np.zeros(200)  # the machine at rest: far from the running baseline, and constant
    signal_stack.signal_chunk(ts[200:], sig[200:], rest, q[200:], st_, cfg, _params(), out[0][200:], out[1][200:],
                              out[2])
    assert np.all(out[0][200:] == 0.0)
    moved = np.flatnonzero(st_[0] != before[0]).tolist()
    assert moved == [signal_stack.B_RATE + rate.LAST_V, signal_stack.B_RATE + rate.LAST_TS]
    assert st_[0, signal_stack.B_RATE + rate.LAST_TS] == float(ts[-1])


def test_count_resting_matches_the_reference():
    rng = np.random.default_rng(3)
    for size, n in ((1, 1), (7, 7), (500, 500), (500, 120), (5, 9), (4, 0)):
        state = rng.integers(0, 4, size).astype(np.int8)
        assert opstate.count_resting(state, n) == naive.count_resting(state, n)
    running = np.full(50, opstate.RUNNING, np.int8)  # constant input: nobody rests, then everybody
    assert opstate.count_resting(running, 50) == 0
    assert opstate.count_resting(np.full(50, opstate.OFF, np.int8), 50) == 50
