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
