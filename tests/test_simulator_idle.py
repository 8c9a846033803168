"""Simulator realism for the IDLE state (issue 15, 2026-12-03): a leak tester's valve word follows its test cycle
and reads 0 while it stands without parts, and a test cycle once begun runs to its end (no pressure jumping
between 0 and 30 bar within a second at the shift's start or end)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plantwire.configfile import load_plant
from plantwire.plant import expand
from simulators.physics import EnergyPlan, Physics, machine_templates

ROOT = Path(__file__).resolve().parents[1]
EPOCH_NS = 1_790_035_200 * 1_000_000_000  # a UTC midnight


def test_the_valve_word_follows_the_cycle_and_cycles_begin_and_end_whole() -> None:
    plant = load_plant(ROOT / "configs" / "dev" / "plant.yaml")
    table = expand(plant)
    phys = Physics(table, machine_templates(plant), 0, EPOCH_NS, energy=EnergyPlan.empty())
    stations = [m for m, t in enumerate(machine_templates(plant)) if t == "leak_test"]
    mid = table.machine_ids[next(m for m in stations if phys.night[m] > 0)]  # a station idling powered at night

    def series(name: str, t: np.ndarray) -> np.ndarray:
        return phys.evaluate(t, np.full(t.shape, table.ids.index(f"{mid}.{name}"), dtype=np.int64), np.zeros(t.shape))

    t = np.arange(5 * 3600.0, 7 * 3600.0)  # 05:00-07:00: the shift starts
    t2 = np.arange(21 * 3600.0, 23 * 3600.0)  # 21:00-23:00: it ends
    for tt in (t, t2):
        valve, press = series("valve_state", tt), series("test_pressure", tt)
        assert set(np.unique(valve).tolist()) == {0.0, 1.0, 2.0, 4.0}
        assert (press[valve == 0.0] == 0.0).all()  # standing: vented, no valve energised
        assert (np.abs(np.diff(press)) < 10.0).all()  # fills 5 bar/s, vents 9 bar/s: no jump of a whole 40-bar test
        idle = phys.idle(tt, np.full(tt.shape, table.machine_ids.index(mid)))
        assert ((valve == 0.0) == idle).all()  # the truth the evaluation uses is what the word says
