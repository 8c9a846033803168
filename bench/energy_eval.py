"""The energy agent against the simulator's ground truth: energy and idle energy attributed, idle episodes
found, compressors losing efficiency found, 15-minute demand peaks.

    .venv/bin/python bench/energy_eval.py [--days 4] [--seeds 1 2 3] [--step-s 2]

Values come from the simulator's own generator (``simulators.signals.SignalModel`` with its physics:
shifts, duty cycles, noise, sensor resolution; Modbus registers quantised as the edge reads them), only the
rows the agent consumes, one sample per signal every ``--step-s`` simulated seconds from a Monday 00:00 UTC,
fed to the agent in one-minute frames. The energy faults are ``simulators.physics.EnergyPlan.draw``
(presses left running idle on ~30 % of nights, half the compressors losing 15-35 % efficiency at a random
time after the first day); wear is off. No servers: the transport has its own tests and benchmarks.

Truth, from the same physics without noise, on a 1 s grid:
- energy per machine: the noise-free energy counter where the machine has one (what its meter reads), else the
  1 s integral of its power (for current-only machines: sqrt(3) x V x I x pf with the agent's nominal V and pf,
  so their figure checks integration and attribution, not the power model);
- idle: a production machine (press; leak-test station) drawing power (level > 0.05) while production is ~0;
  idle energy is its energy over those seconds; an idle *episode* is such a run of at least ``idle_event_s`` (30 min);
- efficiency: the plan's compressors from their step time on.
Matching: an idle episode is found when an ``energy_idle`` event of its machine opens inside it (delay = open -
start); an event is false when it overlaps no truth episode. A lost-efficiency compressor is found when an
``energy_excess`` event opens on it after the step (delay); an excess event on a healthy machine, or before the
step, is false (per machine-day).

Settings are the agent's defaults (``EnergySettings()``), fixed before this script was written and not tuned
on its output, except the excess CUSUM's threshold ``excess_cusum_h`` and the steadiness filter
(``steady_intervals``, ``steady_tolerance``): ``--cusum-h`` and ``--steady`` sweep candidates on one stream;
they were chosen on seed 1 and are reported on seeds 2 and 3 (bench/RESULTS.md). Seed 0 was looked at while
the agent was written (in-sample).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.agents.base import AgentContext, Emitter  # noqa: E402
from edge.agents.energy import EnergyAgent  # noqa: E402
from edge.agents.energy_settings import EnergySettings  # noqa: E402
from edge.frames import Frame  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.plant import Protocol, RegisterType, SignalTable  # noqa: E402
from simulators.physics import PRODUCTION, TESTERS, EnergyPlan, Physics, machine_templates  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402

PLANT = ROOT / "configs" / "dev" / "plant.yaml"
EPOCH_NS = int(np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64))  # a Monday, 00:00 UTC
S = 1_000_000_000


def _quantiser(table: SignalTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions (within ``rows``) of integer Modbus registers with their scale/offset, and of float32 ones."""
    is_modbus = np.array([d.protocol is Protocol.MODBUS for d in table.devices], dtype=bool)[table.device[rows]]
    types = list(RegisterType)
    ints = [types.index(t) for t in (RegisterType.INT16, RegisterType.UINT16, RegisterType.INT32,
                                     RegisterType.UINT32, RegisterType.INT64, RegisterType.BOOL, RegisterType.BIT)]
    rt = table.reg_type[rows]
    pos = np.flatnonzero(np.isin(rt, ints) & is_modbus)
    f32 = np.flatnonzero((rt == types.index(RegisterType.FLOAT32)) & is_modbus)
    return pos, table.scale[rows][pos], table.value_offset[rows][pos], f32


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) index runs of True at least ``min_len`` long."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(a, b) for a, b in zip(starts.tolist(), ends.tolist(), strict=True) if b - a >= min_len]


def run_seed(seed: int, days: int, step_s: float, settings_list: list[EnergySettings],
             verbose: bool = False) -> list[dict[str, float]]:
    """One simulated stream, fed to one agent per settings (a threshold sweep costs one simulation)."""
    plant = load_plant(PLANT)
    from plantwire.plant import expand

    table = expand(plant)
    templates = machine_templates(plant)
    plan = EnergyPlan.draw(templates, seed, EPOCH_NS, days)
    phys = Physics(table, templates, seed, EPOCH_NS, energy=plan)
    agents = [EnergyAgent(AgentContext.from_plant(table, plant), st) for st in settings_list]
    rows = agents[0].consumes()
    model = SignalModel(table, rows, seed, None, phys)
    quant = _quantiser(table, rows)
    out = Emitter(1_000_000, len(agents[0].derived()))
    frame_ticks = max(1, round(60.0 / step_s))
    n_ticks = int(days * 86400 / step_s)
    streams: list[tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[dict[str, object]]]] = [
        ([], [], [], []) for _ in agents]
    agent_s = [0.0] * len(agents)
    samples = 0
    sig_block = np.tile(rows.astype(np.uint32), frame_ticks)
    for k0 in range(0, n_ticks, frame_ticks):
        k1 = min(n_ticks, k0 + frame_ticks)
        ts = np.empty((k1 - k0, rows.size), dtype=np.int64)
        val = np.empty((k1 - k0, rows.size))
        for j, k in enumerate(range(k0, k1)):
            t = k * step_s
            v = model.step(k, t).copy()
            pos, sc, off, f32 = quant
            v[pos] = np.round((v[pos] - off) / sc) * sc + off
            v[f32] = v[f32].astype(np.float32)
            val[j] = v
            ts[j] = EPOCH_NS + int(t * S)
        n = (k1 - k0) * rows.size
        frame = Frame(ts.ravel(), sig_block[:n], val.ravel(), np.zeros(n, dtype=np.uint8))
        samples += n
        for a, (agent, (values, locals_, times, events)) in enumerate(zip(agents, streams, strict=True)):
            out.reset()
            t0 = time.perf_counter()
            agent.process(frame, np.empty(0), out)
            agent_s[a] += time.perf_counter() - t0
            values.append(out.value[: out.n].copy())
            locals_.append(out.local[: out.n].copy())
            times.append(out.ts_ns[: out.n].copy())
            events.extend(out.events)
    return [_score(agent, st, np.concatenate(v), np.concatenate(lo), np.concatenate(ti), ev, agent_s[a] / samples,
                   samples, table, templates, plan, phys, model, days, verbose and a == 0)
            for a, (agent, st, (v, lo, ti, ev)) in enumerate(zip(agents, settings_list, streams, strict=True))]


def _score(agent: EnergyAgent, settings: EnergySettings, value: np.ndarray, local: np.ndarray, tsd: np.ndarray,
           events: list[dict[str, object]], agent_s_per_sample: float, samples: int, table: SignalTable,
           templates: list[str], plan: EnergyPlan, phys: Physics, model: SignalModel, days: int,
           verbose: bool) -> dict[str, float]:
    """One agent's figures against the simulator's truth."""
    ids = [d.id for d in agent.derived()]

    def series(name: str) -> tuple[np.ndarray, np.ndarray]:
        k = ids.index(name)
        sel = local == k
        return tsd[sel], value[sel]

    # Truth on a 1 s grid, noise-free.
    t_grid = np.arange(0.0, days * 86400.0, 1.0)
    s_nom = settings
    res: dict[str, float] = {"excess_cusum_h": settings.excess_cusum_h,
                             "steady_intervals": settings.steady_intervals,
                             "steady_tolerance": settings.steady_tolerance,
                             "agent_ns_per_sample": agent_s_per_sample * 1e9, "samples": samples}
    end_ns = EPOCH_NS + int(tsd.max()) - EPOCH_NS if tsd.size else EPOCH_NS
    horizon_s = (end_ns - EPOCH_NS) / 1e9  # the agent's last closed interval
    keep = t_grid < horizon_s
    errs: dict[str, list[float]] = {"counter": [], "measured": [], "computed": []}
    idle_err: list[float] = []
    idle_truth_total = idle_agent_total = 0.0
    found_idle = total_idle = false_idle = 0
    idle_delays: list[float] = []
    site_truth_power = np.zeros(int(keep.sum()))
    for r, m in enumerate(agent.machines.tolist()):
        mid = table.machine_ids[m]
        mm = np.full(t_grid.shape, m)
        row_of = {k: table.ids.index(f"{mid}.{k}") for k in ("motor_power", "power_active", "fan_power",
                                                           "motor_current", "pump_current", "current_l1",
                                                           "energy_total", "energy_active", "voltage_l1",
                                                           "power_factor") if f"{mid}.{k}" in table.ids}

        def clean(name: str, row_of: dict[str, int] = row_of) -> np.ndarray:
            return model.clean_at(t_grid, np.full(t_grid.shape, row_of[name]))  # what is served, without noise

        pw = next((k for k in s_nom.power if k in row_of), None)
        cur = next((k for k in s_nom.current if k in row_of), None)
        if pw is not None:
            power = clean(pw)
            kind = "measured"
        else:
            assert cur is not None
            volt = clean("voltage_l1") if "voltage_l1" in row_of else s_nom.nominal_voltage_v
            pf = clean("power_factor") if "power_factor" in row_of else s_nom.nominal_power_factor
            power = math.sqrt(3) * volt * clean(cur) * pf / 1000.0
            kind = "computed"
        cnt = next((k for k in s_nom.energy_counter if k in row_of), None)
        first_ns = int(series(f"{mid}.energy.energy_kwh")[0][0]) if tsd.size else EPOCH_NS
        from_s = (first_ns - EPOCH_NS) / 1e9 - s_nom.interval_s  # the agent's first interval's start
        win = (t_grid >= from_s) & keep
        if cnt is not None:
            c = clean(cnt)
            truth_e = float(c[win][-1] - c[win][0]) + float(power[win][-1]) / 3600.0  # last second
            kind = "counter"
        else:
            truth_e = float(power[win].sum() / 3600.0)
        agent_e = float(series(f"{mid}.energy.energy_kwh")[1].sum())
        if truth_e > 1.0:
            errs[kind].append(abs(agent_e - truth_e) / truth_e * 100.0)
        site_truth_power += power[keep]
        if agent.has_parts[r] and (templates[m] in PRODUCTION or templates[m] in TESTERS):
            # Where the simulator's parts counter follows production (PRODUCTION templates, and since
            # 2026-12-03 the test stations' result counters, which count the cycles they run on shift).
            lvl = phys.level(t_grid, mm)
            prod = phys.production(t_grid, mm)
            idle = (lvl > 0.05) & (prod < 0.01)
            truth_idle_e = float(power[idle & win].sum() / 3600.0)
            agent_idle_e = float(series(f"{mid}.energy.idle_kwh")[1].sum())
            idle_truth_total += truth_idle_e
            idle_agent_total += agent_idle_e
            if truth_idle_e > 1.0:
                idle_err.append(abs(agent_idle_e - truth_idle_e) / truth_idle_e * 100.0)
            episodes = _runs(idle & keep, int(s_nom.idle_event_s))
            opened = [int(e["start_ns"]) for e in events if e["kind"] == "energy_idle" and e["state"] == "open"
                      and e["machine"] == mid]
            ev_open_s = []
            for e in events:
                if e["kind"] == "energy_idle" and e["state"] == "open" and e["machine"] == mid:
                    # the event is sent when the interval closes: start + idle_event_s (+ an interval)
                    ev_open_s.append((int(e["start_ns"]) - EPOCH_NS) / 1e9 + s_nom.idle_event_s)
            for a, b in episodes:
                total_idle += 1
                hit = [o for o in ev_open_s if a <= o <= b + s_nom.interval_s * 2]
                if hit:
                    found_idle += 1
                    idle_delays.append((min(hit) - a) / 60.0)
                elif verbose:
                    print(f"  missed idle episode: {mid} {time.strftime('%a %H:%M', time.gmtime(EPOCH_NS / 1e9 + a))}"
                          f" .. {time.strftime('%H:%M', time.gmtime(EPOCH_NS / 1e9 + b))}", file=sys.stderr)
            for st in opened:
                s0 = (st - EPOCH_NS) / 1e9
                if not any(a - 2 * s_nom.idle_after_s <= s0 <= b for a, b in episodes):
                    false_idle += 1
                    if verbose:
                        print(f"  false idle event: {mid} from {time.strftime('%a %H:%M', time.gmtime(st / 1e9))}",
                              file=sys.stderr)
    res["energy_err_pct_counter_median"] = float(np.median(errs["counter"])) if errs["counter"] else float("nan")
    res["energy_err_pct_counter_max"] = float(np.max(errs["counter"])) if errs["counter"] else float("nan")
    for k in ("measured", "computed"):
        res[f"energy_err_pct_{k}_median"] = float(np.median(errs[k])) if errs[k] else float("nan")
        res[f"energy_err_pct_{k}_max"] = float(np.max(errs[k])) if errs[k] else float("nan")
    res["machines"] = sum(len(v) for v in errs.values())
    res["idle_kwh_truth"] = idle_truth_total
    res["idle_kwh_agent"] = idle_agent_total
    res["idle_err_pct_median"] = float(np.median(idle_err)) if idle_err else float("nan")
    res["idle_episodes"] = total_idle
    res["idle_found"] = found_idle
    res["idle_false"] = false_idle
    res["idle_delay_min_median"] = float(np.median(idle_delays)) if idle_delays else float("nan")
    # Efficiency.
    eff = {int(m): float(t0) for m, t0 in zip(plan.eff_machine.tolist(), plan.eff_start_s.tolist(), strict=True)}
    found = 0
    delays: list[float] = []
    false_excess = 0
    for m in agent.machines.tolist():
        mid = table.machine_ids[m]
        # an episode's start is where its CUSUM began to accumulate; the event is sent when the CUSUM reaches
        # its threshold (detected_ns): that is when an operator learns of it (the delay counts from the step)
        opens = [(int(e["detected_ns"]) - EPOCH_NS) / 1e9 for e in events  # type: ignore[call-overload]
                 if e["kind"] == "energy_excess" and e["state"] == "open" and e["machine"] == mid]
        if m in eff and eff[m] < horizon_s:
            after = [o for o in opens if o >= eff[m] - settings.interval_s]
            if after:
                found += 1
                delays.append((min(after) - eff[m]) / 3600.0)
            if verbose:  # size and time left: a loss near excess_ratio, or stepped late, may not show
                k = int(np.flatnonzero(plan.eff_machine == m)[0])
                left_h = (horizon_s - eff[m]) / 3600.0
                verdict = "found" if after else "MISSED"
                print(f"  efficiency loss {verdict}: {mid} +{plan.eff_factor[k] * 100:.0f} % from "
                      f"{time.strftime('%a %H:%M', time.gmtime(EPOCH_NS / 1e9 + eff[m]))}, {left_h:.1f} h left"
                      + (f", sent {(min(after) - eff[m]) / 3600.0:.1f} h after" if after else ""), file=sys.stderr)
            false_excess += sum(1 for o in opens if o < eff[m] - settings.interval_s)
        else:
            false_excess += len(opens)
        if verbose:
            for o in opens:
                if m not in eff or o < eff[m] - settings.interval_s:
                    when = time.strftime("%a %H:%M", time.gmtime(EPOCH_NS / 1e9 + o))
                    print(f"  false excess event: {mid} from {when}", file=sys.stderr)
    res["eff_losses"] = sum(1 for t0 in eff.values() if t0 < horizon_s)
    res["eff_found"] = found
    res["eff_delay_h_median"] = float(np.median(delays)) if delays else float("nan")
    res["excess_false"] = false_excess
    res["excess_false_per_machine_week"] = false_excess / (agent.machines.size * horizon_s / 86400.0 / 7.0)
    # Site 15-minute demand peak: agent vs truth (aligned 900 s blocks).
    blocks = int(site_truth_power.size // 900)
    truth_peak = float(site_truth_power[: blocks * 900].reshape(blocks, 900).mean(axis=1).max())
    agent_peak = float(series("area.site.energy.demand_peak_kw")[1].max())
    res["site_demand_peak_kw_truth"] = truth_peak
    res["site_demand_peak_kw_agent"] = agent_peak
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--step-s", type=float, default=2.0)
    ap.add_argument("--verbose", action="store_true", help="list false events on stderr")
    ap.add_argument("--cusum-h", type=float, nargs="+", default=None,
                    help="sweep the excess CUSUM threshold: one agent per value on the same stream (the figures "
                         "summed below are those of the first value)")
    ap.add_argument("--steady", nargs="+", default=None, metavar="K:TOL",
                    help="sweep the steadiness filter (steady_intervals:steady_tolerance; 0:0.05 is no filter), "
                         "crossed with --cusum-h")
    args = ap.parse_args(argv)
    hs = args.cusum_h or [EnergySettings().excess_cusum_h]
    dflt = EnergySettings()
    steady = ([(int(a), float(b)) for a, b in (c.split(":") for c in args.steady)] if args.steady
              else [(dflt.steady_intervals, dflt.steady_tolerance)])
    settings_list = [EnergySettings(excess_cusum_h=h, steady_intervals=k, steady_tolerance=tol)
                     for h in hs for k, tol in steady]
    rows = []
    for seed in args.seeds:
        t0 = time.monotonic()
        results = run_seed(seed, args.days, args.step_s, settings_list, args.verbose)
        wall = time.monotonic() - t0
        for r in results:
            r["wall_s"] = wall
            print(f"seed {seed}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()), flush=True)
        rows.append(results[0])
    keys = rows[0].keys()
    print("\nsummed / pooled over seeds", args.seeds, f"({args.days} simulated days each, {args.step_s:g} s sampling):")
    tot = {k: sum(r[k] for r in rows) for k in ("idle_episodes", "idle_found", "idle_false", "eff_losses",
                                                 "eff_found")}
    for k, v in tot.items():
        print(f"  {k}: {v:g}")
    for k in keys:
        if k not in tot:
            print(f"  {k}: mean {np.nanmean([r[k] for r in rows]):.4g}, worst {np.nanmax([r[k] for r in rows]):.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
