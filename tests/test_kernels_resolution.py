"""Resolution floor of the fused signal kernel (``cfg[:, C_RES]``): reference equivalence and what it is for."""

from __future__ import annotations

import math

import naive
import numpy as np

from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels import cusum, rate, robust, signal_stack, stuck
from edge.kernels.kinds import EN_CHANGE, EN_LEVEL, EN_RATE, Kind

LT = RT = 6.0


def _reference(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
               res: np.ndarray, span: np.ndarray | None = None, rate_span: float = 0.0) -> np.ndarray:
    """Level, change (plain CUSUM) and rate with the scales floored at res and res / typical period."""
    lv: dict[int, naive.Robust] = {}
    cs: dict[int, naive.Cusum] = {}
    rt: dict[int, naive.Rate] = {}
    out = np.zeros(len(signal))
    for k in range(len(signal)):
        s, x, q, t = int(signal[k]), float(value[k]), int(quality[k]), int(ts_ns[k])
        if q == 2 or not math.isfinite(x):
            continue
        r = lv.setdefault(s, naive.Robust(0.01, 3.0, 30, 1e-6))
        z = r.z(x)
        if res[s] > 0:
            z = (x - r.loc) / max(r.scale, 1e-6, res[s]) if not math.isnan(z) else z
        best = 0.0 if math.isnan(z) else z * z / (z * z + LT * LT)
        best = max(best, cs.setdefault(s, naive.Cusum(0.5, 8.0, 4.0, 2.0)).step(z))
        rr = rt.setdefault(s, naive.Rate(0.01, 3.0, 30, 1e-9, 5.0))
        step = max(res[s], rate_span * span[s]) if span is not None and span[s] > 0 else res[s]
        floor = step / rr.period if step > 0 and rr.period > 0 else 0.0
        sc0 = max(rr.stats.scale, 1e-9)
        zr = rr.step(x, t, q == 0)
        if not math.isnan(zr) and sc0 < floor:
            zr = zr * sc0 / floor
        best = max(best, 0.0 if math.isnan(zr) else zr * zr / (zr * zr + RT * RT))
        if q == 0:
            r.learn(x)
        out[k] = best
    return out


def _kernel(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
            res: np.ndarray, span: np.ndarray | None = None, rate_span: float = 0.0) -> np.ndarray:
    n_sig = res.shape[0]
    p = signal_stack.pack_params(robust.make_params(), cusum.make_params(), stuck.make_params(), rate.make_params(),
                                 level_threshold=LT, rate_threshold=RT, limit_margin=0.05, machine_z_clip=4.0,
                                 rate_span=rate_span)
    cfg = np.zeros((n_sig, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_LOW] = np.nan if span is None else np.where(np.isnan(span), np.nan, -1.0)
    cfg[:, signal_stack.C_HIGH] = np.nan if span is None else span - 1.0
    cfg[:, signal_stack.C_MASK] = EN_LEVEL | EN_CHANGE | EN_RATE
    cfg[:, signal_stack.C_RES] = res
    score, kind, z_last = np.empty(len(signal)), np.empty(len(signal), np.uint8), np.zeros(n_sig)
    signal_stack.signal_chunk(ts_ns, signal, value, quality, signal_stack.init_state(n_sig), cfg, p, score, kind,
                              z_last)
    return score


def test_matches_reference_with_nan_inf_constant_runs_and_gaps() -> None:
    rng = np.random.default_rng(4)
    n, n_sig = 8000, 4
    signal = rng.integers(0, n_sig, n).astype(np.uint32)
    ts = np.cumsum(rng.uniform(0.5, 1.5, n) * 1e9).astype(np.int64)
    ts[5000:] += 60 * 10**9  # a gap
    value = np.round(20.0 + 0.04 * rng.normal(size=n), 1)  # quantised at 0.1, noise below the step
    value[signal == 3] = np.round(np.cumsum(rng.random(int((signal == 3).sum())) < 0.02))  # a counter
    value[rng.random(n) < 0.02] = np.nan
    value[rng.random(n) < 0.005] = np.inf
    value[3000:3300] = 20.0  # constant run
    quality = np.zeros(n, np.uint8)
    quality[rng.random(n) < 0.02] = 2
    quality[rng.random(n) < 0.02] = 1
    res = np.array([0.1, 0.0, 0.1, 1.0])
    np.testing.assert_allclose(_kernel(ts, signal, value, quality, res), _reference(ts, signal, value, quality, res),
                               rtol=1e-12, atol=1e-15)
    span = np.array([np.nan, 40.0, 0.5, 1e6])  # the span floor on top: none, above, below the noise, huge
    np.testing.assert_allclose(_kernel(ts, signal, value, quality, res, span, 0.01),
                               _reference(ts, signal, value, quality, res, span, 0.01), rtol=1e-12, atol=1e-15)


def _opened(stack: DetectorStack, x: np.ndarray, after: int) -> dict[int, int]:
    n = x.shape[0]
    t = np.arange(n, dtype=np.int64) * 10**9
    out: dict[int, int] = {}
    for k in range(0, n, 200):
        sl = slice(k, min(k + 200, n))
        m = sl.stop - sl.start
        ev = stack.process(np.zeros(m, np.uint32), x[sl], np.zeros(m, np.uint8), t[sl]).events
        ev = ev[(ev["phase"] == 1) & (ev["ts_start"] >= after * 10**9)]
        for kd in ev["kind"].tolist():
            out[kd] = out.get(kd, 0) + 1
    return out


def test_quantised_signal_and_counter_stop_raising_rate_alarms_but_a_real_jump_still_alarms() -> None:
    rng = np.random.default_rng(9)
    n = 4 * 3600
    t = np.arange(n)
    # int16 x 0.1: a slow duty cycle under noise a tenth of a step -> long flat runs, then one step
    pump = np.round((6.0 + 0.5 * np.sin(2 * np.pi * t / 300) + 0.01 * rng.normal(size=n)) / 0.1) * 0.1
    counter = np.cumsum(rng.random(n) < 1 / 45).astype(np.float64)  # parts counted every ~45 s
    for x, res in ((pump, 0.1), (counter, 1.0)):
        # the precondition with the baseline learning at its own rate throughout (guarded learning would turn
        # the mis-scaled signal into one standing alarm instead of many), and every re-opening announced (the
        # signal alarms' re-arm window would fold the storm's repeats; it is not what is tested here)
        plain = _opened(DetectorStack(1, np.array([-1]), AnalyticsSettings(level={"guard": 1.0},
                                                                          signal_alarm={"rearm_count": 0})), x, 1800)
        floored = _opened(DetectorStack(1, np.array([-1]), resolution=np.array([res])), x, 1800)
        assert plain.get(Kind.RATE, 0) > 100  # every step (or count) reads as a huge slope
        assert sum(floored.values()) == 0
    jump = pump.copy()
    jump[10_000:] += 2.0  # 20 steps: a real change of a 6 A pump
    floored = _opened(DetectorStack(1, np.array([-1]), resolution=np.array([0.1])), jump, 9_990)
    assert sum(floored.values()) >= 1


def test_counter_kind_runs_only_range_and_rate() -> None:
    from edge.kernels.kinds import EN_COUNTER, EN_RANGE, mask_for

    assert mask_for("counter") == EN_COUNTER == EN_RANGE | EN_RATE
    rng = np.random.default_rng(2)
    counter = 1200.0 + np.cumsum(rng.random(4 * 3600) < 0.3) * 1.0  # climbs for ever
    as_counter = _opened(DetectorStack(1, np.array([-1]), enable=np.array([EN_COUNTER])), counter, 1800)
    assert as_counter.get(Kind.CHANGE, 0) == 0 and as_counter.get(Kind.LEVEL, 0) == 0
    racing = counter.copy()
    racing[10_000:] += np.arange(racing.shape[0] - 10_000) * 50.0  # counts 150x faster: a fault
    assert _opened(DetectorStack(1, np.array([-1]), enable=np.array([EN_COUNTER])), racing, 9_990).get(Kind.RATE, 0)


def test_per_part_kind_judges_no_slope_but_still_a_part_far_off() -> None:
    """A part's temperature steps at every part change (45 s cycles, offsets uniform in +-1.5 K, 0.1 K steps):
    as ``kind: per_part`` no rate alarm opens on those steps, while a part 8 K too hot is still a level alarm.
    The same series with every stage on opens rate alarms (what the kind is there to stop)."""
    from edge.kernels.kinds import EN_ALL, EN_PER_PART, mask_for

    assert mask_for("per_part") == EN_PER_PART == EN_ALL & ~EN_RATE
    rng = np.random.default_rng(5)
    n = 6 * 3600
    offsets = np.repeat(rng.uniform(-1.5, 1.5, n // 45 + 1), 45)[:n]
    x = np.round(24.0 + offsets + rng.normal(0, 0.05, n), 1)
    assert _opened(DetectorStack(1, np.array([-1]), enable=np.array([EN_ALL])), x, 1800).get(Kind.RATE, 0) >= 1
    as_part = _opened(DetectorStack(1, np.array([-1]), enable=np.array([EN_PER_PART])), x, 1800)
    assert as_part.get(Kind.RATE, 0) == 0
    hot = x.copy()
    hot[5 * 3600:5 * 3600 + 45] += 8.0
    assert _opened(DetectorStack(1, np.array([-1]), enable=np.array([EN_PER_PART])), hot, 5 * 3600 - 10).get(
        Kind.LEVEL, 0) >= 1


def test_float32_last_bit_flicker_is_no_event_with_the_relative_resolution() -> None:
    """A constant 56 kW read through float32, after hours of the same value, moves by one last bit: a huge level
    or rate z without the relative floor, nothing with it (level.rel_resolution); a real 1 kW step still scores."""
    n = 12_000
    x = np.full(n, 56.0)
    x[10_000:] = np.float32(56.0 + 3e-6)  # the float32 neighbour of 56
    x[11_000:] += 1.0
    scores = {}
    for rel in (0.0, 1e-6):
        st = DetectorStack(1, np.array([-1]), AnalyticsSettings(settle_s=0, level={"rel_resolution": rel}))
        r = st.process(np.zeros(n, np.uint32), x, np.zeros(n, np.uint8), np.arange(n, dtype=np.int64) * 10**9)
        scores[rel] = r.score.copy()
    assert scores[0.0][10_000] >= 0.5 and scores[1e-6][10_000] < 0.1
    assert scores[1e-6][11_000] >= 0.5


def test_per_part_level_judges_a_part_against_the_parts_before_it() -> None:
    """Parts 45 s each at offsets uniform in [-1, 2.5] K (the simulated leak testers' ``part_temp``), 0.1 K steps,
    plus a slow swing. Learned at the stack's level rate (~2 parts) the scale is the spread of the last few parts,
    and after a run of similar parts an ordinary one opens level alarms; at ``per_part.level_alpha`` (what
    ``from_table`` sets for kind ``per_part``) none opens, while a part 9 K too hot still does."""
    from edge.kernels.kinds import EN_PER_PART

    rng = np.random.default_rng(11)
    n = 24 * 3600
    offsets = np.repeat(rng.uniform(-1.0, 2.5, n // 45 + 1), 45)[:n]
    swing = 1.5 * np.sin(2 * np.pi * np.arange(n) / 1800.0)  # the parts' slow 30-minute swing
    x = np.round(24.0 + swing + offsets + rng.normal(0, 0.05, n), 1)
    own = np.array([AnalyticsSettings().per_part.level_alpha])

    def stack(alpha: np.ndarray | None) -> DetectorStack:
        return DetectorStack(1, np.array([-1]), enable=np.array([EN_PER_PART]), resolution=np.array([0.1]),
                             level_alpha=alpha)

    assert _opened(stack(None), x, 1800).get(Kind.LEVEL, 0) >= 3
    assert _opened(stack(own), x, 1800) == {}
    hot = x.copy()
    hot[23 * 3600:23 * 3600 + 45] += 9.0
    assert _opened(stack(own), hot, 23 * 3600 - 10).get(Kind.LEVEL, 0) >= 1


def test_from_table_gives_per_part_signals_their_own_level_rate() -> None:
    from pathlib import Path

    from plantwire.configfile import load_plant
    from plantwire.plant import expand

    table = expand(load_plant(Path(__file__).resolve().parents[1] / "configs" / "dev" / "plant.yaml"))
    settings = AnalyticsSettings(per_part={"level_alpha": 0.002})
    alpha = DetectorStack.from_table(table, settings).cfg[:, signal_stack.C_ALPHA]
    per_part = np.array([k == "per_part" for k in table.kinds])
    assert per_part.sum() == 6  # part_temp of the six leak testers
    assert np.all(alpha[per_part] == 0.002) and np.all(alpha[~per_part] == 0.0)
