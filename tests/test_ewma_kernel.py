"""The EWMA z-score kernel against a plain numpy/Python reference, NaN, inf, constants and gaps."""

from __future__ import annotations

import numpy as np
import pytest

from edge.kernels.ewma import ewma_zscore


def reference(signal, value, quality, n, alpha, threshold, warmup, min_std):  # type: ignore[no-untyped-def]
    mean = np.zeros(n)
    var = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    scores = np.zeros(len(signal))
    for k, (s, x, q) in enumerate(zip(signal, value, quality, strict=True)):
        if q == 2 or not np.isfinite(x):
            continue
        if count[s] == 0:
            mean[s], var[s], count[s] = x, 0.0, 1
            continue
        d = x - mean[s]
        if count[s] >= warmup:
            z = d / max(np.sqrt(var[s]), min_std)
            scores[k] = z * z / (z * z + threshold * threshold)
        mean[s] += alpha * d
        var[s] = (1 - alpha) * (var[s] + d * alpha * d)
        count[s] += 1
    return scores, mean, var, count


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_with_nan_inf_constants_and_gaps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_sig, m = 7, 3000
    signal = rng.integers(0, n_sig, m).astype(np.uint32)
    value = rng.normal(10, 2, m)
    value[signal == 3] = 5.0  # constant run: variance 0, min_std guards the division
    value[rng.random(m) < 0.02] = np.nan
    value[rng.random(m) < 0.01] = np.inf
    value[rng.random(m) < 0.01] = -np.inf
    quality = np.where(rng.random(m) < 0.05, 2, 0).astype(np.uint8)  # gaps: bad samples
    value[rng.random(m) < 0.01] += 100.0  # spikes
    args = (0.05, 4.0, 20, 1e-6)
    mean, var, count = np.zeros(n_sig), np.zeros(n_sig), np.zeros(n_sig, dtype=np.int64)
    out = np.empty(m)
    # In two chunks: state carried across calls must equal one pass.
    a = m // 3
    ewma_zscore(signal[:a], value[:a], quality[:a], mean, var, count, *args, out[:a])
    ewma_zscore(signal[a:], value[a:], quality[a:], mean, var, count, *args, out[a:])
    ref_scores, ref_mean, ref_var, ref_count = reference(signal, value, quality, n_sig, *args)
    np.testing.assert_allclose(out, ref_scores, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(var, ref_var, rtol=1e-12, atol=1e-300)
    assert np.array_equal(count, ref_count)
    assert np.all((out >= 0) & (out <= 1))


def test_scores_before_learning_and_flags_a_spike() -> None:
    n = 200
    signal = np.zeros(n, dtype=np.uint32)
    value = np.sin(np.arange(n) / 5.0)
    value[150] = 50.0
    mean, var, count = np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64)
    out = np.empty(n)
    anomalies = ewma_zscore(signal, value, np.zeros(n, np.uint8), mean, var, count, 0.05, 5.0, 30, 1e-6, out)
    assert out[150] > 0.9  # judged by the model that had not yet seen it
    assert anomalies >= 1
    assert out[:30].max() == 0.0  # warm-up
