"""Alarm hysteresis and debounce against tests/naive.py; a noisy signal raises one event."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge.kernels import alarms


def _run(ts, ent, score, kind, n_ent, params, cap=1000, cuts=None):
    fst, its = alarms.init_state(n_ent)
    cols = [np.empty(cap, np.int64), np.empty(cap, np.uint8), np.empty(cap, np.int64), np.empty(cap, np.int64),
            np.empty(cap, np.float64), np.empty(cap, np.uint8)]
    out = []
    a = 0
    for b in cuts or [len(ts)]:
        n = alarms.alarm_chunk(ts[a:b], ent[a:b], score[a:b], kind[a:b], b - a, fst, its, params, *cols)
        out += [(int(cols[0][j]), int(cols[1][j]), int(cols[2][j]), int(cols[3][j]), float(cols[4][j]),
                 int(cols[5][j])) for j in range(min(n, cap))]
        a = b
    return out


@pytest.mark.parametrize(("on_count", "off_count"), [(1, 1), (1, 10), (3, 5)])
def test_alarms_match_reference(on_count, off_count):
    rng = np.random.default_rng(4)
    n = 3000
    ent = rng.integers(0, 5, n).astype(np.int64)
    score = np.clip(rng.beta(0.5, 2.0, n) + (rng.random(n) < 0.02) * 0.6, 0, 1)
    kind = rng.integers(0, 7, n).astype(np.uint8)
    ts = np.arange(n, dtype=np.int64) * 10
    p = alarms.make_params(0.5, 0.3, on_count, off_count)
    got = _run(ts, ent, score, kind, 5, p, cuts=[1, 999, 1000, n])
    ref = naive.alarms(ts, ent, score, kind, 0.5, 0.3, on_count, off_count)
    assert len(got) == len(ref) >= 4
    for g, r in zip(got, ref, strict=True):
        assert g[:4] == r[:4] and g[5] == r[5] and g[4] == pytest.approx(r[4])


def test_noisy_signal_raises_one_event_not_a_storm():
    rng = np.random.default_rng(5)
    n = 2000
    score = np.clip(0.1 + 0.05 * rng.normal(size=n), 0, 1)
    score[500:900] = np.clip(0.5 + 0.25 * rng.normal(size=400), 0, 1)  # chattering around the threshold
    score[700] = 0.97
    ts = np.arange(n, dtype=np.int64) * 1_000_000_000
    ev = _run(ts, np.zeros(n, np.int64), score, np.full(n, 1, np.uint8), 1, alarms.make_params(0.5, 0.3, 2, 20))
    assert [e[1] for e in ev] == [alarms.OPEN, alarms.CLOSE]
    start, end = ev[1][2], ev[1][3]
    assert 500e9 <= start < 520e9 and 880e9 <= end <= 900e9
    assert ev[1][4] == pytest.approx(score[500:900].max())


def test_event_overflow_is_counted_and_state_stays_consistent():
    ts = np.arange(10, dtype=np.int64)
    score = np.array([0.9, 0.0, 0.9, 0.0, 0.9, 0.0, 0.9, 0.0, 0.9, 0.0])
    fst, its = alarms.init_state(1)
    cols = [np.empty(3, np.int64), np.empty(3, np.uint8), np.empty(3, np.int64), np.empty(3, np.int64),
            np.empty(3, np.float64), np.empty(3, np.uint8)]
    n = alarms.alarm_chunk(ts, np.zeros(10, np.int64), score, np.ones(10, np.uint8), 10, fst, its,
                           alarms.make_params(0.5, 0.3, 1, 1), *cols)
    assert n == 10 and list(cols[1]) == [1, 2, 1]
    assert fst[0, alarms.ACTIVE] == 0.0


@pytest.mark.parametrize(("settle_s", "hold_all"), [(0.0, -1), (5.0, -1), (50.0, -1), (0.0, 60_000_000_000)])
def test_settle_gate_matches_reference(settle_s, hold_all):
    """Cold start by time and count, against the reference, with NaN and inf scores and bad samples."""
    rng = np.random.default_rng(7)
    n, n_ent = 2000, 6
    ent = rng.integers(0, n_ent, n).astype(np.int64)
    ts = np.sort(rng.integers(0, 100_000_000_000, n)).astype(np.int64)
    score = rng.random(n)
    score[::97] = np.nan
    score[::131] = np.inf
    score[::53] = 0.0
    kind = rng.integers(0, 10, n).astype(np.uint8)
    quality = np.where(rng.random(n) < 0.1, 2, 0).astype(np.uint8)
    count = np.array([0.0, 10.0, 400.0, 1000.0, 299.0, 300.0])
    first = np.full(n_ent, -1, dtype=np.int64)
    first[3] = 0
    machine_of = np.array([0, 0, 1, 1, -1, 1], dtype=np.int64)
    hold = np.array([30_000_000_000, -1], dtype=np.int64)  # machine 0 in an operating change until 30 s
    ref, ref_first = naive.settle_gate(ts, ent, score, kind, quality, count, first.copy(), 300.0, settle_s * 1e9,
                                       8, machine_of, hold, hold_all)
    out = np.empty(n)
    held = alarms.settle_gate(ts, ent, score, kind, quality, count, first, 300.0, settle_s * 1e9, 8, machine_of,
                              hold, hold_all, out)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(first, ref_first)
    assert held == int(((score > 0) & (out == 0)).sum())


def test_settle_gate_holds_by_time_and_lets_data_quality_through():
    """At 10 Hz a signal has 300 samples after 30 s, but holds alarms until 600 s have passed; BAD is never held."""
    ts = (np.arange(7000) * 100_000_000).astype(np.int64)
    ent = np.zeros(7000, np.int64)
    score = np.ones(7000)
    kind = np.full(7000, 2, np.uint8)
    kind[100] = 8
    first = np.full(1, -1, np.int64)
    out = np.empty(7000)
    alarms.settle_gate(ts, ent, score, kind, np.zeros(7000, np.uint8), np.array([1e9]), first, 300.0, 600e9, 8,
                       np.full(1, -1, np.int64), np.zeros(1, np.int64), -1, out)
    assert first[0] == 0
    assert np.all(out[:6000][kind[:6000] != 8] == 0.0) and out[100] == 1.0 and np.all(out[6000:] == 1.0)


def test_machine_moves_matches_reference_frame_by_frame():
    """Operating-change marking against the reference, with NaN/inf z, bad samples and repeated signals."""
    from edge.kernels import opchange

    rng = np.random.default_rng(11)
    n_sig, n_m = 40, 4
    machine_of = np.where(np.arange(n_sig) < 36, np.arange(n_sig) // 9, -1).astype(np.int64)
    members = np.bincount(machine_of[machine_of >= 0], minlength=n_m).astype(np.float64)
    stamp = np.full(n_sig, -1, np.int64)
    hot = np.zeros(n_m, np.int64)
    hold = np.full(n_m, -1, np.int64)
    for frame in range(60):
        sig = rng.integers(0, n_sig, 50).astype(np.uint32)  # signals repeat within a frame
        q = np.where(rng.random(50) < 0.1, 2, 0).astype(np.uint8)
        z = rng.normal(size=n_sig) * (4.0 if frame % 7 == 0 else 1.0)
        z[::13] = np.nan
        z[5] = np.inf if frame % 5 == 0 else z[5]
        ts = np.full(50, frame * 1_000_000_000, np.int64)
        before = hold.copy()
        ref = naive.machine_moves(ts, sig, q, z, machine_of, members, 4.0, 0.25, 3.0, 900_000_000_000, before)
        n = opchange.machine_moves(ts, sig, q, z, machine_of, members, frame, stamp, hot, 4.0, 0.25, 3.0,
                                   900_000_000_000, hold)
        np.testing.assert_array_equal(hold, ref)
        assert n == int((ref != before).sum())
        assert (hot == 0).all()
    assert (hold >= 0).any()
