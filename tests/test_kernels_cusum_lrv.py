"""CUSUM with the long-run-variance correction (``rho_alpha > 0``): reference equivalence, and what it is for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack
from edge.kernels import cusum
from edge.kernels.kinds import Kind


class NaiveCusumLrv:
    """Plain-Python reference: CUSUM on z / sqrt(F), F = learned variance of z's short mean over its iid value."""

    def __init__(self, k: float, h: float, z_clip: float, cap: float, rho_alpha: float) -> None:
        self.k, self.h, self.z_clip, self.cap, self.b = k, h, z_clip, cap, rho_alpha
        self.pos = self.neg = self.m = self.v = 0.0

    def step(self, z: float) -> float:
        if not math.isfinite(z):
            return 0.0
        z = min(max(z, -self.z_clip), self.z_clip)
        if self.b > 0:
            iid = cusum.SMOOTH / (2.0 - cusum.SMOOTH)
            f = min(max(self.v / iid, 1.0), cusum.F_MAX)  # read before learning this sample
            self.m += cusum.SMOOTH * (z - self.m)
            self.v += self.b * (self.m ** 2 - self.v)
            z = z / math.sqrt(f)
        top = self.cap * self.h
        self.pos = min(max(self.pos + z - self.k, 0.0), top)
        self.neg = min(max(self.neg - z - self.k, 0.0), top)
        s = max(self.pos, self.neg)
        return s * s / (s * s + self.h * self.h)


def _kernel(signal: np.ndarray, z: np.ndarray, p: np.ndarray, n_sig: int) -> np.ndarray:
    out = np.empty(z.shape[0])
    cusum.cusum_chunk(signal, z, np.zeros((n_sig, cusum.WIDTH)), p, out)
    return out


def _reference(signal: np.ndarray, z: np.ndarray, *args: float) -> np.ndarray:
    st: dict[int, NaiveCusumLrv] = {}
    return np.array([st.setdefault(s, NaiveCusumLrv(*args)).step(v) for s, v in zip(signal.tolist(), z.tolist(),
                                                                                      strict=True)])


@pytest.mark.parametrize("rho_alpha", [0.0, 0.001, 0.05])
def test_matches_reference_with_nan_inf_constant_runs_and_gaps(rho_alpha: float) -> None:
    rng = np.random.default_rng(7)
    n, n_sig = 6000, 5
    signal = rng.integers(0, n_sig, n).astype(np.uint32)
    z = rng.normal(size=n) + np.sin(np.arange(n) / 40.0) * 3.0  # white and autocorrelated parts
    z[rng.random(n) < 0.03] = np.nan
    z[rng.random(n) < 0.01] = np.inf
    z[rng.random(n) < 0.01] = -np.inf
    z[2000:2300] = 2.5  # constant run
    z[3000:3400] = np.nan  # gap
    args = (0.5, 8.0, 4.0, 2.0, rho_alpha)
    got = _kernel(signal, z, cusum.make_params(*args), n_sig)
    np.testing.assert_allclose(got, _reference(signal, z, *args), rtol=1e-12, atol=1e-15)
    assert np.all(got[np.isnan(z)] == 0.0)


def test_off_is_plain_cusum() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=3000)
    sig = np.zeros(3000, np.uint32)
    a = _kernel(sig, z, cusum.make_params(rho_alpha=0.0), 1)
    out = np.empty(3000)
    st = np.zeros((1, cusum.WIDTH))
    cusum.cusum_chunk(sig, z, st, cusum.make_params(), out)
    np.testing.assert_array_equal(a, out)
    assert np.all(st[:, cusum.SMEAN:] == 0.0)  # the correction's state is untouched when off


def test_wandering_residuals_no_longer_alarm_but_a_shift_in_white_noise_still_does() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    sig = np.zeros(n, np.uint32)
    # residuals of a duty-cycled signal against a slow baseline: a 300-sample cycle under white noise
    wander = 1.5 * np.sin(2 * np.pi * np.arange(n) / 300.0) + 0.5 * rng.normal(size=n)
    plain = _kernel(sig, wander, cusum.make_params(), 1)
    lrv = _kernel(sig, wander, cusum.make_params(rho_alpha=0.001), 1)
    assert (plain[5000:] >= 0.5).mean() > 0.2  # the plain test alarms every half cycle
    assert lrv[5000:].max() < 0.5  # corrected: quiet once F is learned
    white = rng.normal(size=n)
    white[15_000:] += 1.5  # the 1.5-sigma shift plain CUSUM is there for
    out = _kernel(sig, white, cusum.make_params(rho_alpha=0.001), 1)
    base = _kernel(sig, white, cusum.make_params(), 1)
    # on white noise the correction stays out of the way: no more alarms than plain CUSUM, and the shift is
    # found within a few dozen samples as before
    assert (out[:15_000] >= 0.5).sum() <= (base[:15_000] >= 0.5).sum()
    assert out[15_000:15_060].max() >= 0.5


def test_stack_default_raises_no_change_alarm_on_a_duty_cycle() -> None:
    """A noisy signal on a 5-minute duty cycle, sampled at 1 Hz: the plant's commonest shape."""
    n = 4 * 3600
    rng = np.random.default_rng(5)
    t = np.arange(n)
    x = 32.0 + 6.0 * np.sin(2 * np.pi * t / 300.0) + 0.3 * rng.normal(size=n)
    counts = {}
    for name, rho in (("plain", 0.0), ("default", None)):
        s = AnalyticsSettings() if rho is None else AnalyticsSettings.model_validate({"change": {"rho_alpha": rho}})
        stack = DetectorStack(1, np.array([-1]), s)
        opened = 0
        for k in range(0, n, 100):  # frames of 100 samples
            sl = slice(k, min(k + 100, n))
            m = sl.stop - sl.start
            r = stack.process(np.zeros(m, np.uint32), x[sl], np.zeros(m, np.uint8), t[sl].astype(np.int64) * 10**9)
            ev = r.events
            if k >= 3600:  # after an hour of learning
                opened += int(((ev["phase"] == 1) & (ev["kind"] == Kind.CHANGE)).sum())
        counts[name] = opened
    assert counts["plain"] > 20
    assert counts["default"] == 0


def test_fused_stack_kernel_runs_the_corrected_cusum() -> None:
    """signal_chunk with only the change stage enabled == robust z (reference) -> corrected CUSUM (reference)."""
    import naive

    from edge.kernels import rate, robust, signal_stack, stuck
    from edge.kernels.kinds import EN_CHANGE

    rng = np.random.default_rng(21)
    n, n_sig = 8000, 4
    signal = rng.integers(0, n_sig, n).astype(np.uint32)
    t = np.arange(n, dtype=np.float64)
    value = 10.0 + 3.0 * np.sin(t / 25.0) + rng.normal(size=n)
    value[rng.random(n) < 0.02] = np.nan
    value[4000:4400] = 7.0  # constant run
    quality = np.zeros(n, np.uint8)
    quality[rng.random(n) < 0.02] = 2
    quality[rng.random(n) < 0.02] = 1
    ts = (t * 1e9).astype(np.int64)
    args = (0.5, 8.0, 4.0, 2.0, 0.002)
    p = signal_stack.pack_params(robust.make_params(), cusum.make_params(*args), stuck.make_params(),
                                 rate.make_params(), level_threshold=6.0, rate_threshold=6.0, limit_margin=0.05,
                                 machine_z_clip=4.0)
    cfg = np.zeros((n_sig, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_LOW] = np.nan
    cfg[:, signal_stack.C_HIGH] = np.nan
    cfg[:, signal_stack.C_MASK] = EN_CHANGE
    score, kind, z_last = np.empty(n), np.empty(n, np.uint8), np.zeros(n_sig)
    signal_stack.signal_chunk(ts, signal, value, quality, signal_stack.init_state(n_sig), cfg, p, score, kind, z_last)
    z = naive.robust_chunk(signal, value, quality)
    np.testing.assert_allclose(score, _reference(signal, z, *args), rtol=1e-12, atol=1e-15)
