"""edge/kernels/leaktest.py against its reference in tests/naive.py, on simulated cycles with NaN, inf, BAD
samples, a gap and constant input; and the segmentation against the simulator's own phase times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.kernels import leaktest as lk
from simulators.runtime import SimOptions, build_world
from tests import naive

ROOT = Path(__file__).resolve().parents[1]
PARAMS = np.array([1.0, 0.5, 0.5, 5.0, 12.0, 20.0, -10.0, 80.0, 0.8, 0.01, 3600.0, 20.0])


def trace(seconds: int = 600, seed: int = 3) -> tuple[np.ndarray, ...]:
    """Two dev-plant leak-test stations at 1 Hz at noon: pressure, part and chamber temperature, timers."""
    world = build_world(SimOptions(plant=ROOT / "configs" / "dev" / "plant.yaml", seed=seed, anomaly_rate_per_h=0.0))
    ids = world.table.ids
    names = ["test_pressure", "part_temp", "chamber_temp", "stabilise_time", "measure_time"]
    rows = np.array([ids.index(f"line2.leak_test0{m}.{n}") for m in (1, 2) for n in names])
    model = world.model(rows, seed)
    t0 = 12 * 3600
    vals = np.array([model.step(k, float(k)).copy() for k in range(t0, t0 + seconds)])
    n = vals.size
    ts = np.repeat((np.arange(t0, t0 + seconds, dtype=np.int64) * 10**9)[:, None], rows.size, axis=1).ravel()
    sig = np.tile(np.arange(rows.size, dtype=np.uint32), seconds)
    role = np.tile(np.arange(1, 6, dtype=np.int64), 2)
    row = np.repeat(np.arange(2, dtype=np.int64), 5)
    return ts, sig, vals.ravel(), np.zeros(n, np.uint8), role, row


def run_both(ts, sig, value, quality, role, row, chunks: int = 7):
    st = lk.new_state(2)
    counters = np.zeros(lk.N_COUNTERS)
    out = np.zeros((64, lk.N_OUT))
    got = []
    for part in np.array_split(np.arange(ts.size), chunks):  # frame boundaries must not matter
        n = lk.leak_cycles(ts[part], sig[part], value[part], quality[part], role, row, PARAMS, st, counters, out)
        got += out[:n].tolist()
    ref, bad, aborted, temp_bad, suspicions = naive.leak_cycles(ts, sig, value, quality, role, row, *PARAMS.tolist(),
                                                                naive.leak_stations(2))
    assert counters[lk.G_TEMP_BAD] == temp_bad and counters[lk.G_SUSPECT] == suspicions
    return np.array(got), np.array(ref), counters, bad, aborted


def test_kernel_matches_reference_and_finds_the_simulated_phases() -> None:
    ts, sig, value, quality, role, row = trace()
    got, ref, counters, bad, aborted = run_both(ts, sig, value, quality, role, row)
    assert got.shape == ref.shape and got.shape[0] >= 20  # 600 s / 45 s per cycle, two stations
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert counters[lk.G_BAD] == bad == 0 and counters[lk.G_ABORTED] == aborted
    # the simulator's cycle: fill 18 %, stabilise 27 %, measure 45 %, vent 10 % of 45 s, sampled at 1 Hz
    assert np.median(got[:, lk.O_FILL_S]) == pytest.approx(8.1, abs=0.6)
    assert np.median(got[:, lk.O_MEAS_S]) == pytest.approx(20.0, abs=1.01)
    assert np.median(got[:, lk.O_STAB_S]) == pytest.approx(12.0, abs=1.01)
    assert np.all(got[:, lk.O_N] >= 19) and np.all(np.isfinite(got[:, lk.O_DT_K]))


def test_kernel_matches_reference_with_nan_inf_bad_gap_and_constant_input() -> None:
    ts, sig, value, quality, role, row = trace(450, seed=5)
    rng = np.random.default_rng(1)
    value = value.copy()
    value[rng.choice(value.size, 40, replace=False)] = np.nan
    value[rng.choice(value.size, 10, replace=False)] = np.inf
    value[rng.choice(value.size, 10, replace=False)] = -np.inf
    quality = quality.copy()
    quality[rng.choice(value.size, 30, replace=False)] = 2
    keep = ~((ts >= (12 * 3600 + 200) * 10**9) & (ts < (12 * 3600 + 220) * 10**9))  # a 20 s gap
    got, ref, counters, bad, aborted = run_both(ts[keep], sig[keep], value[keep], quality[keep], role, row)
    assert got.shape == ref.shape and got.shape[0] > 10
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert counters[lk.G_BAD] == bad > 0 and counters[lk.G_ABORTED] == aborted >= 1
    for c in (0.0, 40.0):  # constant pressure: never a cycle
        got, ref, counters, _, _ = run_both(ts, sig, np.full(ts.size, c), quality * 0, role, row)
        assert got.shape[0] == 0 and len(ref) == 0


def test_kernel_flags_implausible_temperatures_like_the_reference() -> None:
    """A chamber calibration offset (jump, held, jump back), a drifting part sensor, a stuck one and an
    out-of-range reading on station 0: its cycles during them are flagged, station 1's never."""
    ts, sig, value, quality, role, row = trace(900, seed=7)
    value = value.copy()
    t = ts / 1e9 - 12 * 3600
    chamber0, part0 = (sig == 2), (sig == 1)
    offset = chamber0 & (t >= 100) & (t < 300)
    value[offset] += 2.5
    ramp = part0 & (t >= 400) & (t < 560)
    value[ramp] += 6.0 * (t[ramp] - 400) / 160
    value[part0 & (t >= 640) & (t < 760)] = 24.3  # stuck
    value[chamber0 & (t >= 800) & (t < 802)] = 150.0  # out of range
    got, ref, counters, _, _ = run_both(ts, sig, value, quality, role, row)
    assert got.shape == ref.shape and got.shape[0] > 30
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    flags = got[:, lk.O_TEMP_FLAGS].astype(int)
    end = got[:, lk.O_END_S] - 12 * 3600
    mine = got[:, lk.O_ROW] == 0
    assert not flags[~mine].any()  # the other station's thermometers are fine
    inside = mine & (end > 150) & (end < 300)  # measured wholly within the offset
    assert inside.any() and np.all(flags[inside] & (lk.TF_SUSPECT | lk.TF_JUMP))
    assert np.all(flags[mine & (end > 360) & (end < 390)] == 0)  # back to normal after the jump back
    assert np.any(flags[mine & (end > 420) & (end < 600)] & lk.TF_RAMP)
    assert np.any(flags[mine & (end > 690) & (end < 780)] & lk.TF_STUCK)
    assert np.any(flags[mine & (end > 800) & (end < 850)] & lk.TF_BAD)
    assert counters[lk.G_SUSPECT] >= 1 and counters[lk.G_TEMP_BAD] >= 2
