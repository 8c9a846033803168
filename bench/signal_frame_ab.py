"""Interleaved A/B of the fused signal pass: another version of ``signal_stack.py`` against this tree's, one process.

Why interleaved: on the shared 2-core box two runs minutes apart see different neighbours (the same commit read
50-120 ns/sample in back-to-back runs of ``detector_speed.py``); repeats alternating between the two kernels in one
process, timed in thread CPU time, see the same ones. Both kernels run on their own copy of the same stack
(``detector_speed.py``'s default stack: 15,000 signals, machines of 30 with a running bit, a device per 400),
warmed past warm-up by the stack itself, then fed the same frames. The other version is given as a file, e.g.

    git show main:edge/kernels/signal_stack.py > /tmp/base_signal_stack.py
    python bench/signal_frame_ab.py /tmp/base_signal_stack.py [--hz 1,10] [--repeats 7] [--check]

It must keep ``signal_frame``'s signature. ``--check`` also compares both kernels' outputs and state bitwise
after every frame (the figures are then for that run too). Prints ns/sample, best / median of the repeats.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.detectors.stack import DetectorStack  # noqa: E402
from edge.kernels import signal_stack  # noqa: E402


def _load(path: Path) -> ModuleType:
    """The other version as a module of its own (its numba cache goes beside the file)."""
    name = "edge.kernels._signal_stack_other"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stack(n: int, vals: np.ndarray) -> DetectorStack:
    machine_of = np.arange(n, dtype=np.int64) // 30
    running_of = np.full(n, -1, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, machine_of[1:] != machine_of[:-1]])
    running_of[first] = machine_of[first]
    stack = DetectorStack(n, machine_of, running_of=running_of, device_of=np.arange(n, dtype=np.int64) // 400)
    sig, q = np.arange(n, dtype=np.uint32), np.zeros(n, np.uint8)
    for f in range(40):  # past the default warm-up (30 samples)
        stack.process(sig, vals[f % vals.shape[0]], q, np.full(n, f * 10**9, np.int64))
    return stack


def run(other: ModuleType, n: int, hz: int, repeats: int, check: bool) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(50, n)) * rng.uniform(0.5, 5.0, n) + rng.uniform(-100, 100, n)
    vals[:, np.arange(0, n, 30)] = 1.0  # the running bits: every machine runs
    stacks = {"other": _stack(n, vals), "this": _stack(n, vals)}
    kernels = {"other": other.signal_frame, "this": signal_stack.signal_frame}
    sig = np.tile(np.arange(n, dtype=np.uint32), hz)
    q = np.zeros(n * hz, np.uint8)
    per = max(1, 60 // hz)  # frames per repeat
    frames = [np.ascontiguousarray(np.roll(vals, -f, axis=0)[:hz].reshape(-1)) for f in range(50)]
    out = {k: (np.empty(n * hz), np.empty(n * hz, np.uint8)) for k in stacks}
    times: dict[str, list[float]] = {k: [] for k in stacks}
    f0 = 40
    for _ in range(repeats):
        stamps = [np.repeat(np.arange(hz, dtype=np.int64) * (10**9 // hz), n) + (f0 + i) * 10**9 for i in range(per)]
        for name in ("other", "this"):
            st, (score, kind), kernel = stacks[name], out[name], kernels[name]
            ms = st.machine_stage
            t0 = time.thread_time()
            for i in range(per):
                kernel(stamps[i], sig, frames[(f0 + i) % 50], q, st.state, st.cfg, st.params, score, kind, st.z_last,
                       st._route, st._count, st._frame_out, st.dev_good, st.dev_any, ms.x_last, ms.seen, st._oc_stamp,
                       st._oc_hot, st.oc_members, st.hold_until, f0 + i, st._oc_p, st._oc_hold_ns)
            times[name].append((time.thread_time() - t0) / per / (n * hz) * 1e9)
        if check:
            a, b = stacks["other"], stacks["this"]
            same = (out["other"][0].tobytes() == out["this"][0].tobytes()
                    and out["other"][1].tobytes() == out["this"][1].tobytes()
                    and a.state.tobytes() == b.state.tobytes() and a.z_last.tobytes() == b.z_last.tobytes())
            if not same:
                raise SystemExit(f"outputs differ at {hz} Hz after frame {f0 + per - 1}")
        f0 += per
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="the other signal_stack.py")
    ap.add_argument("--signals", type=int, default=15_000)
    ap.add_argument("--hz", default="1,10", help="sweeps per frame, comma-separated")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--check", action="store_true", help="compare outputs and state bitwise after every repeat")
    args = ap.parse_args(argv)
    other = _load(args.other)
    print(f"signal_frame, {args.signals:,} signals, ns/sample in thread CPU time, best / median of "
          f"{args.repeats} interleaved repeats")
    for hz in (int(h) for h in args.hz.split(",")):
        t = run(other, args.signals, hz, args.repeats, args.check)
        o, s = t["other"], t["this"]
        print(f"{hz:>2} Hz: other {min(o):6.1f} / {statistics.median(o):6.1f}   this {min(s):6.1f} / "
              f"{statistics.median(s):6.1f}   change (best) {100 * (min(s) / min(o) - 1):+.0f} %"
              + ("   (bit-identical)" if args.check else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
