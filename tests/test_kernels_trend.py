"""Slow trend stage (``edge.kernels.trend``): reference equivalence, what it finds, what it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels import signal_stack, trend
from edge.kernels.kinds import EN_CHANGE, Kind
from tests import naive

T0_NS = 1_800_000_000_000_000_000
PARAMS = dict(bin_s=5.0, beta=0.25, alpha=0.02, huber_k=3.0, warmup=20, threshold=4.0, guard=0.1, guard_at=0.3,
              max_gap=3.0, rel_res=1e-6, peak_mult=1.5, peak_decay=0.01, machine_fraction=0.1, machine_min=2.0,
              machine_hold_s=120.0, run=3, tail_max=6.0, quiet_s=0.0, common_z=0.0, common_clip=4.0, rel_per_h=0.0)


def _run(ts, signal, value, quality, cfg, p, score, kind, machine_of=None, m_since=None, hold_until=None,
         class_of=None, class_fraction=0.0):
    n_sig = cfg.shape[0]
    st = trend.init_state(n_sig)
    mo = np.full(n_sig, -1, np.int64) if machine_of is None else machine_of
    en = (cfg[:, signal_stack.C_MASK].astype(int) & EN_CHANGE) != 0
    n_m = max(int(mo.max()) + 1, 1)
    members = np.bincount(mo[(mo >= 0) & en], minlength=n_m)
    need = np.maximum(PARAMS["machine_min"], PARAMS["machine_fraction"] * members).astype(np.float64)
    m_hot, m_held = np.zeros(n_m, np.int64), np.full(n_m, -1, np.int64)
    m_zsum, m_zn = np.zeros(n_m), np.zeros(n_m)
    since = np.full(n_m, -1, np.int64) if m_since is None else m_since
    hold = np.full(n_m, -1, np.int64) if hold_until is None else hold_until
    co = np.full(n_sig, -1, np.int64) if class_of is None else class_of
    n_c = max(int(co.max()) + 1, 1)
    c_need = np.maximum(PARAMS["machine_min"], class_fraction * np.bincount(co[(co >= 0) & en], minlength=n_c))
    c_hot, c_held = np.zeros(n_c, np.int64), np.full(n_c, -1, np.int64)
    score, kind = score.copy(), kind.copy()
    trend.trend_chunk(ts, signal, value, quality, st, cfg, signal_stack.C_MASK, EN_CHANGE, signal_stack.C_FROZEN,
                      signal_stack.C_RES, p, mo, m_hot, need, m_held, m_zsum, m_zn, since, hold, co, c_hot,
                      c_need.astype(np.float64), c_held, score, kind, int(Kind.CHANGE))
    hot = st[:, trend.HOT] != 0.0
    np.testing.assert_array_equal(c_hot, np.bincount(co[hot & (co >= 0)], minlength=n_c))
    # the machines' common-slope sums are those of the signals' own columns (what the stack recounts on restore)
    has = np.isfinite(st[:, trend.ZC]) & (mo >= 0)
    np.testing.assert_allclose(m_zsum, np.bincount(mo[has], weights=st[has, trend.ZC], minlength=n_m), atol=1e-9)
    np.testing.assert_array_equal(m_zn, np.bincount(mo[has], minlength=n_m))
    return score, kind, st


@pytest.mark.parametrize("machines,rules", [(False, False), (True, False), (True, True)])
def test_matches_reference_with_nan_inf_constant_gaps_and_quality(machines: bool, rules: bool) -> None:
    rng = np.random.default_rng(11)
    n_sig, n_t = 5, 3000
    t = np.arange(n_t, dtype=np.float64)
    x = np.empty((n_t, n_sig))
    x[:, 0] = 20 + np.sin(2 * np.pi * t / 300) + 0.05 * rng.normal(size=n_t)
    x[:, 0] += np.clip((t - 2000) / 500, 0, 1) * 6  # a drift
    x[:, 1] = 3.0  # constant
    x[:, 2] = rng.normal(size=n_t) * 100  # noise only
    x[:, 3] = np.where((t // 45) % 2 == 0, 10.0, 0.0) + 0.1 * rng.normal(size=n_t)  # a duty cycle
    x[:, 4] = 1e6 + np.cumsum(rng.normal(size=n_t))  # a random walk far from 0
    ts = (T0_NS + t[:, None] * 1e9 + np.zeros((1, n_sig))).astype(np.int64).ravel()
    value = x.ravel().copy()
    signal = np.tile(np.arange(n_sig, dtype=np.uint32), n_t)
    quality = np.zeros(value.size, dtype=np.uint8)
    value[rng.random(value.size) < 0.02] = np.nan
    value[rng.random(value.size) < 0.005] = np.inf
    value[rng.random(value.size) < 0.005] = -np.inf
    quality[rng.random(value.size) < 0.03] = 1
    quality[rng.random(value.size) < 0.03] = 2
    quality[(signal == 0) & (ts > T0_NS + 1200e9) & (ts < T0_NS + 1300e9)] = 2  # a 100-s gap: the slope restarts
    cfg = np.zeros((n_sig, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_MASK] = 63
    cfg[4, signal_stack.C_MASK] = 63 & ~EN_CHANGE  # stage off for this signal
    cfg[2, signal_stack.C_RES] = 0.5
    score0 = rng.random(value.size) * 0.4
    kind0 = np.ones(value.size, dtype=np.uint8)
    # with ``rules``: the quiet time after a state change (machine 1) and the common-slope rule (machine 0)
    params = dict(PARAMS, quiet_s=200.0, common_z=0.8, common_clip=3.0, rel_per_h=0.5) if rules else PARAMS
    p = trend.make_params(**params)
    # signals 0, 2 and 3 on one machine (0 and 3 trend at times: the machine is held then), 1 on another
    machine_of = np.array([0, 1, 0, 0, 0], np.int64) if machines else None
    m_since = np.array([-1, T0_NS + 2500 * 10**9], np.int64) if rules else None
    hold_until = np.array([T0_NS + 1500 * 10**9, -1], np.int64) if rules else None
    class_of = np.array([0, 1, 1, 0, -1], np.int64) if rules else None  # and classes across the machines
    got_s, got_k, _ = _run(ts, signal, value, quality, cfg, p, score0, kind0, machine_of, m_since, hold_until,
                           class_of, 0.5)
    enabled = (cfg[:, signal_stack.C_MASK].astype(int) & EN_CHANGE) != 0
    ref_s, ref_k = naive.trend_chunk(ts, signal, value, quality, score0, kind0, enabled, cfg[:, signal_stack.C_RES],
                                     int(Kind.CHANGE), machine_of, m_since, hold_until, class_of,
                                     class_fraction=0.5, **params)
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got_k, ref_k)
    assert got_s[signal == 4].tolist() == score0[signal == 4].tolist()  # disabled: untouched
    if not rules:  # (with them, signal 3's duty cycle holds machine 0 by the common-slope rule)
        assert (got_k == int(Kind.CHANGE)).any()  # the drift on signal 0 was judged
    assert np.all((got_s >= 0) & (got_s < 1))


def test_frozen_signal_is_skipped_and_restarts_after() -> None:
    n = 400
    ts = (T0_NS + np.arange(n) * 1e9).astype(np.int64)
    value = np.linspace(0, 40, n)
    cfg = np.zeros((1, signal_stack.C_WIDTH))
    cfg[0, signal_stack.C_MASK] = 63
    cfg[0, signal_stack.C_FROZEN] = 1.0
    p = trend.make_params(**PARAMS)
    _, _, st = _run(ts, np.zeros(n, np.uint32), value, np.zeros(n, np.uint8), cfg, p, np.zeros(n),
                    np.zeros(n, np.uint8))
    assert np.isnan(st[0, trend.T0]) and st[0, trend.STATS + 2] == 0.0  # nothing binned, nothing learned


def _wave_with_drift(n_s: int, drift_at_s: int, drift_s: float, drift: float, seed: int = 0) -> np.ndarray:
    """A zone temperature: an hourly swing of 1.2 K, noise 0.05 K, then a drift of ``drift`` K over ``drift_s``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_s, dtype=np.float64)
    x = 22 + 1.2 * np.sin(2 * np.pi * t / 3600) + 0.05 * rng.normal(size=n_s)
    return x + drift * np.clip((t - drift_at_s) / drift_s, 0, 1) * (t >= drift_at_s)


def _stack_scores(x: np.ndarray, settings: AnalyticsSettings) -> tuple[np.ndarray, np.ndarray]:
    st = DetectorStack(1, np.full(1, -1), settings, low=np.array([5.0]), high=np.array([40.0]), capacity=600)
    score, kind = np.empty(x.size), np.empty(x.size, np.uint8)
    for a in range(0, x.size, 600):  # frames of 10 minutes, as a gateway would hand them over at 1 Hz
        b = min(a + 600, x.size)
        ts = (T0_NS + np.arange(a, b) * 1e9).astype(np.int64)
        r = st.process(np.zeros(b - a, np.uint32), x[a:b], np.zeros(b - a, np.uint8), ts)
        score[a:b], kind[a:b] = r.score, r.kind
    return score, kind


@pytest.mark.parametrize("enabled", [True, False])
def test_finds_a_drift_on_a_wavy_signal_before_its_ramp_ends(enabled: bool) -> None:
    """What the stage is for: 4 K in 6 minutes on a signal swinging 1.2 K an hour (the simulated hvac zones'
    drifts, which the level and CUSUM found only when they dropped back). Off, the stack does not find it in time."""
    start, dur = 4 * 3600, 360
    x = _wave_with_drift(start + 600, start, dur, -4.0)
    s = AnalyticsSettings(trend={"enabled": enabled})
    score, kind = _stack_scores(x, s)
    clean = score[3600:start]  # after the trend's hour of warm-up: the hourly swing is its normal
    assert clean.max() < 0.3
    during = score[start:start + dur]
    hit = np.flatnonzero(during >= 0.5)
    if enabled:
        assert hit.size and hit[0] < dur * 0.6 and kind[start + hit[0]] == Kind.CHANGE
    else:
        assert not hit.size


def test_a_machine_wide_trend_is_held_and_one_signal_is_not() -> None:
    """A load ramp moves several of a machine's signals at once (held: an operating change); a drift moves one."""
    n_t, n_sig = 3000, 4
    t = np.arange(n_t, dtype=np.float64)
    rng = np.random.default_rng(5)
    x = 10 + np.sin(2 * np.pi * t[:, None] / 200) * 0.2 + 0.01 * rng.normal(size=(n_t, n_sig))
    ramp = np.clip((t - 2000) / 400, 0, 1) * 8
    x[:, 0] += ramp  # machine 0: one signal drifts
    x[:, 2] += ramp  # machine 1: both signals ramp together
    x[:, 3] += ramp
    ts = (T0_NS + t[:, None] * 1e9 + np.zeros((1, n_sig))).astype(np.int64).ravel()
    signal = np.tile(np.arange(n_sig, dtype=np.uint32), n_t)
    cfg = np.zeros((n_sig, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_MASK] = 63
    machine_of = np.array([0, 0, 1, 1], np.int64)
    n = ts.size
    score, _, _ = _run(ts, signal, x.ravel(), np.zeros(n, np.uint8), cfg, trend.make_params(**PARAMS),
                       np.zeros(n), np.zeros(n, np.uint8), machine_of)
    during = (ts >= T0_NS + 2000e9) & (ts < T0_NS + 2400e9)
    assert score[during & (signal == 0)].max() >= 0.5
    assert score[during & (signal >= 2)].max() < 0.5  # no alarm opens (on_threshold 0.5)


def test_checkpoint_keeps_the_trends_and_an_older_one_restores_them_cold(tmp_path) -> None:
    """The trend state is part of the detector checkpoint; a checkpoint from before the stage restores everything
    else warm and the trends learn again (their warm-up), instead of refusing the whole file."""
    x = _wave_with_drift(1800, 10**9, 1.0, 0.0)
    on = AnalyticsSettings(trend={"enabled": True})
    st = DetectorStack(1, np.full(1, -1), on, capacity=1800)
    ts = (T0_NS + np.arange(x.size) * 1e9).astype(np.int64)
    st.process(np.zeros(x.size, np.uint32), x, np.zeros(x.size, np.uint8), ts)
    path = tmp_path / "stack.npz"
    st.save(path)
    warm = DetectorStack(1, np.full(1, -1), on, capacity=16)
    warm.restore(path)
    np.testing.assert_array_equal(warm.trend_state, st.trend_state)
    assert st.trend_state[0, trend.STATS + 2] > 100  # bins learned
    with np.load(path, allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if k != "trend_state"}
        before_zc = {**old, "trend_state": z["trend_state"][:, :trend.ZC]}
    np.savez(path, **before_zc)  # saved before the common slope column: the trends are kept, ZC none
    kept = DetectorStack(1, np.full(1, -1), on, capacity=16)
    kept.restore(path)
    np.testing.assert_array_equal(kept.trend_state[:, :trend.ZC], st.trend_state[:, :trend.ZC])
    assert np.isnan(kept.trend_state[0, trend.ZC])
    np.savez(path, **old)
    cold = DetectorStack(1, np.full(1, -1), on, capacity=16)
    cold.restore(path)
    np.testing.assert_array_equal(cold.state, st.state)
    np.testing.assert_array_equal(cold.trend_state, trend.init_state(1))


def _machine_ramps(ramps: list[float], n_t: int = 3000, start_s: float = 2000.0, dur_s: float = 400.0,
                   seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One machine's signals, each with its own phase of a 200-s wave, and each a ramp of ``ramps[i]`` from
    ``start_s`` over ``dur_s``: (ts, signal, value, cfg)."""
    n_sig = len(ramps)
    t = np.arange(n_t, dtype=np.float64)
    rng = np.random.default_rng(seed)
    phase = rng.random(n_sig)[None, :] * 2 * np.pi
    x = 10 + np.sin(2 * np.pi * t[:, None] / 200 + phase) * 0.2 + 0.01 * rng.normal(size=(n_t, n_sig))
    x += np.clip((t[:, None] - start_s) / dur_s, 0, 1) * np.asarray(ramps, dtype=np.float64)[None, :]
    ts = (T0_NS + t[:, None] * 1e9 + np.zeros((1, n_sig))).astype(np.int64).ravel()
    signal = np.tile(np.arange(n_sig, dtype=np.uint32), n_t)
    cfg = np.zeros((n_sig, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_MASK] = 63
    return ts, signal, x.ravel(), cfg


def _max_during(params: dict, ramps: list[float], m_since: int = -1, hold_until: int = -1) -> list[float]:
    """Each signal's largest trend score during the ramps (``_machine_ramps``), all signals on machine 0."""
    ts, signal, value, cfg = _machine_ramps(ramps)
    n = ts.size
    score, _, _ = _run(ts, signal, value, np.zeros(n, np.uint8), cfg, trend.make_params(**params), np.zeros(n),
                       np.zeros(n, np.uint8), np.zeros(len(ramps), np.int64), np.array([m_since], np.int64),
                       np.array([hold_until], np.int64))
    during = (ts >= T0_NS + 2000e9) & (ts < T0_NS + 2400e9)
    return [float(score[during & (signal == i)].max()) for i in range(len(ramps))]


def test_no_trend_is_judged_shortly_after_a_state_change_or_an_operating_change_hold() -> None:
    """A machine that started (or ended an operating-change hold) 100 s before a ramp: the ramp is the start's own
    (a load ramp, thermals following), not a drift; with ``quiet_s`` 0 the same ramp is reported."""
    ramps = [8.0, 0.0, 0.0, 0.0, 0.0]
    assert _max_during(PARAMS, ramps, m_since=T0_NS + 1900 * 10**9)[0] >= 0.5
    quiet = dict(PARAMS, quiet_s=600.0)
    assert max(_max_during(quiet, ramps, m_since=T0_NS + 1900 * 10**9)) < 0.5
    assert max(_max_during(quiet, ramps, hold_until=T0_NS + 1900 * 10**9)) < 0.5
    # long after both, the same drift is reported
    assert _max_during(quiet, ramps, m_since=T0_NS + 1000 * 10**9, hold_until=T0_NS + 1000 * 10**9)[0] >= 0.5


def test_a_machine_whose_members_slope_together_on_average_is_held() -> None:
    """Four members slope a little (none alone trending: the machine-wide count does not see it) while one slopes
    steeply: with ``common_z`` the machine moves as one and nothing is reported; one steep signal among calm
    members is still reported."""
    together = [8.0, 2.5, 2.5, 2.5, 2.5]
    off = _max_during(PARAMS, together)
    assert off[0] >= 0.5 and max(off[1:]) < 0.3  # none of the four is hot (guard_at 0.3)
    common = dict(PARAMS, common_z=1.5)
    assert max(_max_during(common, together)) < 0.5
    assert _max_during(common, [8.0, 0.0, 0.0, 0.0, 0.0])[0] >= 0.5


def test_the_same_signal_trending_on_several_machines_is_held() -> None:
    """A shift's load ramp starts on every machine of a kind at once (the dev plant's compressors' ``speed``); a
    drift moves one signal of one machine. Four machines of one signal each, one class."""
    ts, signal, value, cfg = _machine_ramps([8.0, 8.0, 8.0, 0.0])
    n = ts.size
    machine_of = np.arange(4, dtype=np.int64)
    during = (ts >= T0_NS + 2000e9) & (ts < T0_NS + 2400e9)
    p = trend.make_params(**PARAMS)
    alone, _, _ = _run(ts, signal, value, np.zeros(n, np.uint8), cfg, p, np.zeros(n), np.zeros(n, np.uint8),
                       machine_of)
    assert alone[during & (signal == 0)].max() >= 0.5  # each machine alone: its one signal trends
    held, _, _ = _run(ts, signal, value, np.zeros(n, np.uint8), cfg, p, np.zeros(n), np.zeros(n, np.uint8),
                      machine_of, class_of=np.zeros(4, np.int64), class_fraction=0.5)
    assert held[during].max() < 0.5
    ts, signal, value, cfg = _machine_ramps([8.0, 0.0, 0.0, 0.0])
    one, _, _ = _run(ts, signal, value, np.zeros(n, np.uint8), cfg, p, np.zeros(n), np.zeros(n, np.uint8),
                     machine_of, class_of=np.zeros(4, np.int64), class_fraction=0.5)
    assert one[during & (signal == 0)].max() >= 0.5  # one machine's drift is not the plant's
