"""Health index and RUL: kernel against a numpy reference, model files, estimator wiring, fitter on real data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.kernels import health
from edge.pdm.rul import RulEstimator, RulModel, RulModelError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools.fit_rul import FitSettings, cmapss_runs, fit, read_cmapss  # noqa: E402

CMAPSS = ROOT.parent / "shared" / "datasets" / "cmapss"


def _model(seed: int = 0, n_op: int = 2, d: int = 3, k: int = 2, h: int = 5) -> RulModel:
    rng = np.random.default_rng(seed)
    f = health.n_features(d)
    return RulModel(
        op_names=np.array([f"op{i}" for i in range(n_op)]), sensor_names=np.array([f"s{i}" for i in range(d)]),
        cond=np.array([[0.0] * n_op, [10.0] * n_op])[:k], op_scale=np.ones(n_op),
        norm=np.stack([rng.normal(size=(k, d)), rng.uniform(0.5, 2.0, size=(k, d))]),
        fnorm=np.stack([rng.normal(size=f), rng.uniform(0.5, 2.0, size=f)]),
        w1=rng.normal(size=(f + 1, h)), w2=np.concatenate([rng.normal(size=h) * 20, [60.0]]),
        band=np.array([[30.0, 80.0, np.finfo(float).max], [-5.0, -10.0, -20.0], [5.0, 12.0, 25.0]]),
        p=health.make_params(0.1, 100.0, 125.0), band_quantiles=np.array([0.1, 0.9]))


def reference(model: RulModel, rows: np.ndarray) -> np.ndarray:
    """Plain numpy/Python version of ``health.health_rows`` for one machine."""
    n_op = len(model.op_names)
    alpha, age_scale, cap = model.p
    fast = slow = None
    n = 0
    out = np.full((rows.shape[0], 4), np.nan)
    for r, x in enumerate(rows):
        if np.all(np.isfinite(x)):
            c = int(np.argmin((((x[:n_op] / model.op_scale) - model.cond) ** 2).sum(1)))
            z = (x[n_op:] - model.norm[0, c]) / model.norm[1, c]
            if fast is None:
                fast, slow = z.copy(), z.copy()
            else:
                fast = fast + max(alpha, 1 / (n + 1)) * (z - fast)
                slow = slow + max(alpha / 2, 1 / (n + 1)) * (z - slow)
            n += 1
        if fast is None:
            continue
        f = np.concatenate([fast, fast - slow, slow, [(n - 1) / age_scale]])
        a = (f - model.fnorm[0]) / model.fnorm[1]
        rul = float(np.clip(np.maximum(a @ model.w1[:-1] + model.w1[-1], 0) @ model.w2[:-1] + model.w2[-1], 0, cap))
        b = min(int(np.searchsorted(model.band[0], rul, side="left")), model.band.shape[1] - 1)
        out[r] = [rul / cap, rul, max(rul + model.band[1, b], 0), max(rul + model.band[2, b], 0)]
    return out


def _rows(n: int = 300, seed: int = 1) -> np.ndarray:
    """Two operating conditions, a slow drift, then NaN, inf, a constant run and a dropout gap."""
    rng = np.random.default_rng(seed)
    cond = (rng.random(n) < 0.5) * 10.0
    x = np.column_stack([cond + rng.normal(0, 0.1, n), cond + rng.normal(0, 0.1, n),
                         rng.normal(size=(n, 3)) + np.linspace(0, 3, n)[:, None]])
    x[40, 2] = np.nan
    x[41, 0] = np.inf
    x[42, 4] = -np.inf
    x[100:160, 2:] = 1.5  # constant run
    x[200:230, :] = np.nan  # dropout
    return x


def test_kernel_matches_reference_with_nan_inf_constant_and_gaps():
    model = _model()
    x = _rows()
    x[:3] = np.nan  # nothing learned yet: NaN out
    est = RulEstimator(model, 1, np.arange(5)[None, :])
    got = np.column_stack(est.run_rows(x))
    ref = reference(model, x)
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert (got[3:, 0] >= 0).all() and (got[3:, 0] <= 1).all()
    assert (got[3:, 2] <= got[3:, 1]).all() and (got[3:, 3] >= got[3:, 1]).all()
    # a dropout holds the estimate (it does not look like wear)
    np.testing.assert_array_equal(got[200:230, 1], got[199, 1])


def test_tick_on_signal_table_matches_rows_and_missing_inputs_give_nan():
    model = _model()
    x = _rows(120)
    # 3 machines: 0 and 2 read the five inputs from different signals, 1 lacks an input (-1)
    inputs = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, -1], [9, 10, 11, 12, 13]])
    est = RulEstimator(model, 3, inputs)
    x_last = np.zeros(14)
    outs = []
    for row in x:
        x_last[0:5] = row
        x_last[9:14] = row  # the same values on other signals
        outs.append(est.update(x_last, np.array([2, 1, 0])).copy())
    outs = np.array(outs)
    ref = reference(model, x)
    np.testing.assert_allclose(outs[:, 2], ref, equal_nan=True, atol=1e-9)
    np.testing.assert_allclose(outs[:, 0], ref, equal_nan=True, atol=1e-9)
    assert np.isnan(outs[:, 1]).all()


def test_checkpoint_resumes_where_it_stopped(tmp_path: Path):
    model = _model()
    x = _rows(200)
    whole = RulEstimator(model, 1, np.arange(5)[None, :])
    full = np.column_stack(whole.run_rows(x))
    a = RulEstimator(model, 1, np.arange(5)[None, :])
    a.run_rows(x[:120])
    a.save(tmp_path / "rul.npz")
    b = RulEstimator(model, 1, np.arange(5)[None, :])
    b.restore(tmp_path / "rul.npz")
    np.testing.assert_allclose(np.column_stack(b.run_rows(x[120:])), full[120:], atol=1e-12)


def test_model_file_round_trip_and_bad_files(tmp_path: Path):
    m = _model()
    m.save(tmp_path / "m.npz")
    back = RulModel.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.w1, m.w1)
    assert back.input_names() == ["op0", "op1", "s0", "s1", "s2"]
    with pytest.raises(RulModelError, match="not among"):
        back.input_index(["op0", "s0"])
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(RulModelError, match="cannot read"):
        RulModel.load(tmp_path / "junk.npz")
    with pytest.raises(RulModelError, match="cannot read"):
        RulModel.load(tmp_path / "missing.npz")
    arrays = {k: v for k, v in np.load(tmp_path / "m.npz").items() if k != "w2"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(RulModelError, match="w2"):
        RulModel.load(tmp_path / "partial.npz")


@pytest.mark.skipif(not (CMAPSS / "train_FD001.txt.gz").exists(), reason="C-MAPSS not present")
def test_fitted_on_cmapss_fd001_beats_a_constant_guess_on_the_test_set():
    """A quick fit (few epochs) must already predict test RUL far better than the mean does."""
    runs, ops, sens = cmapss_runs(read_cmapss(CMAPSS / "train_FD001.txt.gz"))
    model = fit(runs, ops, sens, FitSettings(epochs=4, hidden=16))
    test, _, _ = cmapss_runs(read_cmapss(CMAPSS / "test_FD001.txt.gz"))
    truth = np.minimum(np.loadtxt(CMAPSS / "RUL_FD001.txt.gz"), 125)
    est = RulEstimator(model, 1, np.arange(model.n_inputs)[None, :])
    pred = []
    for x in test:
        est.reset()
        pred.append(est.run_rows(x)[1][-1])
    rmse = math.sqrt(float(np.mean((np.array(pred) - truth) ** 2)))
    assert rmse < 0.6 * float(np.std(truth)), rmse  # the constant guess scores std(truth) (about 35)
    assert rmse < 20.0
    # health falls as a training engine approaches failure
    est.reset()
    h = est.run_rows(runs[0])[0]
    assert h[:20].mean() > 0.8 and h[-10:].mean() < 0.2
