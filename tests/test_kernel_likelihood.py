"""Anomaly likelihood kernel (``edge.kernels.likelihood``): equivalence with a plain reference, and what it is for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.kernels import likelihood as lk
from edge.kernels.kinds import EN_ALL, EN_COUNTER, EN_LEVEL, EN_RATE, EN_STATE, EN_STUCK, Kind

ALL1 = np.array([EN_ALL], dtype=np.int64)  # one signal, every detector enabled


class NaiveLikelihood:
    """Plain-Python reference for one signal: written from the module docstring, scalars only."""

    def __init__(self, p: np.ndarray) -> None:
        (self.err_alpha, self.huber, self.err_t, self.short_alpha, self.long_alpha, self.learn, self.mean_floor,
         self.var_floor, self.decades, self.novelty, self.min_scale, tails) = (float(v) for v in p[:lk.P_S_BINS])
        self.both = tails == 2.0
        self.n = 0
        self.prev = self.loc = self.scale = self.short = self.mean = self.var = 0.0
        self.lo = self.hi = 0.0

    def step(self, x: float, floor: float, learn: bool, enable: int) -> float:
        """Score of ``x`` (negative: lower tail, 2.0: novelty); learns ``x`` when ``learn``."""
        scale = max(self.scale, floor, self.min_scale)
        raw = 0.0
        if self.n >= 2:
            z = (x - self.prev - self.loc) / scale
            raw = 1.0 if not math.isfinite(z * z) else z * z / (z * z + self.err_t ** 2)
        short = raw if self.n < 2 else self.short + self.short_alpha * (raw - self.short)
        out = 0.0
        if self.n >= self.learn:
            zq = (short - max(self.mean, self.mean_floor)) / math.sqrt(max(self.var, self.var_floor))
            lower = self.both and bool(enable & EN_STUCK)
            if zq > lk.Z_CUT or (lower and zq < -lk.Z_CUT):  # closer to the mean: scores 0
                tail = 0.5 * math.erfc(abs(zq) / math.sqrt(2.0))
                d = -math.log10(tail) if tail > 1e-300 else 300.0
                out = d / (d + self.decades) * (1.0 if zq > 0 else -1.0)
            span = self.hi - self.lo
            if span > 0 and not math.isnan(self.novelty) and enable & EN_LEVEL and (x > self.hi + self.novelty * span
                                                                or x < self.lo - self.novelty * span):
                out = 2.0
        if not learn:
            return out
        if self.n == 0:
            self.lo = self.hi = x
        else:
            r = x - self.prev - self.loc
            a = max(self.err_alpha, 1.0 / self.n)
            if self.n >= 10:
                r = min(max(r, -self.huber * scale), self.huber * scale)
            self.loc += a * r
            self.scale = (1 - a) * self.scale + a * math.sqrt(math.pi / 2) * abs(r)
            a = max(self.long_alpha, 1.0 / self.n)
            dm = short - self.mean
            self.mean += a * dm
            self.var = (1 - a) * (self.var + a * dm * dm)
            self.lo, self.hi = min(self.lo, x), max(self.hi, x)
        self.short, self.prev = short, x
        self.n += 1
        return out


class NaiveSeason:
    """Plain-Python reference of the seasonal chain for one signal: a dict of bins, scalars for the rest."""

    def __init__(self, p: np.ndarray) -> None:
        self.p = {name: float(p[getattr(lk, name)]) for name in dir(lk) if name.startswith("P_")}
        self.bins: dict[int, float] = {}
        self.counts: dict[int, int] = {}
        self.n = 0
        self.scale = self.short = self.mean = self.var = 0.0
        self.last_ts: float | None = None

    def step(self, x: float, ts: float, floor: float, learn: bool) -> float:
        p = self.p
        h = math.floor(ts / p["P_S_BIN_NS"]) % int(p["P_S_BINS"])
        if self.counts.get(h, 0) < lk.S_BIN_MIN:  # a young bin: a plain running mean, nothing judged
            if learn:
                n_h = self.counts.get(h, 0)
                self.bins[h] = (self.bins.get(h, 0.0) * n_h + x) / (n_h + 1)
                self.counts[h], self.last_ts = n_h + 1, ts
            return 0.0
        scale = max(self.scale, floor, p["P_MIN_SCALE"])
        e = x - self.bins[h]
        raw = e * e / (e * e + (p["P_ERR_T"] * scale) ** 2) if self.n >= lk.S_SCALE_WARM else 0.0
        short = raw if self.n < 2 else self.short + p["P_SHORT_ALPHA"] * (raw - self.short)
        out = 0.0
        if self.n >= p["P_LEARN"]:
            dm = short - max(self.mean, p["P_MEAN_FLOOR"])
            var = max(self.var, p["P_VAR_FLOOR"])
            if dm > lk.Z_CUT * math.sqrt(var):
                tail = 0.5 * math.erfc(dm / math.sqrt(2 * var))
                d = -math.log10(tail) if tail > 1e-300 else 300.0
                out = d / (d + p["P_S_DECADES"])
        if learn:
            if self.n >= lk.S_SCALE_WARM:
                e = min(max(e, -p["P_ERR_HUBER"] * scale), p["P_ERR_HUBER"] * scale)
            a = max(lk.S_SCALE_ALPHA, 1.0 / (self.n + 1))
            self.scale = (1 - a) * self.scale + a * math.sqrt(math.pi / 2) * abs(e)
            dt = 0.0 if self.last_ts is None else max((ts - self.last_ts) / 1e9, 0.0)
            self.bins[h] += max(min(dt / p["P_S_MEMORY_S"], 1.0), 1.0 / (self.counts[h] + 1)) * e
            self.counts[h] += 1
            if self.n >= 1:
                a = max(p["P_LONG_ALPHA"], 1.0 / self.n)
                dm = short - self.mean
                self.mean += a * dm
                self.var = (1 - a) * (self.var + a * dm * dm)
            self.short, self.last_ts = short, ts
            self.n += 1
        return out


def reference(signal: np.ndarray, value: np.ndarray, quality: np.ndarray, floor: np.ndarray, enable: np.ndarray,
              p: np.ndarray, mode: int, score: np.ndarray, kind: np.ndarray,
              ts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    score, kind = score.copy(), kind.copy()
    ts = _seconds(signal.shape[0]) if ts is None else ts
    models: dict[int, NaiveLikelihood] = {}
    seasons: dict[int, NaiveSeason] = {}
    for k, (s, x, q) in enumerate(zip(signal.tolist(), value.tolist(), quality.tolist(), strict=True)):
        if q == 2 or not math.isfinite(x) or not enable[s] & (EN_LEVEL | EN_RATE):
            continue  # a gap, or a signal the stage does not judge: nothing learned, the stack's score stands
        v = models.setdefault(s, NaiveLikelihood(p)).step(x, float(floor[s]), q == 0, int(enable[s]))
        kd = int(Kind.RANGE) if v > 1.0 else (int(Kind.STUCK) if v < 0 else int(Kind.RATE))
        v = min(abs(v), 1.0)
        if p[lk.P_S_BINS] > 0 and enable[s] & EN_LEVEL:
            vs = seasons.setdefault(s, NaiveSeason(p)).step(x, float(ts[k]), float(floor[s]), q == 0)
            if vs > v:
                v, kd = vs, int(Kind.LEVEL)
        if mode == lk.MODE_REPLACE or (mode == lk.MODE_MAX and v > score[k]):
            score[k] = v
            kind[k] = kd if v > 0 else 0
    return score, kind


def _seconds(n: int) -> np.ndarray:
    """One sample a second from 2026-01-05 00:00 UTC."""
    return 1_767_571_200_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000_000


def chunk(signal, value, quality, st, floor, enable, p, mode, score, kind, ts=None, se=None) -> int:
    """The kernel with timestamps (default: 1 s apart) and a seasonal state sized from ``p``."""
    ts = _seconds(signal.shape[0]) if ts is None else ts
    se = lk.init_season(st.shape[0], int(p[lk.P_S_BINS])) if se is None else se
    return lk.likelihood_chunk(ts, signal, value, quality, st, se, floor, enable, p, mode, score, kind)


def kernel(signal, value, quality, floor, enable, p, mode, score, kind, ts=None):
    score, kind = score.copy(), kind.copy()
    st = lk.init_state(floor.shape[0])
    chunk(signal, value, quality, st, floor, enable, p, mode, score, kind, ts)
    return score, kind, st


def _messy(n: int = 8000, n_sig: int = 4, seed: int = 3):
    """Interleaved signals: noise, a daily-like cycle, constant runs, steps, spikes, NaN, inf, gaps, uncertain."""
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, n_sig, n).astype(np.uint32)
    t = np.arange(n)
    value = np.sin(t / 50.0) * 3.0 + rng.normal(size=n) * (1 + (signal == 1) * 4.0)
    value[signal == 2] = np.round(value[signal == 2])  # quantised
    const = (signal == 3) & ((t // 700) % 2 == 0)
    value[const] = 5.0  # constant runs
    value[t > n // 2] += 8.0 * (signal[t > n // 2] == 0)  # a step
    spikes = rng.random(n) < 0.005
    value[spikes] += 40.0
    value[rng.random(n) < 0.02] = np.nan
    value[rng.random(n) < 0.005] = np.inf
    value[rng.random(n) < 0.005] = -np.inf
    quality = np.zeros(n, dtype=np.uint8)
    quality[rng.random(n) < 0.03] = 2  # gaps
    quality[rng.random(n) < 0.03] = 1  # uncertain: scored, not learned
    floor = np.array([0.0, 0.0, 1.0, 0.0])[:n_sig]
    score = rng.random(n)
    kind = rng.integers(0, 5, n).astype(np.uint8)  # the stack's kinds, RANGE (5) left out to see novelty
    return signal, value, quality, floor, score, kind


def _irregular_ts(n: int, seed: int = 4) -> np.ndarray:
    """Timestamps 1 s to 15 min apart (bins cycle over ~40 days), one jump backwards, one long gap."""
    rng = np.random.default_rng(seed)
    dt = rng.integers(1, 900, n).astype(np.int64) * 1_000_000_000
    dt[n // 3] = -3_600_000_000_000  # a clock set back an hour
    dt[n // 2] = 3 * 86_400_000_000_000  # three days without data
    return 1_767_571_200_000_000_000 + np.cumsum(dt)


@pytest.mark.parametrize("mode", [lk.MODE_OFF, lk.MODE_MAX, lk.MODE_REPLACE])
@pytest.mark.parametrize("novelty", [0.02, 0.0, math.nan])
@pytest.mark.parametrize("tails", [1, 2])
@pytest.mark.parametrize("bins", [0, 24])
def test_matches_reference_with_nan_inf_constant_runs_and_gaps(mode: int, novelty: float, tails: int,
                                                              bins: int) -> None:
    signal, value, quality, floor, score, kind = _messy()
    ts = _irregular_ts(signal.shape[0])
    p = lk.make_params(learn=50, novelty_margin=novelty, tails=tails, season_bins=bins)
    enable = np.full(floor.shape[0], EN_ALL, dtype=np.int64)
    got_s, got_k, _ = kernel(signal, value, quality, floor, enable, p, mode, score, kind, ts)
    ref_s, ref_k = reference(signal, value, quality, floor, enable, p, mode, score, kind, ts)
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got_k, ref_k)
    assert np.isfinite(got_s).all() and ((got_s >= 0) & (got_s <= 1)).all()
    if mode != lk.MODE_OFF:
        assert (got_s != score).any()  # the stage did something
        assert (got_k == int(Kind.RANGE)).any() == (novelty == novelty)  # novelty only with a margin
        if mode == lk.MODE_REPLACE:
            scored = (quality != 2) & np.isfinite(value)  # gaps keep the stack's kind
            assert (got_k[scored] == int(Kind.STUCK)).any() == (tails == 2)  # the lower tail only with both
            assert (got_k[scored] == int(Kind.LEVEL)).any() == (bins > 0)  # the seasonal chain only with bins
    else:
        np.testing.assert_array_equal(got_s, score)  # OFF: the kernel still learns but changes no score


def test_enable_bits_choose_what_applies() -> None:
    """Status words are not judged, counters get no novelty or lower tail, a signal without stuck no lower tail."""
    signal, value, quality, floor, score, kind = _messy()
    enable = np.array([EN_ALL, EN_COUNTER, EN_STATE, EN_ALL & ~EN_STUCK], dtype=np.int64)
    p = lk.make_params(learn=50)
    got_s, got_k, st = kernel(signal, value, quality, floor, enable, p, lk.MODE_REPLACE, score, kind)
    ref_s, ref_k = reference(signal, value, quality, floor, enable, p, lk.MODE_REPLACE, score, kind)
    np.testing.assert_allclose(got_s, ref_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got_k, ref_k)
    word = signal == 2
    np.testing.assert_array_equal(got_s[word], score[word])  # the stack's judgement of a status word stands
    assert not st[2].any()
    judged = (quality != 2) & np.isfinite(value)
    for s_, banned in ((1, (Kind.RANGE, Kind.STUCK)), (3, (Kind.STUCK,))):
        k = got_k[(signal == s_) & judged]
        assert not np.isin(k, [int(b) for b in banned]).any()
    assert (got_k[(signal == 0) & judged] == int(Kind.STUCK)).any()  # the full signal does get both
    assert (got_k[(signal == 1) & judged] == int(Kind.RATE)).any()  # and the counter its rate likelihood


def test_gaps_leave_score_kind_and_state_alone_and_uncertain_samples_are_not_learned() -> None:
    rng = np.random.default_rng(0)
    n = 400
    signal = np.zeros(n, dtype=np.uint32)
    value = rng.normal(size=n)
    quality = np.zeros(n, dtype=np.uint8)
    floor = np.zeros(1)
    p = lk.make_params(learn=20)
    st = lk.init_state(1)
    score, kind = np.zeros(n), np.zeros(n, dtype=np.uint8)
    se = lk.init_season(1, 24)
    chunk(signal, value, quality, st, floor, ALL1, p, lk.MODE_REPLACE, score, kind, se=se)
    before, se_before = st.copy(), se.copy()
    bad_v = np.array([np.nan, np.inf, -np.inf, 1e6, 1e6, 0.3])
    bad_q = np.array([0, 0, 0, 2, 2, 1], dtype=np.uint8)
    s2, k2 = np.full(6, 0.7), np.full(6, 3, dtype=np.uint8)
    chunk(np.zeros(6, dtype=np.uint32), bad_v, bad_q, st, floor, ALL1, p, lk.MODE_REPLACE, s2, k2,
          ts=_seconds(n + 6)[n:], se=se)
    np.testing.assert_array_equal(st, before)  # nothing learned from gaps or the uncertain sample
    np.testing.assert_array_equal(se, se_before)
    np.testing.assert_array_equal(s2[:5], 0.7)
    np.testing.assert_array_equal(k2[:5], 3)  # the stack's judgement of a gap stands
    assert s2[5] != 0.7  # the uncertain sample is scored


def test_score_is_the_gaussian_tail_in_decades_and_threshold_scores_one_half() -> None:
    """A short average 3.719 sd above the long mean has tail 1e-4: 4 decades, which scores 0.5 at T = 4."""
    p = lk.make_params(learn=2, threshold_decades=4.0, short_alpha=1.0, novelty_margin=math.nan, err_threshold=1.0)
    st = lk.init_state(1)
    z_tail = 3.7190164854556804  # Q(z) = 1e-4
    mean, var = 0.2, 0.01
    raw = mean + z_tail * math.sqrt(var)  # the raw score the next change must produce (short_alpha 1)
    z = math.sqrt(raw / (1.0 - raw))  # raw = z^2 / (z^2 + 1)
    st[0] = [10.0, 0.0, 0.0, 1.0, 0.0, mean, var, -1.0, 1.0]
    out = lk.likelihood_step(st, 0, z, 0.0, False, p, EN_ALL)
    assert out == pytest.approx(0.5, abs=1e-9)


def test_learning_period_scores_zero_and_a_burst_in_a_noisy_signal_scores_high() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    value = rng.normal(size=n) * 5.0
    value[15_000:15_040] = rng.normal(size=40) * 40.0  # a burst of large changes, within the learned range
    value[15_000:15_040] = np.clip(value[15_000:15_040], value[:15_000].min(), value[:15_000].max())
    signal = np.zeros(n, dtype=np.uint32)
    score, kind = np.zeros(n), np.zeros(n, dtype=np.uint8)
    p = lk.make_params(learn=100)
    chunk(signal, value, np.zeros(n, dtype=np.uint8), lk.init_state(1), np.zeros(1), ALL1, p,
          lk.MODE_REPLACE, score, kind)
    assert (score[:100] == 0).all()
    assert (score[2000:15_000] >= 0.5).mean() < 0.002  # its own noise is not anomalous, however large
    assert score[15_000:15_040].max() >= 0.5
    burst = kind[15_000:15_040][score[15_000:15_040] >= 0.5]
    assert np.isin(burst, [int(Kind.RATE), int(Kind.LEVEL)]).all()  # large changes; some values off the hour's
    assert (burst == int(Kind.RATE)).mean() > 0.5


def test_novelty_scores_one_and_constant_signal_stays_finite() -> None:
    n = 600
    value = np.empty(n)
    value[:300] = 5.0  # a constant run first: a zero change scale must not give NaN
    value[300:] = 1.0 + (np.arange(300) % 2)
    value[500] = 4.9  # inside the range seen (1..5)
    value[550] = 5.2  # 0.2 beyond the range of span 4: 5 % > the 2 % margin
    signal = np.zeros(n, dtype=np.uint32)
    score, kind = np.zeros(n), np.zeros(n, dtype=np.uint8)
    chunk(signal, value, np.zeros(n, dtype=np.uint8), lk.init_state(1), np.zeros(1), ALL1,
          lk.make_params(learn=100), lk.MODE_REPLACE, score, kind)
    assert np.isfinite(score).all()
    assert score[550] == 1.0 and kind[550] == int(Kind.RANGE)
    assert kind[500] != int(Kind.RANGE)
    assert score[300:320].max() >= 0.5  # changes after a constant run are improbable


@pytest.mark.parametrize("tails", [1, 2])
def test_lower_tail_reports_a_signal_that_stops_moving(tails: int) -> None:
    """Noise, then the signal freezes inside its range: improbably small changes, kind STUCK, only with both tails."""
    rng = np.random.default_rng(5)
    n = 6000
    value = rng.normal(size=n)
    value[5000:5200] = 0.1  # frozen, well inside the range: neither novelty nor a large change
    score, kind = np.zeros(n), np.zeros(n, dtype=np.uint8)
    chunk(np.zeros(n, dtype=np.uint32), value, np.zeros(n, dtype=np.uint8), lk.init_state(1),
          np.zeros(1), ALL1, lk.make_params(tails=tails), lk.MODE_REPLACE, score, kind)
    frozen = (score[5000:5200] >= 0.5) & (kind[5000:5200] == int(Kind.STUCK))
    assert frozen.any() == (tails == 2)
    assert (score[1000:5000] >= 0.5).mean() < 0.01  # white noise: rare new extremes (novelty) and tails


@pytest.mark.parametrize("bins", [0, 24])
def test_seasonal_chain_reports_a_daily_swing_that_did_not_come(bins: int) -> None:
    """5-minute data, a daily peak; on day 12 the afternoon stays at the morning's level (usual values, wrong time)."""
    rng = np.random.default_rng(9)
    per_day = 288
    n = 14 * per_day
    t = np.arange(n)
    day_phase = (t % per_day) / per_day
    value = 10.0 + 5.0 * np.exp(-((day_phase - 0.6) / 0.08) ** 2) + rng.normal(size=n) * 0.2
    stall = slice(12 * per_day + int(0.45 * per_day), 12 * per_day + int(0.75 * per_day))
    value[stall] = 10.0 + rng.normal(size=stall.stop - stall.start) * 0.2
    ts = 1_767_571_200_000_000_000 + t.astype(np.int64) * 300_000_000_000
    score, kind = np.zeros(n), np.zeros(n, dtype=np.uint8)
    chunk(np.zeros(n, dtype=np.uint32), value, np.zeros(n, dtype=np.uint8), lk.init_state(1), np.zeros(1), ALL1,
          lk.make_params(season_bins=bins), lk.MODE_REPLACE, score, kind, ts=ts)
    seasonal = (score >= 0.5) & (kind == int(Kind.LEVEL))
    assert seasonal[stall].any() == (bins > 0)
    assert not seasonal[2 * per_day:12 * per_day].any()  # the usual days raise nothing


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        lk.make_params(long_alpha=0.0)
    with pytest.raises(ValueError):
        lk.make_params(learn=1)
    with pytest.raises(ValueError):
        lk.make_params(novelty_margin=-0.1)
    with pytest.raises(ValueError):
        lk.make_params(tails=3)
    with pytest.raises(ValueError):
        lk.make_params(season_bins=-1)
