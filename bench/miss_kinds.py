"""Misses on running machines, per fault kind: what was missed, how large it was, and which stage came closest.

Reads the ``--missed`` file of ``bench/sim_eval.py`` (one row per injected event with its outcome, the operating
state the detector saw at the event's start, whether the fault is observable at all, the largest stack score its
signal reached in [start, end + grace] with the stage that gave it, and the largest score left after the settle
and hold gates) and the plant it ran on, and prints, for the events on machines the detector saw RUNNING at the
fault's start (producing or idle-but-powered excluded unless ``--all-states``):

- per kind: events, recall, misses split into *invisible* (the simulator with and without the fault serves the same
  range of values: a negative step on a current clipped at 0), *held* (a stage scored >= 0.5 but a gate -- a start's
  grace, an operating change, the re-arm -- kept the alarm shut) and *below* (no stage reached 0.5: the detectors'
  own miss), with the stage that came closest for the last;
- the *below* misses by magnitude relative to the signal's noise (``|magnitude| / noise``) and to its process wave
  (``|magnitude| / amplitude``), by duration, and by the signal's physics role (load, thermal, vibration, ...).

Why a script of its own: the plan of which detector to change comes from these figures, and they must be
reproducible from the same files (``python bench/miss_kinds.py MISSED.seed1.csv --plant configs/demo/plant.yaml
--machine-fraction 0.25 --seed 1``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plantwire.configfile import load_plant  # noqa: E402
from simulators.faults import signal_scale  # noqa: E402
from simulators.physics import Role  # noqa: E402
from simulators.runtime import SimOptions, build_world  # noqa: E402


def _bucket(x: float, edges: tuple[float, ...]) -> str:
    for lo, hi in itertools.pairwise(edges):
        if lo <= x < hi:
            return f"[{lo:g},{hi:g})"
    return f">={edges[-1]:g}" if x >= edges[-1] else f"<{edges[0]:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("missed", type=Path, nargs="+", help="sim_eval --missed output(s) of the same plant")
    ap.add_argument("--plant", type=Path, default=ROOT / "configs/demo/plant.yaml")
    ap.add_argument("--machine-fraction", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1, help="physics seed (roles only)")
    ap.add_argument("--all-states", action="store_true", help="every event, not only machines running at the start")
    ap.add_argument("--list", type=int, default=0, help="also list up to N below-threshold misses per kind")
    ap.add_argument("--held", type=Path, help="the run's MISSED.seedN.held.npy: what opening held alarms at extreme "
                                              "scores would find and cost")
    ap.add_argument("--grace", type=float, default=60.0, help="as sim_eval's --grace")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from sim_eval import EPOCH_NS, subsample  # bench module, not a package

    plant = subsample(load_plant(args.plant), args.machine_fraction)
    world = build_world(SimOptions(plant=args.plant, seed=args.seed, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    row_of = {sid: i for i, sid in enumerate(table.ids)}
    scale = signal_scale(table)
    role = world.physics.role if world.physics is not None else np.zeros(len(table), np.int64)
    rows: list[dict[str, str]] = []
    for path in args.missed:
        with open(path) as fh:
            rows.extend(csv.DictReader(fh))
    all_rows = list(rows)
    if not args.all_states:
        rows = [r for r in rows if r["det_state"] == "running" and r["machine_off"] == "0"]
    by_kind: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_kind[r["kind"]].append(r)
    print(f"{len(rows)} events ({'all states' if args.all_states else 'machine RUNNING at the fault start'}), "
          f"files {[str(p) for p in args.missed]}")
    print(f"{'kind':20} {'events':>6} {'recall':>6} {'missed':>6} {'invis':>5} {'held':>5} {'below':>5}  "
          f"closest stage of the below ones")
    tot = Counter()
    below_all: dict[str, list[dict[str, str]]] = defaultdict(list)
    for kind in sorted(by_kind):
        ev = by_kind[kind]
        miss = [r for r in ev if r["detected"] == "0"]
        invis = [r for r in miss if r["visible"] == "0"]
        held = [r for r in miss if r["visible"] == "1" and float(r["max_score"]) >= 0.5]
        below = [r for r in miss if r["visible"] == "1" and float(r["max_score"]) < 0.5]
        below_all[kind] = below
        stages = Counter(r["max_kind"] for r in below)
        print(f"{kind:20} {len(ev):6d} {1 - len(miss) / len(ev):6.3f} {len(miss):6d} {len(invis):5d} {len(held):5d} "
              f"{len(below):5d}  {dict(stages.most_common())}")
        tot.update(events=len(ev), missed=len(miss), invis=len(invis), held=len(held), below=len(below))
    n = tot["events"]
    if n:
        print(f"{'all':20} {n:6d} {1 - tot['missed'] / n:6.3f} {tot['missed']:6d} {tot['invis']:5d} {tot['held']:5d} "
              f"{tot['below']:5d}  recall over observable events "
              f"{1 - (tot['missed'] - tot['invis']) / max(n - tot['invis'], 1):.3f}")
    print("\nbelow-threshold misses (observable, no stage reached 0.5), by kind:")
    for kind, below in below_all.items():
        if not below:
            continue
        by_noise, by_amp, by_dur, by_role, by_score = Counter(), Counter(), Counter(), Counter(), Counter()
        names = Counter()
        for r in below:
            i = row_of[r["signal"]]
            mag = abs(float(r["magnitude"])) if r["magnitude"] not in ("", "nan") else 0.0
            noise, amp = float(table.noise[i]), float(table.amplitude[i])
            by_noise[_bucket(mag / noise if noise > 0 else np.inf, (0, 2, 4, 8, 16, 32))] += 1
            by_amp[_bucket(mag / amp if amp > 0 else np.inf, (0, 0.5, 1, 2, 4, 8))] += 1
            by_dur[_bucket(float(r["end_s"]) - float(r["start_s"]), (0, 2, 10, 30, 60, 120, 300, 600, 1800))] += 1
            by_role[Role(int(role[i])).name.lower()] += 1
            by_score[_bucket(float(r["max_score"]), (0, 0.1, 0.2, 0.3, 0.4, 0.5))] += 1
            names[r["signal"].rsplit(".", 1)[-1]] += 1
        print(f"  {kind} ({len(below)}):")
        print(f"    |magnitude| / noise      {dict(sorted(by_noise.items()))}")
        print(f"    |magnitude| / amplitude  {dict(sorted(by_amp.items()))}")
        print(f"    duration s               {dict(sorted(by_dur.items()))}")
        print(f"    physics role             {dict(by_role.most_common())}")
        print(f"    largest score reached    {dict(sorted(by_score.items()))}")
        print(f"    signal names             {dict(names.most_common(8))}")
        for r in below[:args.list]:
            i = row_of[r["signal"]]
            print(f"      {r['signal']:45} mag {float(r['magnitude']):10.4g} (scale {scale[i]:.4g}, noise "
                  f"{table.noise[i]:.4g}, amp {table.amplitude[i]:.4g}) "
                  f"{float(r['end_s']) - float(r['start_s']):6.0f} s"
                  f" clean {float(r['clean_at_start']):.4g} [{r['low']}, {r['high']}] best {r['max_kind']} "
                  f"{float(r['max_score']):.3f}")
    if args.held is not None:
        held_exception(args.held, all_rows, row_of, args.grace)
    return 0


def held_exception(path: Path, rows: list[dict[str, str]], row_of: dict[str, int], grace_s: float) -> None:
    """What an exception to the process-alarm holds (start grace, operating change) would do: for a score floor
    ``f``, the running-machine misses it would find (a held sample >= f inside the event's window) and the false
    openings it would add (episodes of held samples >= f on a signal outside every event's window on it; samples
    within ``EPISODE_S`` of the last one join its episode, as the re-arm window would)."""
    held = np.load(path)
    if held.size == 0:
        print("\nno held samples")
        return
    win: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        win[row_of[r["signal"]]].append((float(r["start_s"]), float(r["end_s"]) + grace_s))
    t, sig, score = held[:, 0], held[:, 1].astype(np.int64), held[:, 2]
    in_event = np.zeros(t.size, dtype=bool)
    for i in range(t.size):
        for a, b in win.get(int(sig[i]), ()):
            if a <= t[i] <= b:
                in_event[i] = True
                break
    print(f"\nheld process samples (score >= 0.5 zeroed by a hold): {t.size:,}, {int(in_event.sum()):,} inside an "
          f"event's window")
    missed_run = [r for r in rows if r["det_state"] == "running" and r["machine_off"] == "0" and r["detected"] == "0"]
    for floor in (0.8, 0.9, 0.95, 0.98, 0.99):
        sel = score >= floor
        found = 0
        for r in missed_run:
            s_row, a, b = row_of[r["signal"]], float(r["start_s"]), float(r["end_s"]) + grace_s
            if np.any(sel & (sig == s_row) & (t >= a) & (t <= b)):
                found += 1
        fa = sel & ~in_event
        episodes = 0
        for s_row in np.unique(sig[fa]).tolist():
            ts = np.sort(t[fa & (sig == s_row)])
            episodes += 1 + int(np.sum(np.diff(ts) > EPISODE_S))
        print(f"  floor {floor:4.2f} (|z| >= {6 * np.sqrt(floor / (1 - floor)):5.1f} at threshold 6): finds {found} "
              f"of {len(missed_run)} running-machine misses, adds {episodes} false openings "
              f"({len(np.unique(sig[fa]))} signals)")


EPISODE_S = 600.0


if __name__ == "__main__":
    sys.exit(main())
