"""Why faults on switched-off machines are missed: a breakdown of ``sim_eval.py --missed`` output (issue 15).

Why: on the whole demo plant faults injected on machines that are off at the fault's start are found ~0.8 of the
time against ~0.97 on producing machines, and they are about a fifth of all faults. Planning a fix needs to know
which misses are which: fault kind, signal class (the simulator's physics role), time since the machine's stop
grace ended (the at-rest stage neither learns nor judges before ``hold_until``), fault size against the learned
rest band, whether the signal is judged at rest at all, and whether the fault is visible in the signal's values
at all (``visible``: sim_eval's own observability test).

Reads one or more ``MISSED.seedN.csv`` files written by ``bench/sim_eval.py --missed`` (which records the
at-rest stage's state at each event's first and last tick) and prints the tables. Usage::

    python bench/offrest_misses.py --plant configs/demo/plant.yaml --machine-fraction 0.25 /tmp/x.seed1.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sim_eval import EPOCH_NS, keep_templates, subsample
from plantwire.configfile import load_plant
from simulators.faults import signal_scale
from simulators.physics import Role
from simulators.runtime import SimOptions, build_world


def _classes(plant_path: Path, fraction: float, templates: tuple[str, ...]) -> tuple[dict[str, str], dict[str, float]]:
    """Signal id -> class (physics role, or the plant's kind for signals without one), and -> the fault scale."""
    plant = subsample(keep_templates(load_plant(plant_path), templates), fraction)
    world = build_world(SimOptions(plant=plant_path, seed=1, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    roles = world.physics.role if world.physics is not None else np.zeros(len(table), dtype=np.int8)
    scale = signal_scale(table)
    cls, sc = {}, {}
    for r, sid in enumerate(table.ids):
        role = Role(int(roles[r]))
        cls[sid] = role.name.lower() if role != Role.PLAIN else f"plain:{table.kinds[r]}"
        sc[sid] = float(scale[r])
    return cls, sc


def _bucket(x: float, edges: list[float], names: list[str]) -> str:
    if not np.isfinite(x):
        return names[-1]
    for e, n in zip(edges, names, strict=False):
        if x < e:
            return n
    return names[-2]


def _table(title: str, rows: list[dict[str, str]], key: str) -> None:
    tot, det = Counter(), Counter()
    vis_miss = Counter()
    for r in rows:
        tot[r[key]] += 1
        det[r[key]] += int(r["detected"])
        vis_miss[r[key]] += int(r["visible"] == "1" and r["detected"] == "0")
    print(f"\n{title}")
    print(f"  {'':34} {'events':>6} {'found':>6} {'recall':>6} {'missed':>6} {'of them visible':>15}")
    for k in sorted(tot, key=lambda k: -(tot[k] - det[k])):
        n, d = tot[k], det[k]
        print(f"  {k:34} {n:6d} {d:6d} {d / n:6.2f} {n - d:6d} {vis_miss[k]:15d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="+", type=Path)
    ap.add_argument("--plant", type=Path, default=Path("configs/demo/plant.yaml"))
    ap.add_argument("--machine-fraction", type=float, default=1.0)
    ap.add_argument("--templates", default="")
    args = ap.parse_args()
    cls, scale = _classes(args.plant, args.machine_fraction, tuple(t for t in args.templates.split(",") if t))
    rows: list[dict[str, str]] = []
    for p in args.csv:
        with open(p) as fh:
            rows += list(csv.DictReader(fh))
    off = [r for r in rows if r["machine_off"] == "1"]
    print(f"{len(rows)} events, {len(off)} on machines off at the fault's start, "
          f"recall {np.mean([int(r['detected']) for r in rows]):.3f} all, "
          f"{np.mean([int(r['detected']) for r in off]):.3f} off")
    for r in off:
        r["template"] = r["signal"].split(".")[1].rstrip("0123456789")
        r["class"] = cls.get(r["signal"], "?")
        r["tmpl_class"] = f"{r['template']}/{r['class']}"
        r["name"] = f"{r['template']}.{r['signal'].split('.')[-1]}"
        judged = r.get("rest_judged", "") == "1"
        after = float(r["rest_after_hold_s"]) if judged and r["rest_after_hold_s"] not in ("", "nan") else np.nan
        after_end = float(r["rest_after_hold_end_s"]) if judged and r["rest_after_hold_end_s"] not in ("", "nan") \
            else np.nan
        learned = float(r["rest_learned_s"]) if judged and r["rest_learned_s"] not in ("", "nan") else np.nan
        band = float(r["rest_band"]) if judged and r["rest_band"] not in ("", "nan") else np.nan
        if not judged:
            r["where"] = "not judged at rest"
        elif r["det_state"] == "running":
            r["where"] = "detector says running"
        elif after_end <= 0:
            r["where"] = "whole fault inside stop grace"
        elif after <= 0:
            r["where"] = "starts in grace, ends after"
        elif learned < 600:
            r["where"] = "after grace, not warm"
        else:
            r["where"] = "after grace, warm"
        r["since_stop"] = _bucket(float(r["det_since_s"]) if r["det_since_s"] else np.nan,
                                  [600, 1800, 3600, 7200, 14400, 1e18],
                                  ["<10 min", "10-30 min", "30-60 min", "1-2 h", "2-4 h", ">4 h", "?"])
        mag = float(r["magnitude"])
        kind = r["kind"]
        size = abs(mag) if kind in ("step", "drift", "calibration_offset", "spike", "oscillation", "noise_burst") \
            else np.nan
        rel = size / band if np.isfinite(size) and band > 0 else np.nan
        r["size_vs_band"] = "n/a (stuck, dropout, leak)" if not np.isfinite(size) else (
            "no band" if not np.isfinite(rel) else _bucket(rel, [0.5, 1, 2, 4, 1e18],
                                                           ["<0.5 band", "0.5-1 band", "1-2 bands", "2-4 bands",
                                                            ">4 bands", "?"]))
        r["_scale"] = str(scale.get(r["signal"], np.nan))
    _table("by fault kind (off machines)", off, "kind")
    _table("by template/physics class", off, "tmpl_class")
    _table("by physics class", off, "class")
    _table("by detector state, time since it changed (det_since_s)", off,
           "since_stop")
    _table("where the at-rest stage stood", off, "where")
    _table("fault size (|magnitude|) against the at-rest band half-width at its start (judged, warm ones)",
           [r for r in off if r["where"] == "after grace, warm"], "size_vs_band")
    _table("by detector state at the fault's start", off, "det_state")
    missed_warm = [r for r in off if r["where"] == "after grace, warm" and r["detected"] == "0"
                   and r["visible"] == "1"]
    _table("visible misses, judged and warm: by kind", missed_warm, "kind")
    _table("visible misses, judged and warm: by signal", missed_warm, "name")
    missed_nj = [r for r in off if r["where"] == "not judged at rest" and r["detected"] == "0"]
    _table("misses on signals not judged at rest: by signal", missed_nj, "name")


if __name__ == "__main__":
    main()
