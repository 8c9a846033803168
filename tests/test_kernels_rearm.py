"""Signal alarms with a re-arm memory (``edge.kernels.rearm``) against tests/naive.py; one onset per excursion."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge.kernels import alarms, rearm


def _run(ts, ent, score, kind, n_ent, params, rearm_n, cap=1000, cuts=None):
    fst, its = alarms.init_state(n_ent)
    rst = rearm.init_state(n_ent)
    cols = [np.empty(cap, np.int64), np.empty(cap, np.uint8), np.empty(cap, np.int64), np.empty(cap, np.int64),
            np.empty(cap, np.float64), np.empty(cap, np.uint8)]
    out = []
    a = 0
    for b in cuts or [len(ts)]:
        n = rearm.alarm_chunk_rearm(ts[a:b], ent[a:b], score[a:b], kind[a:b], b - a, fst, its, rst, params,
                                    float(rearm_n), rearm.exempt_mask((5, 8, 9, 10)), *cols)
        out += [(int(cols[0][j]), int(cols[1][j]), int(cols[2][j]), int(cols[3][j]), float(cols[4][j]),
                 int(cols[5][j])) for j in range(min(n, cap))]
        a = b
    return out


@pytest.mark.parametrize(("on_count", "off_count", "rearm_n"), [(1, 1, 0), (1, 10, 50), (3, 5, 200), (1, 3, 10**9)])
def test_rearm_matches_reference(on_count, off_count, rearm_n):
    """Random bursts on five entities, NaN and inf scores, data-quality kinds among them, chunked at odd places."""
    rng = np.random.default_rng(12)
    n = 4000
    ent = rng.integers(0, 5, n).astype(np.int64)
    score = np.clip(rng.beta(0.5, 2.0, n) + (rng.random(n) < 0.03) * rng.random(n), 0, 1)
    score[rng.random(n) < 0.01] = np.nan
    score[rng.random(n) < 0.005] = np.inf
    kind = rng.integers(0, 12, n).astype(np.uint8)
    ts = np.arange(n, dtype=np.int64) * 10
    p = alarms.make_params(0.5, 0.3, on_count, off_count)
    got = _run(ts, ent, score, kind, 5, p, rearm_n, cuts=[1, 999, 1000, n])
    ref = naive.alarms_rearm(ts, ent, score, kind, 0.5, 0.3, on_count, off_count, rearm_n)
    assert len(got) == len(ref) >= 4
    for g, r in zip(got, ref, strict=True):
        assert g[:4] == r[:4] and g[5] == r[5] and g[4] == pytest.approx(r[4])


def test_rearm_zero_is_the_plain_alarm():
    rng = np.random.default_rng(13)
    n = 2000
    ent = rng.integers(0, 3, n).astype(np.int64)
    score = rng.random(n)
    kind = np.ones(n, np.uint8)
    ts = np.arange(n, dtype=np.int64)
    p = alarms.make_params(0.5, 0.3, 1, 4)
    assert _run(ts, ent, score, kind, 3, p, 0) == naive.alarms(ts, ent, score, kind, 0.5, 0.3, 1, 4)


def test_constant_input_and_one_onset_per_excursion():
    """A constant score opens once; repeats of an excursion within the window are silent, a worse one is announced,
    a data-quality kind always is, and after the window the same excursion is news again."""
    p = alarms.make_params(0.5, 0.3, 1, 2)
    flat = np.full(50, 0.7)
    assert [e[1] for e in _run(np.arange(50, dtype=np.int64), np.zeros(50, np.int64), flat, np.ones(50, np.uint8),
                               1, p, 100)] == [alarms.OPEN]
    burst = [0.8, 0.0, 0.0]  # one excursion: open, then two quiet samples close it
    seq = burst + [0.7, 0.0, 0.0] + [0.8, 0.0, 0.0] + [0.9, 0.0, 0.0] + [0.0] * 20 + [0.6, 0.0, 0.0]
    score = np.array(seq)
    kind = np.ones(score.shape[0], np.uint8)
    ts = np.arange(score.shape[0], dtype=np.int64)
    ev = _run(ts, np.zeros_like(ts), score, kind, 1, p, 10)
    opens = [(e[2], e[4]) for e in ev if e[1] == alarms.OPEN]
    assert opens == [(0, pytest.approx(0.8)), (9, pytest.approx(0.9)), (32, pytest.approx(0.6))]
    sat = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # a saturated level score repeats; a range violation is a fact
    ev = _run(np.arange(6, dtype=np.int64), np.zeros(6, np.int64), sat, np.ones(6, np.uint8), 1, p, 10)
    assert [e[2] for e in ev if e[1] == alarms.OPEN] == [0]
    ev = _run(np.arange(6, dtype=np.int64), np.zeros(6, np.int64), sat, np.full(6, 5, np.uint8), 1, p, 10)
    assert [e[2] for e in ev if e[1] == alarms.OPEN] == [0, 3]
    kind[3] = 8  # Kind.BAD: a data-quality onset is never held back (and its episode's 0.7 is now the peak to beat)
    ev = _run(ts, np.zeros_like(ts), score, kind, 1, p, 10)
    assert [e[2] for e in ev if e[1] == alarms.OPEN] == [0, 3, 6, 9, 32]


def test_stack_folds_a_repeated_spike_and_rebaseline_forgets_it():
    """Wired into the detector stack's signal alarms by default: the same spike 100 s after the first one's alarm
    closed is not announced again (a smaller one); with ``rearm_count`` 0, or after a re-baseline, it is."""
    from edge.detectors.settings import AnalyticsSettings
    from edge.detectors.stack import DetectorStack

    rng = np.random.default_rng(3)
    n = 1500
    x = 10.0 + 0.1 * rng.normal(size=n)
    x[1000] += 3.0
    x[1150] += 2.5  # a smaller repeat
    ts = 1_700_000_000 * 10**9 + np.arange(n, dtype=np.int64) * 10**9

    def onsets(stack: DetectorStack, rebaseline_at: int | None = None) -> list[int]:
        out = []
        for a in range(0, n, 50):
            if rebaseline_at is not None and a == rebaseline_at:
                stack.rebaseline(np.array([0]))
            ev = stack.process(np.zeros(50, np.uint32), x[a:a + 50], np.zeros(50, np.uint8), ts[a:a + 50]).events
            out += [int((t - ts[0]) // 10**9) for t in ev["ts_start"][ev["phase"] == alarms.OPEN].tolist()]
        return out

    settings = AnalyticsSettings(settle_s=0.0, alarm_settle=30)
    assert settings.signal_alarm.rearm_count == 600
    assert onsets(DetectorStack(1, np.array([-1]), settings)) == [1000]
    plain = settings.model_copy(update={"signal_alarm": settings.signal_alarm.model_copy(update={"rearm_count": 0})})
    assert onsets(DetectorStack(1, np.array([-1]), plain)) == [1000, 1150]
    assert onsets(DetectorStack(1, np.array([-1]), settings), rebaseline_at=1050) == [1000, 1150]
