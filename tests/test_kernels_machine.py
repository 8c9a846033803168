"""Machine PCA kernel against tests/naive.py; fitted models find broken correlations, name the signal, keep modes.

Replaces the tests of the streaming Oja subspace (``edge/kernels/subspace.py``), which this stage supersedes.
"""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge.kernels import pca
from edge.models import machine


def _plant(n: int, seed: int = 3, break_at: int | None = None, loads: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Six signals driven by two latent loads around an operating level; after ``break_at`` signal 4 flips."""
    rng = np.random.default_rng(seed)
    level = np.repeat(np.array(loads), -(-n // len(loads)))[:n] if len(loads) > 1 else np.full(n, loads[0])
    latent = np.cumsum(rng.normal(size=(n, 2)), axis=0) * 0.02 + rng.normal(size=(n, 2))
    mix = np.random.default_rng(0).normal(size=(2, 6))  # the machine's physics: the same in every run
    x = latent @ mix + 0.1 * rng.normal(size=(n, 6)) + level[:, None] * np.array([10, 5, 3, 8, 2, 1.0])
    if break_at is not None:
        x[break_at:, 4] = 2 * x[break_at:, 4].mean() - x[break_at:, 4]
    return x


def _modes_dicts(model: machine.MachineModel) -> list[dict]:
    return [{a: getattr(mo, a) for a in ("mean", "scale", "centroid", "mode_scale", "loadings", "eigenvalues",
                                         "t2_ref", "spe_ref", "limit", "ewma", "init")} for mo in model.modes]


def test_kernel_matches_reference_with_nan_inf_bad_and_constant_input():
    names = [f"s{i}" for i in range(6)]
    m0 = machine.fit(_plant(600, loads=(1.0, 3.0)), names, machine.FitSettings(lags=1, modes=2))
    m1 = machine.fit(_plant(400, seed=5)[:, :4], names[:4], machine.FitSettings(lags=0))
    assert len(m0.modes) == 2 and len(m1.modes) == 1
    # signals 0..5 machine 0, 6..9 machine 1, 10 none
    machine_of = np.array([0] * 6 + [1] * 4 + [-1], dtype=np.int64)
    m_ptr = np.array([0, 6, 10], dtype=np.int64)
    m_sig = np.arange(10, dtype=np.int64)
    bank = machine.pack([m0, m1], np.array([6, 4]))
    x_last = np.full(11, np.nan)
    touched = np.zeros(2, np.uint8)
    tm, ts_, tt = np.empty(2, np.int64), np.empty(2), np.empty((2, 3), np.int64)
    refs = [naive.PcaMachine(_modes_dicts(m0), 1, 6), naive.PcaMachine(_modes_dicts(m1), 0, 4)]
    rng = np.random.default_rng(1)
    stream = np.hstack([_plant(300, seed=9, loads=(1.0, 3.0, 1.0)), _plant(300, seed=8)[:, :4],
                        rng.normal(size=(300, 1))])
    stream[50:60, 2] = np.nan
    stream[70, :] = np.inf
    stream[80:120, :] = 7.0  # constant input
    stream[200:230, 1] = -np.inf
    quality = np.zeros((300, 11), np.uint8)
    quality[130:140, 3] = 2
    quality[150:160, :] = 2  # a tick with no good value: kept at the last ones
    signal = np.arange(11, dtype=np.uint32)
    for r in range(300):
        seen = np.zeros(2, np.uint8)
        pca.update_last(signal, stream[r], quality[r], x_last, machine_of, seen)
        assert list(seen) == [1, 1]
        n = pca.machine_tick(signal, machine_of, m_ptr, m_sig, x_last, bank.mach_i, bank.mach_f, bank.hist,
                             bank.mdl_i, bank.mdl_f, bank.mdl_vec, touched, tm, ts_, tt)
        assert n == 2 and list(tm[:2]) == [0, 1] and not touched.any()
        for m, (a, b) in enumerate(((0, 6), (6, 10))):
            sc, top = refs[m].tick(stream[r, a:b], quality[r, a:b] != 2)
            assert ts_[m] == pytest.approx(sc, abs=1e-9), (r, m)
            assert [t - a if t >= 0 else -1 for t in tt[m]] == top, (r, m)


def test_machine_without_model_scores_zero_and_names_nobody():
    model = machine.fit(_plant(300), [f"s{i}" for i in range(6)])
    bank = machine.pack([None, model], np.array([3, 6]))
    x_last = np.ones(9)
    tm, ts_, tt = np.empty(2, np.int64), np.empty(2), np.empty((2, 3), np.int64)
    n = pca.machine_tick(np.arange(9, dtype=np.uint32), np.array([0] * 3 + [1] * 6), np.array([0, 3, 9]),
                         np.arange(9), x_last, bank.mach_i, bank.mach_f, bank.hist, bank.mdl_i, bank.mdl_f,
                         bank.mdl_vec, np.zeros(2, np.uint8), tm, ts_, tt)
    assert n == 2 and ts_[0] == 0.0 and list(tt[0]) == [-1, -1, -1]


def test_fitted_model_flags_a_broken_correlation_and_names_the_signal():
    names = [f"s{i}" for i in range(6)]
    model = machine.fit(_plant(1000, seed=2), names)
    score, _, top = machine.score_table(model, _plant(1500, seed=7, break_at=1000))
    assert np.mean(score[:1000] >= 0.5) < 0.02  # new normal data: about the fitted 1 %, not more
    assert np.mean(score[1010:] >= 0.5) > 0.95  # persistent fault: stays in alarm (never absorbed)
    assert np.mean(top[1010:, 0] == 4) > 0.9


def test_modes_found_from_data_each_get_a_baseline():
    """A machine running at two load levels: one model per level; a row between them is off both."""
    names = [f"s{i}" for i in range(6)]
    x = _plant(1200, seed=4, loads=(1.0, 3.0, 1.0, 3.0))
    model = machine.fit(x, names, machine.FitSettings(modes=0))
    assert len(model.modes) == 2
    score, _, _ = machine.score_table(model, _plant(1200, seed=11, loads=(3.0, 1.0, 3.0, 1.0)))
    assert np.mean(score >= 0.5) < 0.03
    one = machine.fit(x, names, machine.FitSettings(modes=1))
    x_mid = _plant(400, seed=12, loads=(2.0,))  # an unvisited load: both fits must see it as new
    assert np.mean(machine.score_table(model, x_mid)[0] >= 0.5) > 0.9
    assert len(one.modes) == 1


def test_save_load_roundtrip(tmp_path):
    names = [f"s{i}" for i in range(6)]
    model = machine.fit(_plant(600, loads=(1.0, 3.0)), names, machine.FitSettings(modes=0), name="pump")
    man = machine.save(model, tmp_path / "pump.npz")
    doc = man.read_text()
    assert '"signals"' in doc and '"limit"' in doc
    back = machine.load(man)
    x = _plant(200, seed=3)
    np.testing.assert_array_equal(machine.score_table(model, x)[0], machine.score_table(back, x)[0])
    with pytest.raises(machine.MachineModelError):
        machine.pack([back], np.array([5]))
