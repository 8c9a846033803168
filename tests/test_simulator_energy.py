"""Simulator realism for the energy agent: counters integrate what the machine draws and makes, and the
energy faults (machines left running idle, a compressor losing efficiency) are in the signals and the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plantwire.configfile import load_plant
from plantwire.plant import expand
from simulators.physics import NIGHT_IDLE_LEVEL, EnergyPlan, Physics, machine_templates

ROOT = Path(__file__).resolve().parents[1]
EPOCH_NS = 1_790_035_200 * 1_000_000_000  # a UTC midnight


def _physics(plan: EnergyPlan) -> tuple[Physics, list[str]]:
    plant = load_plant(ROOT / "configs" / "dev" / "plant.yaml")
    table = expand(plant)
    return Physics(table, machine_templates(plant), 0, EPOCH_NS, energy=plan), table.ids


def _series(phys: Physics, ids: list[str], name: str, t: np.ndarray) -> np.ndarray:
    row = np.full(t.shape, ids.index(name), dtype=np.int64)
    out = np.zeros(t.shape)
    return phys.evaluate(t, row, out)


def test_energy_counter_integrates_power_including_an_efficiency_step() -> None:
    ids_m = 0  # line1.compressor01
    plan = EnergyPlan(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.array([ids_m]), np.array([40_000.0]),
                      np.array([0.25]))
    phys, ids = _physics(plan)
    t = np.arange(30_000.0, 50_000.0, 1.0)  # 08:20-13:53, across the step
    power = _series(phys, ids, "line1.compressor01.motor_power", t)
    counter = _series(phys, ids, "line1.compressor01.energy_total", t)
    integrated = np.cumsum(power) / 3600.0
    drift = (counter - counter[0]) - (integrated - integrated[0])
    assert np.abs(drift).max() < 0.1  # kWh of ~70: the meter reads what the motor drew
    after = (t > 40_000) & (t < 40_000 + 3600)
    before = (t > 40_000 - 3600) & (t < 40_000)
    cap = _series(phys, ids, "line1.compressor01.capacity", t)
    assert (power[after] / cap[after]).mean() > 1.2 * (power[before] / cap[before]).mean()


def test_parts_stop_off_shift_and_a_machine_left_idle_draws_without_producing() -> None:
    phys, ids = _physics(EnergyPlan.empty())
    m = next(i for i, mid in enumerate(phys.table.machine_ids) if mid.startswith("line1.press")
             and phys.night[i] == 0.0)
    mid = phys.table.machine_ids[m]
    night = np.arange(0.0, 4 * 3600.0, 10.0)  # 00:00-04:00
    assert np.ptp(_series(phys, ids, f"{mid}.parts_good", night)) == 0
    assert _series(phys, ids, f"{mid}.motor_current", night).max() < 1e-6
    plan = EnergyPlan(np.array([m]), np.array([0.0]), np.array([3 * 3600.0]), np.zeros(0, np.int64), np.zeros(0),
                      np.zeros(0))
    phys, ids = _physics(plan)
    current = _series(phys, ids, f"{mid}.motor_current", night)
    assert current[night < 3 * 3600].min() > 5 and current[night >= 3 * 3600 + 60].max() < 1e-6
    assert np.ptp(_series(phys, ids, f"{mid}.parts_good", night)) == 0  # idle: no parts
    assert _series(phys, ids, f"{mid}.running", night)[:10].tolist() == [1.0] * 10
    level = phys.level(night, np.full(night.shape, m))
    assert np.allclose(level[night < 3 * 3600], NIGHT_IDLE_LEVEL, atol=1e-3)
    day = np.arange(8 * 3600.0, 9 * 3600.0, 1.0)
    assert np.ptp(_series(phys, ids, f"{mid}.parts_good", day)) > 2000  # ~0.74 parts/s on shift


def test_a_leak_tester_cycles_and_counts_only_on_shift_and_idles_powered_at_night() -> None:
    """Realism (2026-12-03): a tester without parts does not cycle. At night its pressure stands vented and
    its result counters stand, while a station idling (not switched off) still draws its vacuum pump's power;
    on shift it cycles, and the pass + fail counters count its cycles."""
    phys, ids = _physics(EnergyPlan.empty())
    templates = phys._templates
    stations = [m for m, t in enumerate(templates) if t == "leak_test"]
    idling = [m for m in stations if phys.night[m] > 0]
    assert idling  # the dev plant has stations idling at night (seed 0)
    mid = phys.table.machine_ids[idling[0]]
    night = np.arange(2 * 3600.0, 2 * 3600.0 + 900.0)  # 02:00-02:15
    day = np.arange(10 * 3600.0, 10 * 3600.0 + 900.0)
    press_n = _series(phys, ids, f"{mid}.test_pressure", night)
    assert press_n.max() == 0.0
    counted_n = sum(np.ptp(_series(phys, ids, f"{mid}.{c}", night)) for c in ("result_pass", "result_fail"))
    assert counted_n < 0.01
    assert _series(phys, ids, f"{mid}.pump_current", night).min() > 1.0  # powered: the pump idles
    press_d = _series(phys, ids, f"{mid}.test_pressure", day)
    cycles = np.count_nonzero((press_d[1:] > 20.0) & (press_d[:-1] <= 20.0))  # fills passing 20 bar
    counted_d = sum(np.ptp(_series(phys, ids, f"{mid}.{c}", day)) for c in ("result_pass", "result_fail"))
    assert cycles in (19, 20, 21) and abs(counted_d - 900.0 / 45.0) < 1.5  # 45 s cycles, each counted once
