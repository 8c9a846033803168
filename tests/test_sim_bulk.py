"""The bench scripts' block generator (simulators/bulk.py) gives exactly SignalModel.step's values.

Bit for bit, NaN (dropouts) in the same places: physics, noise, every anomaly kind (several on one
signal at once, fixed events from a faults file, noise bursts drawing from the tick's generator), a
model serving only some of the plant's rows, blocks of uneven sizes across the 22:00 shift end and a
wear failure. If this fails, the evaluations in bench/ no longer see what the simulator serves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plantwire.configfile import load_plant
from plantwire.plant import expand
from simulators.bulk import BlockGenerator
from simulators.faults import KIND_ORDER, EventKind, Events, EventSchedule
from simulators.physics import Physics, WearPlan, machine_templates
from simulators.signals import SignalModel

DEV_PLANT = Path(__file__).resolve().parents[1] / "configs" / "dev" / "plant.yaml"
EPOCH_NS = int(np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64))
T0 = 22 * 3600 - 90  # across the 22:00 shift end


def _world(seed: int, rows: np.ndarray | None) -> tuple[SignalModel, SignalModel, EventSchedule]:
    plant = load_plant(DEV_PLANT)
    table = expand(plant)
    templates = machine_templates(plant)
    wear = WearPlan.draw(templates, seed, 1.0)
    # one machine fails inside the window (level 0, fault word set)
    wear = WearPlan(wear.machine, wear.start_s, np.where(np.arange(wear.machine.size) == 0, T0 + 40.0,
                                                          wear.failure_s), wear.repair_s, wear.fixed)
    sched = EventSchedule(table, seed, rate_per_h=40.0)
    rows = np.arange(len(table)) if rows is None else rows
    # fixed events: two anomalies on one signal at once, a stuck value, a dropout, a long drift
    sig = int(rows[len(rows) // 2])
    k = {kind: KIND_ORDER.index(kind) for kind in EventKind}
    sched.add_fixed(Events(
        signal=np.array([sig, sig, sig, int(rows[1]), int(rows[2])], dtype=np.int64),
        kind=np.array([k[EventKind.STEP], k[EventKind.OSCILLATION], k[EventKind.SPIKE], k[EventKind.STUCK],
                       k[EventKind.DROPOUT]], dtype=np.uint8),
        start_s=np.array([T0 + 3.5, T0 + 10.0, T0 + 12.0, T0 + 20.0, T0 + 30.0]),
        end_s=np.array([T0 + 100.0, T0 + 80.0, T0 + 14.0, T0 + 90.0, T0 + 50.0]),
        magnitude=np.array([2.0, 1.5, 7.0, 0.0, 0.0]), source=np.ones(5, dtype=np.uint8)))
    physics = Physics(table, templates, seed, EPOCH_NS, wear)
    return (SignalModel(table, rows, seed, sched, physics), SignalModel(table, rows, seed, sched, physics), sched)


def _compare(seed: int, rows: np.ndarray | None, sizes: list[int], columns: np.ndarray | None = None) -> set[int]:
    step_model, block_model, sched = _world(seed, rows)
    gen = BlockGenerator(block_model, max(sizes), columns=columns)
    k = T0
    for size in sizes:
        ks = np.arange(k, k + size, dtype=np.int64)
        got = gen.block(ks, ks.astype(np.float64)).copy()
        want = np.array([step_model.step(int(j), float(j)).copy() for j in ks])
        if columns is not None:
            want = want[:, columns]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert (got.tobytes() == want.tobytes()) or np.array_equal(got, want, equal_nan=True), \
            f"ticks {k}..{k + size - 1}: {int((got != want).sum())} values differ"
        k += size
    active = sched.starting(T0 - 3600.0, float(k))
    return {int(x) for x in active.kind[(active.end_s > T0)].tolist()}


def test_blocks_equal_step_bit_for_bit_whole_plant() -> None:
    kinds = _compare(2, None, [1, 7, 40])
    # the window has every kind the random schedule draws (so each code path above was compared)
    assert kinds >= {KIND_ORDER.index(k) for k in EventKind}, sorted(kinds)


def test_blocks_equal_step_for_a_process_serving_some_rows() -> None:
    table = expand(load_plant(DEV_PLANT))
    rows = np.arange(0, len(table), 3)
    _compare(5, rows, [13, 20])


def test_blocks_of_some_columns_equal_those_columns_of_step() -> None:
    table = expand(load_plant(DEV_PLANT))
    # the columns of a few devices (as bench/sim_eval.py's partitions take them), dropouts and stuck included
    columns = np.flatnonzero(np.isin(table.device, [0, 2]) | (np.arange(len(table)) < 3))
    _compare(2, None, [25, 10], columns)
