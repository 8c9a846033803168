"""Leak-test agent against the simulator's micro-leaks: found within 10 test cycles, false events per week.

    .venv/bin/python bench/leak_eval.py [--days 7] [--tune-seed 1] [--report-seed 2]

The dev plant's six leak-test stations are simulated at 1 Hz, as the edge reads them over Modbus
(temperatures int16 at 0.1 K, pressure float32), for ``--days`` simulated days per seed, with the
simulator's physics (shift pattern: some stations are off at night; per-part temperature and its effect
on the decay) and its random micro-leaks (``simulators.faults``, ``micro_leak``: 20-80 Pa/s for 10-60
minutes, about 0.2 per station-hour at the default anomaly rate) with their ground truth. The simulator's
other anomaly kinds (spike, step, drift, stuck, noise burst, dropout, oscillation, calibration offset) hit
the agent's signals too, at the same default rate, as they would in the plant: a drift episode they cause
counts as false (``--no-sensor-faults`` leaves them out).

Per seed, the agent's kernel segments every cycle once; the drift tracker then runs per candidate
threshold ``cusum_h``. The threshold is **chosen on the tune seed** (the smallest meeting <= 1 false
event per station-week) and **reported on the report seed**, which it has not seen.

A micro-leak counts when its magnitude is at least ``--detectable``, its station measured at least one
cycle within 10 cycles of its start (a leak while the station is off cannot be seen) and the station had
measured its ``warmup_cycles`` (30) before it (a cold agent has no baseline yet; those are reported as
"during warm-up"); it is *found*
when an episode opens on its station within 10 cycles (450 s) of its start, or one is already open. An
opened episode is *false* when no micro-leak of its station was active from its change point (``since``)
to its detection, give or take 3 cycles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agents.base import AgentContext, Emitter  # noqa: E402
from edge.agents.leaktest import LeakTestAgent  # noqa: E402
from edge.agents.leaktest_settings import Compensation, LeakTestSettings  # noqa: E402
from edge.agents.leaktest_track import C_LEAK, C_PASS, LeakTracker  # noqa: E402
from edge.frames import Frame  # noqa: E402
from edge.kernels import leaktest as lk  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from simulators.faults import KIND_ORDER, EventKind  # noqa: E402
from simulators.runtime import SimOptions, build_world  # noqa: E402

PLANT = ROOT / "configs" / "dev" / "plant.yaml"
EPOCH_NS = int(np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64))  # a Monday, 00:00 UTC
CYCLE_S = 45.0
WITHIN_CYCLES = 10
NAMES = ("test_pressure", "part_temp", "chamber_temp", "stabilise_time", "measure_time")
CHUNK_S = 3600


def sensor_faults(ev: object, rows: np.ndarray, c0: float, t: np.ndarray, v: np.ndarray, clean_at: object,
                  rng: np.random.Generator) -> int:
    """Apply the simulator's other anomaly kinds on the agent's signals to ``v`` (ticks x rows), as
    ``simulators.signals.SignalModel.apply_events`` does; returns how many were active in the chunk."""
    col = {int(r): j for j, r in enumerate(rows.tolist())}
    n = 0
    for i in range(len(ev.signal)):  # type: ignore[attr-defined]
        j = col.get(int(ev.signal[i]))  # type: ignore[attr-defined]
        kind = KIND_ORDER[int(ev.kind[i])]  # type: ignore[attr-defined]
        a, b, mag = float(ev.start_s[i]), float(ev.end_s[i]), float(ev.magnitude[i])  # type: ignore[attr-defined]
        if j is None or kind is EventKind.MICRO_LEAK or b <= t[0] or a > t[-1]:
            continue
        on = (t >= a) & (t < b)
        if not on.any():
            continue
        n += 1
        if kind in (EventKind.SPIKE, EventKind.STEP, EventKind.CALIBRATION_OFFSET):
            v[on, j] += mag
        elif kind is EventKind.DRIFT:
            v[on, j] += mag * np.clip((t[on] - a) / max(b - a, 1e-9), 0.0, 1.0)
        elif kind is EventKind.OSCILLATION:
            v[on, j] += mag * np.sin(2.0 * np.pi * (t[on] - a) / 5.0)
        elif kind is EventKind.NOISE_BURST:
            v[on, j] += mag * rng.standard_normal(int(on.sum()))
        elif kind is EventKind.STUCK:
            v[on, j] = clean_at(a, rows[j:j + 1])[0]  # type: ignore[operator]
        elif kind is EventKind.DROPOUT:
            v[on, j] = np.nan
    return n


def simulate(seed: int, days: float, agent: LeakTestAgent,
             sensor: bool = True) -> tuple[np.ndarray, list[dict], list[dict], object]:
    """Feed ``days`` of the stations' signals to ``agent``; returns (cycle rows, its events, micro-leaks, table)."""
    plant = load_plant(PLANT)
    world = build_world(SimOptions(plant=PLANT, seed=seed, epoch_ns=EPOCH_NS, anomaly_rate_per_h=0.02), plant)
    table, phys = world.table, world.physics
    rows = np.array(agent.consumes(), dtype=np.int64)
    phase = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).uniform(0.0, 2.0 * np.pi, len(table))
    base, amp, omega = table.base[rows], table.amplitude[rows], 2 * np.pi / table.period_s[rows]
    noise = table.noise[rows]
    lo = np.where(np.isnan(table.low[rows]), -np.inf, table.low[rows])
    hi = np.where(np.isnan(table.high[rows]), np.inf, table.high[rows])
    temp = np.isin(rows, [table.ids.index(i) for i in table.ids if i.endswith(("part_temp", "chamber_temp"))])
    press = agent.role[rows] == lk.R_PRESSURE
    end_s = days * 86400.0
    ev = world.schedule.starting(0.0, end_s)
    leak = ev.kind == KIND_ORDER.index(EventKind.MICRO_LEAK)
    ev_sensor = ev.select(~leak & np.isin(ev.signal, rows))
    agent.sensor_faults = len(ev_sensor)  # type: ignore[attr-defined]
    machine_of_station = {table.machine_ids.index(s): k for k, s in enumerate(agent.stations)}
    leaks = [{"station": machine_of_station[int(table.machine[r])], "start_s": float(a), "end_s": float(b),
              "magnitude": float(m)}
             for r, a, b, m in zip(ev.signal[leak], ev.start_s[leak], ev.end_s[leak], ev.magnitude[leak], strict=True)
             if int(table.machine[r]) in machine_of_station]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB3AC]))
    model = world.model(rows, seed)  # for stuck values (clean_at)
    cycles: list[np.ndarray] = []
    events: list[dict] = []
    out = Emitter(10**6, len(agent.derived()))
    # capture the kernel's cycle rows as the agent produces them
    original = agent.tracker.update

    def spy(c: np.ndarray) -> tuple[np.ndarray, list]:
        cycles.append(c.copy())
        return original(c)

    agent.tracker.update = spy  # type: ignore[method-assign]
    for c0 in np.arange(0.0, end_s, CHUNK_S):
        t = np.arange(c0, min(c0 + CHUNK_S, end_s))
        tt = np.repeat(t, rows.size)
        rr = np.tile(rows, t.size)
        v = np.tile(base, t.size) + np.tile(amp, t.size) * np.sin(np.tile(omega, t.size) * tt + np.tile(phase[rows],
                                                                                                     t.size))
        phys.evaluate(tt, rr, v)
        v += np.tile(noise, t.size) * rng.standard_normal(v.size)
        for lk_ in leaks:  # micro-leaks: a steeper decay while measuring (physics.micro_leak)
            if lk_["end_s"] <= c0 or lk_["start_s"] >= c0 + CHUNK_S:
                continue
            m = table.machine_ids.index(agent.stations[lk_["station"]])
            sel = np.flatnonzero(np.tile(press & (table.machine[rows] == m), t.size)
                                 & (tt >= lk_["start_s"]) & (tt < lk_["end_s"]))
            v[sel] -= lk_["magnitude"] * 1e-5 * phys.measure_s(tt[sel], np.full(sel.size, m))
        if sensor:
            v2 = v.reshape(t.size, rows.size)
            sensor_faults(ev_sensor, rows, c0, t, v2, model.clean_at, rng)
        v = np.clip(v, np.tile(lo, t.size), np.tile(hi, t.size))
        tm = np.tile(temp, t.size)
        v[tm] = np.round(v[tm] * 10.0) / 10.0  # int16, scale 0.1 on the wire
        pm = np.tile(press, t.size)
        v[pm] = np.round(v[pm] * 1e4) / 1e4  # the simulator's resolution (0.1 mbar), then float32
        v[pm] = v[pm].astype(np.float32)
        ts = EPOCH_NS + np.round(tt * 1e9).astype(np.int64)
        frame = Frame(ts, rr.astype(np.uint32), v, np.zeros(v.size, np.uint8), None)
        out.reset()
        agent.process(frame, np.zeros(0), out)
        events += out.events
    agent.tracker.update = original  # type: ignore[method-assign]
    return (np.concatenate(cycles) if cycles else np.zeros((0, lk.N_OUT))), events, leaks, table


def score(opened: list[tuple[int, float, float, float]], cycles: np.ndarray, leaks: list[dict], detectable: float,
          stations: int, days: float, verbose: bool = False, warmup: int = 30) -> dict[str, float]:
    """opened: (station, since_s, detected_s, closed_s) of every episode; times in simulated s."""
    window = WITHIN_CYCLES * CYCLE_S
    end_s = cycles[:, lk.O_END_S] - EPOCH_NS / 1e9 if cycles.size else np.zeros(0)
    counted = found = warming = 0
    delays = []
    for leak in leaks:
        if leak["magnitude"] < detectable:
            continue
        a = leak["start_s"]
        k = leak["station"]
        mine = cycles[:, lk.O_ROW] == k
        seen = np.count_nonzero(mine & (end_s > a) & (end_s <= a + window))
        if seen == 0:
            continue
        if np.count_nonzero(mine & (end_s < a)) < warmup:  # the station's baseline is not learnt yet
            warming += 1
            continue
        counted += 1
        hit = [d for s, _, d, _ in opened if s == k and a <= d <= a + window]
        already = any(s == k and d <= a < closed for s, _, d, closed in opened)
        if not (hit or already) and verbose:
            first = [d for s, _, d, _ in opened if s == k and d >= a]
            print(f"    missed: station {k} {leak['magnitude']:.1f} Pa/s at t={a:.0f}..{leak['end_s']:.0f} s, "
                  f"{seen} cycles in the window, next opening {min(first, default=float('nan')) - a:.0f} s later")
        if hit or already:
            found += 1
            if hit:
                delays.append(np.count_nonzero(mine & (end_s > a) & (end_s <= min(hit))))
    false = 0
    for s, since, d, _ in opened:
        ok = any(lk_["station"] == s and lk_["start_s"] - 3 * CYCLE_S <= d and since <= lk_["end_s"] + 3 * CYCLE_S
                 for lk_ in leaks)
        false += 0 if ok else 1
    weeks = days / 7.0
    return {"leaks": counted, "warming": warming, "found": found,
            "recall": found / counted if counted else float("nan"),
            "median_delay_cycles": float(np.median(delays)) if delays else float("nan"),
            "max_delay_cycles": float(np.max(delays)) if delays else float("nan"),
            "false": false, "false_per_station_week": false / stations / weeks}


def episodes_from(tracker_events: list, stations: list[str]) -> list[tuple[int, float, float, float]]:
    """(station, since, detected, closed or inf) per episode, in simulated s."""
    out: list[list[float]] = []
    open_of: dict[int, int] = {}
    for e in tracker_events:
        t = e.ts_ns / 1e9 - EPOCH_NS / 1e9
        if e.opened:
            open_of[e.station] = len(out)
            out.append([e.station, e.since_ns / 1e9 - EPOCH_NS / 1e9, t, np.inf])
        elif e.station in open_of:
            out[open_of.pop(e.station)][3] = t
    return [(int(a), b, c, d) for a, b, c, d in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--tune-seed", type=int, default=1)
    ap.add_argument("--report-seed", type=int, default=2)
    ap.add_argument("--detectable", type=float, default=20.0)
    ap.add_argument("--no-sensor-faults", action="store_true", help="no other anomaly kinds on the agent's signals")
    ap.add_argument("--verbose", action="store_true", help="list the micro-leaks missed on the report seed")
    ap.add_argument("--candidates", default="1.0,1.5,2.0,2.5,3.0,4.0,5.0")
    args = ap.parse_args()
    candidates = [float(x) for x in args.candidates.split(",")]
    plant = load_plant(PLANT)
    from plantwire.plant import expand

    ctx = AgentContext.from_plant(expand(plant), plant)
    base = LeakTestSettings(detectable_pa_s=args.detectable)

    def run(seed: int) -> tuple[np.ndarray, list[dict], float, int, LeakTestAgent]:
        agent = LeakTestAgent(ctx, base)
        t0 = time.perf_counter()
        cycles, _, leaks, _ = simulate(seed, args.days, agent, sensor=not args.no_sensor_faults)
        return cycles, leaks, time.perf_counter() - t0, len(agent.stations), agent

    print(f"leak_eval: dev plant, {args.days:g} simulated days per seed, detectable {args.detectable:g} Pa/s, "
          f"found within {WITHIN_CYCLES} cycles")
    cycles, leaks, secs, n_st, agent = run(args.tune_seed)
    print(f"tune seed {args.tune_seed}: {cycles.shape[0]} cycles on {n_st} stations, {len(leaks)} micro-leaks, "
          f"{agent.sensor_faults} sensor faults on its signals{' (not injected)' if args.no_sensor_faults else ''} "
          f"({secs:.0f} s to simulate and segment)")
    chosen = None
    for h in candidates:
        tr = LeakTracker(n_st, base.model_copy(update={"cusum_h": h}))
        _, eps = tr.update(cycles)
        sc = score(episodes_from(eps, agent.stations), cycles, leaks, args.detectable, n_st, args.days)
        print(f"  cusum_h {h:>4}: recall {sc['recall']:.3f} ({sc['found']}/{sc['leaks']}), median delay "
              f"{sc['median_delay_cycles']:.0f} cycles (max {sc['max_delay_cycles']:.0f}), false "
              f"{sc['false']} = {sc['false_per_station_week']:.2f} per station-week")
        if chosen is None and sc["false_per_station_week"] <= 1.0:
            chosen = h
    chosen = chosen if chosen is not None else candidates[-1]
    print(f"chosen on seed {args.tune_seed}: cusum_h = {chosen}")
    cycles, leaks, secs, n_st, agent = run(args.report_seed)
    settings = base.model_copy(update={"cusum_h": chosen})
    tr = LeakTracker(n_st, settings)
    res, eps = tr.update(cycles)
    sc = score(episodes_from(eps, agent.stations), cycles, leaks, args.detectable, n_st, args.days, args.verbose)
    uncomp = LeakTracker(n_st, settings.model_copy(update={"compensation": Compensation.OFF}))
    res_u, eps_u = uncomp.update(cycles)
    sc_u = score(episodes_from(eps_u, agent.stations), cycles, leaks, args.detectable, n_st, args.days)
    clean = np.ones(res.shape[0], bool)
    t_end = cycles[:, lk.O_END_S] - EPOCH_NS / 1e9
    for leak in leaks:
        clean &= ~((res[:, 0] == leak["station"]) & (t_end >= leak["start_s"]) & (t_end < leak["end_s"] + CYCLE_S))
    print(f"report seed {args.report_seed} (not seen when choosing): {cycles.shape[0]} cycles, {len(leaks)} "
          f"micro-leaks, {agent.sensor_faults} sensor faults")
    print(f"  recall {sc['recall']:.3f} ({sc['found']}/{sc['leaks']} micro-leaks >= {args.detectable:g} Pa/s found "
          f"within {WITHIN_CYCLES} cycles; {sc['warming']} more during warm-up), median delay "
          f"{sc['median_delay_cycles']:.0f} cycles (max "
          f"{sc['max_delay_cycles']:.0f}), false events {sc['false']} = {sc['false_per_station_week']:.2f} per "
          f"station-week")
    print(f"  leak rate of leak-free cycles: sd {np.nanstd(res[clean, C_LEAK]):.2f} Pa/s compensated, "
          f"{np.nanstd(res_u[clean, C_LEAK]):.2f} Pa/s without temperature compensation; parts failing "
          f"{np.count_nonzero(res[:, C_PASS] == 0)}")
    print(f"  without temperature compensation: recall {sc_u['recall']:.3f}, false "
          f"{sc_u['false_per_station_week']:.2f} per station-week")
    med = np.nanmedian(cycles[:, [lk.O_FILL_S, lk.O_STAB_S, lk.O_MEAS_S, lk.O_VENT_S]], axis=0)
    print(f"  phase timings (median s): fill {med[0]:.1f}, stabilise {med[1]:.1f}, measure {med[2]:.1f}, "
          f"vent {med[3]:.1f} (simulator: 8.1, 12.2, 20.2, 4.5 at 1 Hz sampling)")


if __name__ == "__main__":
    main()
