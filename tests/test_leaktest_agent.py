"""The leak-test agent on simulated stations: per-cycle results as derived signals, a drift event naming the
station, since when and how fast, for a scheduled micro-leak; quiet stations stay quiet; wired through the
agent runner (registry, settings) with its state checkpointed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.agents.base import AgentContext, Emitter
from edge.agents.leaktest import DERIVED, LeakTestAgent
from edge.agents.leaktest_settings import Compensation, LeakTestSettings
from edge.agents.runner import AgentRunner
from edge.agents.settings import AgentsSettings
from edge.frames import Frame
from plantwire.configfile import load_plant
from plantwire.plant import expand
from simulators.runtime import SimOptions, build_world
from simulators.signals import SignalModel

ROOT = Path(__file__).resolve().parents[1]
PLANT = ROOT / "configs" / "dev" / "plant.yaml"
T0 = 8 * 3600  # 08:00 on the simulated clock: every station runs its day shift
LEAK_AT, LEAK_END, LEAK_PA_S = T0 + 1800, T0 + 3300, 30.0
OFFSET_AT, OFFSET_END, OFFSET_K = T0 + 2000, T0 + 3000, -3.0  # leak_test05's chamber thermometer, miscalibrated


def frames(agent: LeakTestAgent, seconds: int, leak: bool = True, chunk_s: int = 60):
    """The agent's signals at 1 Hz, quantised as read over Modbus, with a micro-leak on leak_test03 (applied as
    the simulator's physics does, ``Physics.micro_leak``, without the per-tick schedule lookup) and, with it, a
    calibration offset of leak_test05's chamber thermometer (3 K low: uncompensated by the fault, it would read
    as a 36 Pa/s leak)."""
    plant = load_plant(PLANT)
    world = build_world(SimOptions(plant=PLANT, seed=4, anomaly_rate_per_h=0.0), plant)
    table, phys = world.table, world.physics
    rows = agent.consumes().astype(np.int64)
    model = SignalModel(table, rows, 4, None, phys)
    temp = np.array([table.ids[r].endswith("_temp") for r in rows])
    press = rows == table.ids.index("line2.leak_test03.test_pressure")
    chamber5 = rows == table.ids.index("line2.leak_test05.chamber_temp")
    m3 = np.array([table.machine_ids.index("line2.leak_test03")])
    rng = np.random.default_rng(4)
    for c0 in range(T0, T0 + seconds, chunk_s):
        t = np.arange(c0, c0 + chunk_s, dtype=np.float64)
        tt, rr = np.repeat(t, rows.size), np.tile(rows, chunk_s)  # one vectorised evaluation per chunk
        vals = table.base[rr] + table.amplitude[rr] * np.sin(model.omega[np.tile(np.arange(rows.size), chunk_s)] * tt
                                                             + model.phase_all[rr])
        phys.evaluate(tt, rr, vals)
        vals = (vals + table.noise[rr] * rng.standard_normal(vals.size)).reshape(chunk_s, rows.size)
        if leak:
            on = (t >= LEAK_AT) & (t < LEAK_END)
            vals[on, press] -= LEAK_PA_S * 1e-5 * phys.measure_s(t[on], np.repeat(m3, int(on.sum())))
            vals[(t >= OFFSET_AT) & (t < OFFSET_END), chamber5] += OFFSET_K
        vals[:, press] = np.round(vals[:, press] * 1e4) / 1e4
        vals[:, temp] = np.round(vals[:, temp] * 10) / 10
        ts = np.repeat(np.arange(c0, c0 + chunk_s, dtype=np.int64) * 10**9, rows.size)
        yield Frame(ts, np.tile(rows, chunk_s).astype(np.uint32), vals.ravel(), np.zeros(vals.size, np.uint8), None)


def run(agent: LeakTestAgent, seconds: int, leak: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    ts, local, value, events = [], [], [], []
    out = Emitter(100_000, len(agent.derived()))
    for f in frames(agent, seconds, leak):
        out.reset()
        agent.process(f, np.zeros(0), out)
        ts.append(out.ts_ns[:out.n].copy())
        local.append(out.local[:out.n].copy())
        value.append(out.value[:out.n].copy())
        events += out.events
    return np.concatenate(ts), np.concatenate(local), np.concatenate(value), events


@pytest.fixture(scope="module")
def ctx() -> AgentContext:
    plant = load_plant(PLANT)
    return AgentContext.from_plant(expand(plant), plant)


def test_each_cycle_yields_results_and_a_micro_leak_raises_a_drift_event(ctx: AgentContext) -> None:
    agent = LeakTestAgent(ctx, LeakTestSettings())
    assert agent.stations == [f"line2.leak_test0{i}" for i in range(1, 7)]
    ts, local, value, events = run(agent, 3900)
    names = [d.id for d in agent.derived()]
    nd = len(DERIVED)
    st3 = agent.stations.index("line2.leak_test03")

    def series(station: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        k = station * nd + [n for n, _, _ in DERIVED].index(name)
        return ts[local == k], value[local == k]

    t_leak, leak_rate = series(st3, "leak_rate_pa_s")
    assert leak_rate.size >= 80  # 65 min of 45 s cycles
    assert names[st3 * nd] == "line2.leak_test03.leak_rate_pa_s"
    before = leak_rate[(t_leak < LEAK_AT * 10**9)][35:]
    during = leak_rate[(t_leak > (LEAK_AT + 90) * 10**9) & (t_leak < LEAK_END * 10**9)]
    assert abs(np.median(during) - np.median(before) - LEAK_PA_S) < 3.0  # the micro-leak, measured
    assert np.std(before) < 5.0  # temperature compensated (uncompensated it swings by tens of Pa/s)
    _, fill = series(st3, "fill_s")
    _, meas = series(st3, "measure_s")
    assert np.median(fill) == pytest.approx(8.1, abs=0.5) and np.median(meas) == pytest.approx(20, abs=1.01)
    _, passed = series(st3, "leak_pass")
    assert set(np.unique(passed)) == {1.0}  # passing parts: the station's drift, not failing parts
    opened = [e for e in events if e["state"] == "open"]
    assert [e["machine"] for e in opened] == ["line2.leak_test03"], events
    ev = opened[0]
    assert ev["kind"] == "leak_drift" and ev["signal"] == "line2.leak_test03.leak_rate_pa_s"
    assert LEAK_AT * 10**9 <= ev["detected_ns"] <= (LEAK_AT + 10 * 45) * 10**9  # within 10 cycles
    assert abs(ev["since_ns"] - LEAK_AT * 10**9) <= 2 * 45 * 10**9  # since when: the change point
    assert ev["excess_pa_s"] > 10 and "growth_pa_s_per_h" in ev and "line2.leak_test03" in ev["detail"]
    closed = [e for e in events if e["state"] == "closed"]
    assert [e["machine"] for e in closed] == ["line2.leak_test03"]
    assert LEAK_END * 10**9 <= closed[0]["end_ns"] <= (LEAK_END + 6 * 45) * 10**9
    # leak_test05's miscalibrated chamber thermometer: its cycles are flagged and not judged, no drift event
    st5 = agent.stations.index("line2.leak_test05")
    t5, valid5 = series(st5, "leak_valid")
    _, flags5 = series(st5, "temp_flags")
    inside = (t5 > (OFFSET_AT + 45) * 10**9) & (t5 < OFFSET_END * 10**9)
    assert inside.sum() >= 15 and np.all(valid5[inside] == 0) and np.all(flags5[inside] > 0)
    after = (t5 > (OFFSET_END + 90) * 10**9)
    assert after.sum() >= 10 and np.all(valid5[after] == 1) and np.all(flags5[after] == 0)


def test_without_compensation_the_part_temperature_swings_the_leak_rate(ctx: AgentContext) -> None:
    on = LeakTestAgent(ctx, LeakTestSettings())
    off = LeakTestAgent(ctx, LeakTestSettings(compensation=Compensation.OFF))
    sd = []
    for agent in (on, off):
        ts, local, value, _ = run(agent, 1800, leak=False)
        sd.append(np.std(value[(local == 0) & (ts > (T0 + 900) * 10**9)]))
    assert sd[1] > 3 * sd[0], sd


def test_the_runner_builds_runs_and_checkpoints_it(tmp_path: Path) -> None:
    plant = load_plant(PLANT)
    table = expand(plant)
    settings = AgentsSettings(leak_test=LeakTestSettings())
    runner = AgentRunner.build(table, plant, settings, tmp_path)
    assert [s.name for s in runner.slots] == ["leak_test"]
    assert "line2.leak_test01.leak_rate_pa_s" in runner.table.ids
    agent = runner.slots[0].agent
    assert isinstance(agent, LeakTestAgent)
    for f in frames(agent, 600, leak=False):
        runner.run(f, now_s=0.0)
    assert agent.cycles[0] >= 60 and runner.slots[0].agent is agent  # still enabled
    runner.save()
    again = AgentRunner.build(table, plant, settings, tmp_path)
    restored = again.slots[0].agent
    assert isinstance(restored, LeakTestAgent) and restored.cycles[0] == agent.cycles[0]  # warm restart


def test_a_drift_episode_can_ask_to_hold_its_station(ctx: AgentContext) -> None:
    from edge.agents.leaktest_track import Episode

    agent = LeakTestAgent(ctx, LeakTestSettings(hold_target="{station}.hold"))
    doc = agent._event(Episode(2, True, 10**18, 10**18 - 90 * 10**9, 31.0, 4.0, 31.0))
    assert doc["action"] == {"target": "line2.leak_test03.hold", "value": 1}
    assert "action" not in agent._event(Episode(2, False, 10**18, 10**18, 1.0, 0.0, 31.0))  # release: the operator's
    assert "action" not in LeakTestAgent(ctx, LeakTestSettings())._event(Episode(2, True, 10**18, 10**18, 31, 0, 31))
