"""Vibration features against numpy's FFT, and what they are for."""

from __future__ import annotations

import naive
import numpy as np

from edge.kernels import vibration


def test_features_match_reference_and_parseval():
    rng = np.random.default_rng(6)
    fs = 1000.0
    t = np.arange(256) / fs
    blocks = np.stack([
        np.sin(2 * np.pi * 50 * t) + 0.1 * rng.normal(size=256),
        rng.normal(size=256) + 3.0,
        np.full(256, 2.5),  # constant: all zeros
        np.where(np.arange(256) == 9, np.nan, 1.0),  # a gap: NaN features
        rng.standard_t(3, size=256),  # heavy tails: high kurtosis
    ])
    odd = rng.normal(size=(2, 255))  # odd length: no Nyquist bin
    edges = np.array([0.0, 40.0, 60.0, 200.0, 500.01])
    for b in (blocks, odd):
        out = np.empty((b.shape[0], vibration.n_features(4)))
        vibration.waveform_features(b, fs, edges, out)
        np.testing.assert_allclose(out, naive.waveform_features(b, fs, edges), rtol=1e-8, atol=1e-10, equal_nan=True)
        ok = np.isfinite(out[:, 0]) & (out[:, 0] > 0)
        np.testing.assert_allclose(out[ok, 3:].sum(axis=1), out[ok, 0] ** 2, rtol=1e-8)
    out = np.empty((5, 7))
    vibration.waveform_features(blocks, fs, edges, out)
    assert out[0, 4] / out[0, 0] ** 2 > 0.95  # the 50 Hz sine's energy is in the 40-60 Hz band
    assert abs(out[0, 1] - 1.5) < 0.1  # sine kurtosis
    assert abs(out[1, 1] - 3.0) < 0.8  # Gaussian kurtosis
    assert np.all(out[2] == 0.0) and np.all(np.isnan(out[3]))
