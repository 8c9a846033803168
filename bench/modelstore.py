"""Cost of model shadows and swaps on the edge's frame path (issue 17), on the demo plant (15,000 signals).

Prints, per frame of one sample per signal (1 Hz, machine ticks every 10 s of data): the stack's time
without any shadow, with every template's machine model in shadow (the worst case: 600 machines scored
twice), and the time one ``swap_models`` of a template (promotion, warm from its shadow) takes between two
frames. Models: the demo's bundles (``plantwire.demo_models``; fitted on the first run, then cached).

    .venv/bin/python bench/modelstore.py [--frames 120] [--state-dir state/bench-models]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.detectors.analytics import EdgeAnalytics  # noqa: E402
from edge.modelstore import convert  # noqa: E402
from edge.modelstore.compat import PlantView  # noqa: E402
from edge.modelstore.reader import load_public_key, read_verified  # noqa: E402
from edge.modelstore.shadow import ShadowMachine  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.demo_models import install  # noqa: E402
from simulators.runtime import SimOptions, build_world  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--state-dir", type=Path, default=ROOT / "state" / "bench-models")
    args = ap.parse_args()
    plant_path = ROOT / "configs" / "demo" / "plant.yaml"
    pub, _ = install(plant_path, args.state_dir, args.state_dir / "edge")
    key = load_public_key(pub)
    plant = load_plant(plant_path)
    world = build_world(SimOptions(plant=plant_path, anomaly_rate_per_h=0.0, wear_fraction=0.0), plant)
    table = world.table
    n = len(table)
    gen = world.model(np.arange(n), 0)
    an = EdgeAnalytics.from_table(table)
    stack = an.stack
    view = PlantView.build(plant, table, stack.m_ptr, stack.m_sig)
    models = {}
    for f in sorted((args.state_dir / "demo-models" / "bundles").glob("*.pwbundle")):
        b = read_verified(f.read_bytes(), key)
        models[b.template] = convert.machine_model(b)
    for t, m in models.items():  # all active first (as the demo runs)
        stack.machine_stage.swap_models(view.machines[t], m)
    sig = np.arange(n, dtype=np.uint32)
    q = np.zeros(n, dtype=np.uint8)
    t0_s = int(time.time()) // 10 * 10
    frames = [(np.full(n, (t0_s + k) * 10**9, dtype=np.int64), gen.step(t0_s + k, float(t0_s + k)).copy())
              for k in range(args.frames)]

    def run(shadows: list[ShadowMachine]) -> float:
        times = []
        for ts, v in frames:
            a = time.perf_counter()
            r = an.process(ts, sig, v, q)
            for sh in shadows:
                sh.process(sig, v, q, r.machine_ts_ns)
            times.append(time.perf_counter() - a)
        return float(np.median(times))

    run([])  # warm-up (JIT, caches)
    base = run([])
    shadows = [ShadowMachine(stack, view.machines[t], m, "bench", 0.0) for t, m in models.items()]
    with_shadow = run(shadows)
    swaps = []
    for sh, (t, m) in zip(shadows, models.items(), strict=True):
        a = time.perf_counter()
        stack.machine_stage.swap_models(view.machines[t], m, warm_from=sh.stage)
        swaps.append(time.perf_counter() - a)
    print(f"demo plant: {n} signals, {len(table.machine_ids)} machines, {len(models)} templates; "
          f"median of {args.frames} frames (one sample per signal)")
    print(f"  stack per frame, no shadow:             {base * 1e3:8.2f} ms")
    print(f"  stack per frame, every template shadow: {with_shadow * 1e3:8.2f} ms "
          f"(+{(with_shadow - base) / n * 1e9:.0f} ns per sample)")
    print(f"  swap_models (promotion) per template:   {np.median(swaps) * 1e3:8.2f} ms median, "
          f"{max(swaps) * 1e3:.2f} ms max")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
