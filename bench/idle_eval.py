"""How the detectors' IDLE state matches the simulator's truth, per machine template (issue 15 item 1).

Runs the shipped detector stack (or ``--settings``) over ``--days`` of a fault-free simulated plant at 1 Hz and
counts, per template, machine-hours in each detector state against the simulator's truth (``Physics.level``:
off at <= 0.05; ``Physics.idle``: a test station powered without parts): how much real idle time the detectors
call IDLE, and -- the costly error -- how many producing machine-hours they call IDLE (frozen: a fault there would
go unjudged by the running stack). Run it with ``--settings '{"operating_state": {"idle": {"source": "data"}}}'``
for the data rule alone (no declared signal), as on a plant we have not seen.

    .venv/bin/python bench/idle_eval.py --plant configs/demo/plant.yaml --machine-fraction 0.1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sim_eval import EPOCH_NS, keep_templates, quantiser, subsample, ticks  # noqa: E402

from edge.detectors.analytics import EdgeAnalytics  # noqa: E402
from edge.detectors.settings import AnalyticsSettings  # noqa: E402
from edge.kernels import opstate  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from simulators.physics import machine_templates  # noqa: E402
from simulators.runtime import SimOptions, build_world  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plant", type=Path, default=ROOT / "configs" / "dev" / "plant.yaml")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=float, default=1.5, help="simulated days (the first 12 h are not counted)")
    ap.add_argument("--machine-fraction", type=float, default=1.0)
    ap.add_argument("--templates", type=lambda s: tuple(t for t in s.split(",") if t), default=())
    ap.add_argument("--settings", type=json.loads, default={})
    ap.add_argument("--cyclers", action="store_true",
                    help="list, per machine other than a declared tester, the cycle signals the data rule learned and "
                         "its hours called IDLE against its truly idle hours (which machines the data rule takes in)")
    args = ap.parse_args(argv)
    plant = subsample(keep_templates(load_plant(args.plant), args.templates), args.machine_fraction)
    world = build_world(SimOptions(plant=args.plant, seed=args.seed, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    n = len(table)
    model = world.model(np.arange(n), args.seed)
    an = EdgeAnalytics.from_table(table, AnalyticsSettings.model_validate(args.settings))
    templ = machine_templates(plant)
    names = sorted(set(templ))
    t_of = np.array([names.index(t) for t in templ])
    nm = len(table.machine_ids)
    m_idx = np.arange(nm)
    # counts[template, truth (0 off, 1 idle, 2 producing), detector state 0..3] in machine-seconds
    counts = np.zeros((len(names), 3, 4))
    idle_s, truth_s = np.zeros(nm), np.zeros(nm)  # per machine: seconds called IDLE, seconds truly idle (counted part)
    sig = np.arange(n, dtype=np.uint32)
    ts = np.empty(n, dtype=np.int64)
    k_from = 43200
    t0 = time.monotonic()
    for k, v, qual in ticks(model, quantiser(table), 0, int(args.days * 86400)):
        ts.fill(EPOCH_NS + k * 1_000_000_000)
        an.process(ts, sig, v, qual)
        if k < k_from or k % 10:
            continue
        t = np.full(nm, float(k))
        truth = np.where(world.physics.level(t, m_idx) <= 0.05, 0, np.where(world.physics.idle(t, m_idx), 1, 2))
        np.add.at(counts, (t_of, truth, an.stack.m_state[:nm].astype(np.int64)), 10.0)
        idle_s += 10.0 * (an.stack.m_state[:nm] == opstate.IDLE)
        truth_s += 10.0 * (truth == 1)
    print(f"plant {args.plant} (fraction {args.machine_fraction}), seed {args.seed}, {args.days - 0.5:g} days counted, "
          f"settings {json.dumps(args.settings) or 'shipped'}; {time.monotonic() - t0:.0f} s wall")
    print(f"{'template':14} {'machines':>8} {'truth':>10}  machine-hours by detector state: "
          f"{'unknown':>8} {'off':>8} {'idle':>8} {'running':>8}")
    for i, name in enumerate(names):
        for j, truth in enumerate(("off", "idle", "producing")):
            row = counts[i, j] / 3600.0
            if row.sum() == 0:
                continue
            print(f"{name:14} {int((t_of == i).sum()):8d} {truth:>10}  {'':33}"
                  + "".join(f"{x:9.1f}" for x in row))
    if args.cyclers:
        st = an.stack
        for m in range(nm):
            rows = np.flatnonzero((st.act_i[:, opstate.I_CYCLER] == 1) & (st.act_of == m)
                                  & ~np.isfinite(st.act_p[:, opstate.P_IDLE]))
            if rows.size or idle_s[m]:
                names_m = [table.ids[r][len(table.machine_ids[m]) + 1:] for r in rows.tolist()]
                print(f"  {table.machine_ids[m]:28} {templ[m]:13} IDLE {idle_s[m] / 3600:5.1f} h, truly idle "
                      f"{truth_s[m] / 3600:5.1f} h; learned cycle signals: {', '.join(names_m) or '-'}")
    wrong = counts[:, 2, opstate.IDLE].sum() / 3600.0
    right = counts[:, 1, opstate.IDLE].sum() / 3600.0
    idle_h = counts[:, 1, :].sum() / 3600.0
    print(f"truly idle machine-hours called IDLE: {right:.1f} of {idle_h:.1f}; producing machine-hours called IDLE "
          f"(frozen while working): {wrong:.1f} of {counts[:, 2, :].sum() / 3600.0:.1f}")


if __name__ == "__main__":
    main()
