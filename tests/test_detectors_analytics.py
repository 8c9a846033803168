"""EdgeAnalytics: the stack plus health/RUL as the edge app wires them, with checkpoints across a restart."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge.detectors.analytics import AnalyticsConfigError, EdgeAnalytics
from edge.detectors.events import Phase, Scope
from edge.detectors.settings import AnalyticsSettings, HealthSettings
from edge.kernels.kinds import Kind
from plantwire.plant import SignalTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.fit_rul import FitSettings, fit

MACHINES = ["hall.pump01", "hall.pump02", "hall.fan01"]
SIGNALS = {"hall.pump01": ["load", "temp", "vib"], "hall.pump02": ["load", "temp", "vibration"],
           "hall.fan01": ["load", "temp"]}


def _table() -> SignalTable:
    ids, mach = [], []
    for m, names in SIGNALS.items():
        for n in names:
            ids.append(f"{m}.{n}")
            mach.append(MACHINES.index(m))
    n = len(ids)
    z = np.zeros(n)
    return SignalTable(site="t", ids=ids, machine_ids=MACHINES, units=[""] * n, kinds=["analog"] * n, devices=[],
                       device=np.zeros(n, np.int32), machine=np.array(mach, np.int32), table=np.zeros(n, np.uint8),
                       address=np.zeros(n, np.int32), reg_type=np.zeros(n, np.uint8), bit=np.zeros(n, np.uint8),
                       byte_order=np.zeros(n, np.uint8), scale=z + 1, value_offset=z, base=z, amplitude=z,
                       period_s=z, noise=z, low=z + np.nan, high=z + np.nan)


def _run(n: int, rng: np.random.Generator) -> np.ndarray:
    """A run to failure: load varies, temperature and vibration creep up faster near the end."""
    life = np.linspace(0, 1, n)
    load = rng.choice([0.0, 1.0], size=n)
    temp = 50 + 10 * load + 8 * life**2 + rng.normal(0, 0.3, n)
    vib = 1 + 0.5 * load + 2 * life**3 + rng.normal(0, 0.05, n)
    return np.column_stack([load, temp, vib])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    runs = [_run(int(n), rng) for n in rng.integers(150, 250, size=30)]
    model = fit(runs, ["load"], ["temp", "vib"], FitSettings(conditions=2, epochs=20, hidden=16))
    path = tmp_path_factory.mktemp("model") / "pump.npz"
    model.save(path)
    return path


def _settings(model: Path, **kw: object) -> AnalyticsSettings:
    h = {"model": model, "machines": ["hall.*"], "inputs": {}, "period_s": 1.0, **kw}
    return AnalyticsSettings(health=HealthSettings.model_validate(h))


def _frame(table: SignalTable, row: np.ndarray, t: int) -> tuple[np.ndarray, ...]:
    # pump01 and pump02 both follow the run; fan01 has load and temp only
    vals = np.array([row[0], row[1], row[2], row[0], row[1], row[2], row[0], row[1]])
    n = len(table)
    return (np.full(n, t, np.int64), np.arange(n, dtype=np.uint32), vals, np.zeros(n, np.uint8))


def test_health_follows_wear_raises_one_health_event_and_skips_incomplete_machines(model_path: Path):
    table = _table()
    a = EdgeAnalytics.from_table(table, _settings(model_path, inputs={"vib": "vib"}))
    assert a.tick(0.0) is not None  # first tick is due at once: nothing seen yet
    run = _run(220, np.random.default_rng(7))
    healths, events = [], []
    for i, row in enumerate(run):
        a.process(*_frame(table, row, i * 10**9))
        h = a.tick(float(i + 1))
        assert h is not None and list(h.machine) == [0, 1, 2]
        healths.append(h.health.copy())
        events.append(h.events)
    hs = np.array(healths)
    assert np.isnan(hs[:, 1]).all()  # pump02 names its input "vibration": not mapped, never invented
    assert np.isnan(hs[:, 2]).all()  # fan01 has no vibration signal
    assert hs[:20, 0].mean() > 0.7 and hs[-5:, 0].mean() < 0.25
    ev = np.concatenate(events)
    assert (ev["scope"] == Scope.MACHINE).all() and (ev["kind"] == Kind.HEALTH).all()
    opens = ev[ev["phase"] == Phase.OPEN]
    assert opens.shape[0] == 1 and opens["entity"][0] == 0
    assert a.stats.health_ticks == 221 and a.stats.samples == 220 * len(table)


def test_inputs_mapping_renames_signals(model_path: Path):
    table = _table()
    a = EdgeAnalytics.from_table(table, _settings(model_path, machines=["hall.pump02"], inputs={"vib": "vibration"}))
    for i, row in enumerate(_run(50, np.random.default_rng(1))):
        a.process(*_frame(table, row, i))
    h = a.tick(0.0)
    assert h is not None and list(h.machine) == [1] and np.isfinite(h.health).all()


def test_restart_resumes_health_and_detectors(tmp_path: Path, model_path: Path):
    table = _table()
    s = _settings(model_path)
    run = _run(120, np.random.default_rng(3))
    whole = EdgeAnalytics.from_table(table, s)
    first = EdgeAnalytics.from_table(table, s, state_dir=tmp_path)
    assert any("no checkpoint" in r for r in first.cold_reasons)
    for i, row in enumerate(run[:80]):
        for a in (whole, first):
            a.process(*_frame(table, row, i))
            a.tick(float(i))
    first.close()
    assert (tmp_path / "detectors.npz").exists() and (tmp_path / "health.npz").exists()
    second = EdgeAnalytics.from_table(table, s, state_dir=tmp_path)
    assert second.cold_reasons == []
    second.x_last[:] = first.x_last  # the latest values arrive with the next frame on a real restart
    for i, row in enumerate(run[80:], start=80):
        ra = whole.process(*_frame(table, row, i)).score.copy()
        rb = second.process(*_frame(table, row, i)).score
        np.testing.assert_array_equal(ra, rb)
        ha, hb = whole.tick(float(i)), second.tick(float(i))
        np.testing.assert_array_equal(ha.rul, hb.rul)


def test_periodic_checkpoint_and_bad_health_config(tmp_path: Path, model_path: Path):
    table = _table()
    s = AnalyticsSettings(checkpoint_interval_s=10.0)
    a = EdgeAnalytics.from_table(table, s, state_dir=tmp_path)
    a.tick(0.0)
    assert not (tmp_path / "detectors.npz").exists()
    a.tick(5.0)
    a.tick(10.0)
    assert (tmp_path / "detectors.npz").exists() and a.stats.checkpoints_saved == 1
    with pytest.raises(AnalyticsConfigError, match=r"health\.model"):
        EdgeAnalytics.from_table(table, _settings(tmp_path / "missing.npz"))
    with pytest.raises(AnalyticsConfigError, match="no machine matches"):
        EdgeAnalytics.from_table(table, _settings(model_path, machines=["line9.*"]))
    with pytest.raises(AnalyticsConfigError, match="no covered machine has all model inputs"):
        EdgeAnalytics.from_table(table, _settings(model_path, machines=["hall.fan01"]))
    rel = EdgeAnalytics.from_table(table, _settings(Path(model_path.name)), base_dir=model_path.parent)
    assert rel.tick(0.0) is not None


def test_likelihood_stage_starting_cold_is_a_cold_reason(tmp_path: Path):
    """Retuning the likelihood stage's season restores the rest warm and says the stage starts cold."""
    table = _table()
    n = len(table)

    def settings(bins: int) -> AnalyticsSettings:
        return AnalyticsSettings.model_validate({"likelihood": {"mode": "max", "season_bins": bins}})

    a = EdgeAnalytics.from_table(table, settings(24), state_dir=tmp_path)
    rng = np.random.default_rng(0)
    for t in range(50):
        a.process(np.full(n, t * 10**9, np.int64), np.arange(n, dtype=np.uint32), rng.normal(size=n),
                  np.zeros(n, np.uint8))
    a.close()
    same = EdgeAnalytics.from_table(table, settings(24), state_dir=tmp_path)
    assert same.cold_reasons == []
    other = EdgeAnalytics.from_table(table, settings(48), state_dir=tmp_path)
    assert any(r.startswith("likelihood stage starts cold") for r in other.cold_reasons), other.cold_reasons
    assert not any(r.startswith("detectors start cold") for r in other.cold_reasons)
