"""Machine subspace kernel against tests/naive.py, and that it sees a broken correlation."""

from __future__ import annotations

import naive
import numpy as np

from edge.kernels import subspace


def _machines():
    # machine 0: signals 0..5; machine 1: signals 6..7 (too few for k=2: scores 0); signal 8: no machine
    machine_of = np.array([0, 0, 0, 0, 0, 0, 1, 1, -1], dtype=np.int32)
    m_ptr = np.array([0, 6, 8], dtype=np.int64)
    m_sig = np.array([0, 1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    return machine_of, m_ptr, m_sig


def _z_stream(n: int, seed: int = 3, break_at: int | None = None) -> np.ndarray:
    """Six signals driven by two latent loads; after ``break_at`` signal 4 stops following them."""
    rng = np.random.default_rng(seed)
    load = rng.normal(size=(n, 2))
    mix = rng.normal(size=(2, 6))
    mix /= np.linalg.norm(mix, axis=0)  # every signal equally explained by the loads
    z = load @ mix + 0.1 * rng.normal(size=(n, 6))
    if break_at is not None:
        z[break_at:, 4] = -z[break_at:, 4]
    z[7, :] = 0.0  # an all-zero tick (everything in warm-up)
    out = np.zeros((n, 9))
    out[:, :6] = z
    out[:, 6:8] = rng.normal(size=(n, 2))
    return np.clip(out, -4, 4)


def _run(zs: np.ndarray, k: int = 2):
    machine_of, m_ptr, m_sig = _machines()
    p = subspace.make_params(warmup=20, threshold=4.0, eta=0.005)
    w = subspace.init_basis(m_ptr, k)
    mst = np.zeros((2, 3))
    touched = np.zeros(2, np.uint8)
    tm, ts_, tt = np.empty(2, np.int64), np.empty(2), np.empty(2, np.int64)
    frame_signals = np.array([8, 3, 7, 0, 3], dtype=np.uint32)  # machine 0 first, then 1; 8 has none
    scores, tops = [], []
    for z in zs:
        n = subspace.machine_tick(frame_signals, machine_of, m_ptr, m_sig, z, w, mst, p, touched, tm, ts_, tt)
        assert n == 2 and list(tm[:2]) == [0, 1] and not touched.any()
        scores.append(ts_[:2].copy())
        tops.append(tt[:2].copy())
    return np.array(scores), np.array(tops), w


def test_subspace_matches_reference():
    zs = _z_stream(300)
    scores, tops, w = _run(zs)
    ref = naive.Subspace(6, 2, {"alpha": 0.01, "huber_k": 3.0, "warmup": 20, "min_scale": 1e-3}, 4.0, 0.005)
    for i, z in enumerate(zs):
        sc, top = ref.tick(z[:6])
        assert abs(scores[i, 0] - sc) < 1e-9
        assert tops[i, 0] == top
    np.testing.assert_allclose(w[:6], ref.w, atol=1e-9)
    assert np.all(scores[:, 1] == 0.0) and np.all(tops[:, 1] == -1)
    np.testing.assert_allclose(w[:6].T @ w[:6], np.eye(2), atol=1e-9)


def test_subspace_flags_a_broken_correlation_and_names_the_signal():
    zs = _z_stream(1500, break_at=1200)
    scores, tops, _ = _run(zs)
    assert np.quantile(scores[300:1200, 0], 0.999) < 0.5
    assert np.mean(scores[1200:1212, 0] >= 0.5) > 0.5
    assert np.mean(tops[1200:1240, 0] == 4) > 0.8
