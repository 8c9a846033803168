"""Per-signal kernels against their references in tests/naive.py (NaN, inf, constant runs, gaps)."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streams import mixed

from edge.kernels import cusum, limits, rate, robust, signal_stack, stuck

N_SIG = 5


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return mixed(N_SIG, 400)


def test_robust_matches_reference(data):
    p = robust.make_params(alpha=0.02, huber_k=2.5, warmup=20)
    st_ = np.zeros((N_SIG, robust.WIDTH))
    z = np.empty(len(data["value"]))
    robust.robust_chunk(data["signal"], data["value"], data["quality"], st_, p, z)
    ref = naive.robust_chunk(data["signal"], data["value"], data["quality"], 0.02, 2.5, 20, 1e-6)
    np.testing.assert_allclose(z, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isfinite(z).sum() > len(z) // 2
    assert st_[2, robust.SCALE] == 0.0 and st_[2, robust.LOC] == 7.0  # constant signal


def test_robust_resists_outliers_and_follows_shifts():
    rng = np.random.default_rng(1)
    x = rng.normal(size=3000)
    x[500:510] = 1e6  # a burst of garbage
    x[2000:] += 20.0  # a genuine level shift
    sig = np.zeros(len(x), dtype=np.uint32)
    st_ = np.zeros((1, robust.WIDTH))
    z = np.empty(len(x))
    robust.robust_chunk(sig[:1000], x[:1000], np.zeros(1000, np.uint8), st_, robust.make_params(), z[:1000])
    assert abs(st_[0, robust.LOC]) < 0.5 and 0.7 < st_[0, robust.SCALE] < 1.5
    robust.robust_chunk(sig[1000:], x[1000:], np.zeros(2000, np.uint8), st_, robust.make_params(), z[1000:])
    assert abs(st_[0, robust.LOC] - 20.0) < 0.5


def test_cusum_matches_reference(data):
    z = naive.robust_chunk(data["signal"], data["value"], data["quality"])
    p = cusum.make_params(k=0.25, h=5.0, z_clip=3.0, cap=3.0)
    st_ = np.zeros((N_SIG, cusum.WIDTH))
    out = np.empty(len(z))
    cusum.cusum_chunk(data["signal"], z, st_, p, out)
    np.testing.assert_allclose(out, naive.cusum_chunk(data["signal"], z, 0.25, 5.0, 3.0, 3.0), rtol=1e-12)
    assert np.all(out[np.isnan(z)] == 0.0)  # warm-up and gaps: no change evidence


def test_cusum_finds_small_shift_a_single_z_misses():
    rng = np.random.default_rng(2)
    z = rng.normal(size=400)
    z[200:] += 1.5  # a 1.5-sigma shift: no single |z| near 6
    out = np.empty(400)
    cusum.cusum_chunk(np.zeros(400, np.uint32), z, np.zeros((1, cusum.WIDTH)), cusum.make_params(), out)
    assert out[:200].max() < 0.5
    assert out[200:260].max() >= 0.5


def test_stuck_matches_reference(data):
    p = stuck.make_params(beta=0.02, threshold_decades=6.0, warmup=10)
    st_ = np.zeros((N_SIG, stuck.WIDTH))
    stuck.init_state(st_)
    out = np.empty(len(data["value"]))
    stuck.stuck_chunk(data["signal"], data["value"], data["quality"], st_, p, out)
    ref = naive.stuck_chunk(data["signal"], data["value"], data["quality"], 0.02, 0.0, 6.0, 0.05, 10)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    sig = data["signal"]
    assert out[sig == 2].max() < 0.5  # constant by nature: learns p ~ 1, never stuck
    assert out[sig == 1].max() >= 0.5  # the frozen stretch of a quantised signal
    assert out[sig == 0].max() < 0.5


def test_rate_matches_reference(data):
    p = rate.make_params(alpha=0.02, warmup=15, gap_factor=3.0)
    st_ = np.zeros((N_SIG, rate.WIDTH))
    rate.init_state(st_)
    out = np.empty(len(data["value"]))
    rate.rate_chunk(data["ts"], data["signal"], data["value"], data["quality"], st_, p, out)
    ref = naive.rate_chunk(data["ts"], data["signal"], data["value"], data["quality"], 0.02, 3.0, 15, 1e-9, 3.0)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_rate_gives_no_slope_across_a_gap():
    ts = np.array([0, 1, 2, 3, 4, 5, 100], dtype=np.int64) * 1_000_000_000
    x = np.array([0.0, 1, 2, 3, 4, 5, 1000])
    st_ = np.zeros((1, rate.WIDTH))
    rate.init_state(st_)
    out = np.empty(7)
    rate.rate_chunk(ts, np.zeros(7, np.uint32), x, np.zeros(7, np.uint8), st_, rate.make_params(warmup=2), out)
    assert np.isnan(out[6]) and out[5] == 0.0  # steady slope 1/s: z 0; after the gap: no slope


@given(x=st.floats(allow_nan=True, allow_infinity=True, width=64),
       low=st.one_of(st.just(float("nan")), st.floats(-1e6, 1e6)),
       high=st.one_of(st.just(float("nan")), st.floats(-1e6, 1e6)))
@settings(max_examples=300, deadline=None)
def test_limit_score_matches_reference(x, low, high):
    out = np.empty(1)
    limits.limits_chunk(np.zeros(1, np.uint32), np.array([x]), np.array([low]), np.array([high]), 0.05, out)
    ref = naive.limit_score(x, low, high, 0.05)
    assert out[0] == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert 0.0 <= out[0] <= 1.0


def _stack_params(bad_s: float = 0.0, guard: float = 1.0, guard_at: float = 0.5) -> np.ndarray:
    return signal_stack.pack_params(
        robust.make_params(alpha=0.02, warmup=20), cusum.make_params(k=0.5, h=6.0), stuck.make_params(warmup=20),
        rate.make_params(warmup=20),
        level_threshold=5.0, rate_threshold=7.0, limit_margin=0.05, machine_z_clip=4.0, bad_s=bad_s, guard=guard,
        guard_at=guard_at)


def _cfg(mask: int = 63) -> np.ndarray:
    cfg = np.zeros((N_SIG, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_LOW] = [-3.0, np.nan, 0.0, np.nan, np.nan]
    cfg[:, signal_stack.C_HIGH] = [9.0, 30.0, np.nan, np.nan, np.nan]
    cfg[:, signal_stack.C_MASK] = mask
    cfg[4, signal_stack.C_MASK] = 1 | 16  # level and range only
    return cfg


@pytest.mark.parametrize(("bad_s", "guard", "guard_at"), [(0.0, 1.0, 0.5), (0.5, 0.1, 0.3), (0.5, 0.0, 0.5)])
@pytest.mark.parametrize("mask", [63, 1, 2 | 4, 8 | 16])
def test_signal_stack_is_the_composition_of_its_parts(data, mask, bad_s, guard, guard_at):
    cfg = _cfg(mask)
    st_ = signal_stack.init_state(N_SIG)
    n = len(data["value"])
    score, kind, z_last = np.empty(n), np.empty(n, np.uint8), np.zeros(N_SIG)
    signal_stack.signal_chunk(data["ts"], data["signal"], data["value"], data["quality"], st_, cfg,
                              _stack_params(bad_s, guard, guard_at), score, kind, z_last)
    ref_score, ref_kind, ref_z = naive.signal_chunk(
        data["ts"], data["signal"], data["value"], data["quality"], cfg[:, 0], cfg[:, 1], cfg[:, 2].astype(int),
        level={"alpha": 0.02, "warmup": 20}, cusum={"h": 6.0}, stuck={"warmup": 20}, rate={"warmup": 20},
        level_threshold=5.0, rate_threshold=7.0, n_signals=N_SIG, bad_s=bad_s, guard=guard, guard_at=guard_at)
    np.testing.assert_allclose(score, ref_score, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(kind, ref_kind)
    np.testing.assert_allclose(z_last, ref_z, rtol=1e-9, atol=1e-12)
    assert np.all((score >= 0) & (score <= 1))


@pytest.mark.parametrize("guard", [1.0, 0.1])
def test_own_level_learning_rate_is_the_reference_with_that_alpha(data, guard):
    """``cfg[:, C_ALPHA]`` > 0 (kind ``per_part``): that signal's level learns at its own rate; 0 keeps the stack's.
    The data include NaN, inf, bad samples and a constant signal."""
    cfg = _cfg()
    own = np.array([0.003, 0.0, 0.5, 0.0, 0.001])
    cfg[:, signal_stack.C_ALPHA] = own
    st_ = signal_stack.init_state(N_SIG)
    n = len(data["value"])
    score, kind, z_last = np.empty(n), np.empty(n, np.uint8), np.zeros(N_SIG)
    signal_stack.signal_chunk(data["ts"], data["signal"], data["value"], data["quality"], st_, cfg,
                              _stack_params(0.5, guard, 0.3), score, kind, z_last)
    ref_score, ref_kind, ref_z = naive.signal_chunk(
        data["ts"], data["signal"], data["value"], data["quality"], cfg[:, 0], cfg[:, 1], cfg[:, 2].astype(int),
        level={"alpha": 0.02, "warmup": 20}, cusum={"h": 6.0}, stuck={"warmup": 20}, rate={"warmup": 20},
        level_threshold=5.0, rate_threshold=7.0, n_signals=N_SIG, bad_s=0.5, guard=guard, guard_at=0.3,
        level_alpha=own)
    np.testing.assert_allclose(score, ref_score, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(kind, ref_kind)
    np.testing.assert_allclose(z_last, ref_z, rtol=1e-9, atol=1e-12)
    plain = signal_stack.init_state(N_SIG)
    signal_stack.signal_chunk(data["ts"], data["signal"], data["value"], data["quality"], plain, _cfg(),
                              _stack_params(0.5, guard, 0.3), np.empty(n), np.empty(n, np.uint8), np.zeros(N_SIG))
    b = signal_stack.B_LEVEL
    np.testing.assert_array_equal(st_[[1, 3], b:b + 3], plain[[1, 3], b:b + 3])  # 0: the stack's rate, bit for bit
    assert not np.allclose(st_[0, b:b + 2], plain[0, b:b + 2])


def test_signal_stack_is_independent_of_chunking(data):
    n = len(data["value"])
    outs = []
    for cuts in ([n], [7, 100, 101, n]):
        st_ = signal_stack.init_state(N_SIG)
        score, kind, z_last = np.empty(n), np.empty(n, np.uint8), np.zeros(N_SIG)
        a = 0
        for b in cuts:
            sl = slice(a, b)
            signal_stack.signal_chunk(data["ts"][sl], data["signal"][sl], data["value"][sl], data["quality"][sl], st_,
                                      _cfg(), _stack_params(), score[sl], kind[sl], z_last)
            a = b
        outs.append((score, kind, st_))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][2], outs[1][2])


def test_signal_stack_flags_the_planted_faults(data):
    n = len(data["value"])
    st_ = signal_stack.init_state(N_SIG)
    score, kind, z_last = np.empty(n), np.empty(n, np.uint8), np.zeros(N_SIG)
    signal_stack.signal_chunk(data["ts"], data["signal"], data["value"], data["quality"], st_, _cfg(),
                              _stack_params(), score, kind, z_last)
    s0 = data["signal"] == 0
    assert score[s0].max() > 0.7  # spike at step 100 / shift at 300
    assert 3 in kind[(data["signal"] == 1) & (score >= 0.5)]  # stuck stretch of signal 1
    bad = (data["quality"] == 2) | ~np.isfinite(data["value"])
    assert np.all(score[bad] == 0.0) and np.all(kind[bad] == 0)


def test_a_signal_bad_for_longer_than_bad_s_scores_kind_bad():
    """A 1 Hz signal whose samples turn bad: score 0.5 (kind BAD) once it has been bad for ``bad_s``, 0 before
    it was ever good; a good sample ends it. Whatever the detector mask (a status word too)."""
    for mask in (63, 16):
        n = 20
        ts = np.arange(n, dtype=np.int64) * 1_000_000_000
        value = np.where((np.arange(n) >= 5) & (np.arange(n) < 15), np.nan, 1.0)
        value[0] = np.nan  # before the first good sample: nothing to measure the outage from
        quality = np.where(np.isnan(value), 2, 0).astype(np.uint8)
        cfg = np.zeros((1, signal_stack.C_WIDTH))
        cfg[:, signal_stack.C_LOW] = cfg[:, signal_stack.C_HIGH] = np.nan
        cfg[0, signal_stack.C_MASK] = mask
        score, kind = np.empty(n), np.empty(n, np.uint8)
        signal_stack.signal_chunk(ts, np.zeros(n, np.uint32), value, quality, signal_stack.init_state(1), cfg,
                                  _stack_params(3.0), score, kind, np.zeros(1))
        assert score[0] == 0.0 and kind[0] == 0
        assert score[7] == pytest.approx(0.5) and kind[7] == 8  # last good at 4 s, 3 s later
        assert np.all(score[5:7] < 0.5) and np.all(score[8:15] > 0.5) and np.all(kind[5:15] == 8)
        assert np.all(kind[15:] != 8)


def test_guarded_learning_keeps_a_persistent_step_in_alarm():
    """A step of 10 sigma held for 600 samples: with guard 1 the baseline absorbs it (the score falls below 0.5),
    with guard 0.1 it is still judged anomalous at the end."""
    n = 1600
    rng = np.random.default_rng(2)
    value = rng.normal(size=n) + np.where(np.arange(n) >= 1000, 10.0, 0.0)
    cfg = np.zeros((1, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_LOW] = cfg[:, signal_stack.C_HIGH] = np.nan
    cfg[0, signal_stack.C_MASK] = 1 | 2
    ends = {}
    for guard in (1.0, 0.1):
        score, kind = np.empty(n), np.empty(n, np.uint8)
        signal_stack.signal_chunk(np.arange(n, dtype=np.int64) * 10**9, np.zeros(n, np.uint32), value,
                                  np.zeros(n, np.uint8), signal_stack.init_state(1), cfg, _stack_params(guard=guard),
                                  score, kind, np.zeros(1))
        ends[guard] = score[-50:].min()
    assert ends[1.0] < 0.5 < ends[0.1]


@pytest.mark.parametrize("since_s", [0.0, 50.0, 250.0])
def test_silent_scan_matches_reference(since_s: float) -> None:
    """Never-seen (NaN), +-inf, constant and recent last timestamps; rows, scores and the skip bound all match."""
    rng = np.random.default_rng(3)
    n = 200
    st_ = signal_stack.init_state(n)
    last = rng.uniform(0.0, 400.0, n) * 1e9
    last[:20] = np.nan
    last[20:25] = np.inf
    last[25:30] = -np.inf
    last[30:60] = 100e9  # a constant run: many signals silent since the same moment
    st_[:, signal_stack.B_RATE + rate.LAST_TS] = last
    rows, score, bound = np.empty(n, np.int64), np.empty(n), np.empty(1)
    got = signal_stack.silent_scan(st_, since_s * 1e9, 400e9, 120e9, rows, score, bound)
    ref_rows, ref_score, ref_bound = naive.silent_scan(last, since_s * 1e9, 400e9, 120e9)
    assert got == ref_rows.shape[0] > 0
    np.testing.assert_array_equal(rows[:got], ref_rows)
    np.testing.assert_array_equal(score[:got], ref_score)
    assert bound[0] == ref_bound


def test_silent_check_skips_scans_but_finds_a_signal_that_falls_silent() -> None:
    """The stack skips the scan while every signal spoke recently, and still reports SILENT on time."""
    from edge.detectors.settings import AnalyticsSettings, QualitySettings
    from edge.detectors.stack import DetectorStack
    from edge.kernels.kinds import Kind

    n = 50
    stack = DetectorStack(n, np.full(n, -1), AnalyticsSettings(quality=QualitySettings(silent_s=10.0)))
    sig = np.arange(n, dtype=np.uint32)
    rng = np.random.default_rng(0)
    opened = []
    for f in range(40):
        keep = sig if f < 15 else sig[sig != 7]  # signal 7 stops at 15 s
        ts = np.full(keep.shape[0], f * 10**9, np.int64)
        r = stack.process(keep, rng.normal(size=keep.shape[0]), np.zeros(keep.shape[0], np.uint8), ts)
        opened += [(f, int(e["entity"])) for e in r.events if e["kind"] == Kind.SILENT and e["phase"] == 1]
    # last sample at 14 s: silent once more than 10 s have passed, i.e. at the check of 25 s
    assert opened == [(25, 7)]
