"""Where the detector stack's time goes: ns per sample of each kernel pass, and the Python around them.

The same stack and frames as ``bench/detector_speed.py`` (defaults, a device per 400 signals, each machine's
first signal its running bit, random values), at 1 Hz frames (one sample per signal) and 10 Hz frames (the
edge flushes once a second, so a frame holds ten sweeps: 150,000 samples in arrival order). Every kernel the
stack calls is wrapped with a timer (a wrapper costs ~0.3 us per call, under 0.02 ns per sample at 15,000);
"python" is the frame's time minus the kernels' -- the per-frame numpy and Python in ``process`` (from the
medians it is overstated when kernel times are skewed; the mean column adds up). Times are the
thread's CPU time (``time.thread_time``), not wall time: on a shared box a descheduled thread does not count,
though a neighbour's cache traffic still does. Per kernel its median call times its calls per frame.

    python bench/detector_profile.py [--signals 15000] [--per-machine 30] [--frames 20] [--repeats 5] [--hz 1,10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.detectors import machine as machine_mod  # noqa: E402
from edge.detectors import stack as stack_mod  # noqa: E402
from edge.detectors.stack import DetectorStack  # noqa: E402

_MODULES = ("opstate", "signal_stack", "atrest", "likelihood", "devices", "opchange", "alarms", "rearm",
            "signal_alarms")


def _wrap(timers: dict[str, list[float]]) -> list[tuple[Any, str, Any]]:
    """Replace each kernel the stack (and its machine stage) calls by a timing wrapper; returns what to undo."""
    undo = []
    targets = [(getattr(stack_mod, m), m) for m in _MODULES] + [(machine_mod.pca, "pca")]
    for mod, label in targets:
        for name in dir(mod):
            fn = getattr(mod, name)
            if not hasattr(fn, "py_func") and not hasattr(fn, "__wrapped__"):
                continue
            if name.startswith("_"):
                continue

            def timed(*a: Any, _fn: Callable[..., Any] = fn, _key: str = f"{label}.{name}") -> Any:
                t0 = time.thread_time()
                r = _fn(*a)
                timers[_key].append(time.thread_time() - t0)
                return r

            undo.append((mod, name, fn))
            setattr(mod, name, timed)
    return undo


def frames_at(vals: np.ndarray, hz: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(signal, value per frame, ts per frame, quality) for frames of ``hz`` sweeps of every signal."""
    n = vals.shape[1]
    n_frames = vals.shape[0] // hz
    sig = np.tile(np.arange(n, dtype=np.uint32), hz)
    q = np.zeros(n * hz, dtype=np.uint8)
    step = 10**9 // hz
    value = [np.ascontiguousarray(vals[f * hz:(f + 1) * hz].reshape(-1)) for f in range(n_frames)]
    ts = [np.repeat(np.arange(f * hz, (f + 1) * hz, dtype=np.int64) * step, n) for f in range(n_frames)]
    return sig, value, ts, q


def build(vals: np.ndarray, machine_of: np.ndarray) -> tuple[DetectorStack, np.ndarray]:
    n = vals.shape[1]
    vals = vals.copy()
    running_of = np.full(n, -1, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, machine_of[1:] != machine_of[:-1]] & (machine_of >= 0))
    running_of[first] = machine_of[first]
    vals[:, first] = 1.0
    stack = DetectorStack(n, machine_of.astype(np.int64), running_of=running_of,
                          device_of=np.arange(n, dtype=np.int64) // 400)
    return stack, vals


def profile(vals: np.ndarray, machine_of: np.ndarray, hz: int, frames: int, repeats: int) -> None:
    stack, vals = build(vals, machine_of)
    sig, value, ts, q = frames_at(vals, hz)
    nf = len(value)
    period = nf * 10**9

    n_warm = max(40 // hz, 4)  # past the warm-up (30 samples per signal)
    stamps = [ts[g % nf] + (g // nf) * period for g in range(n_warm + 2 * repeats * frames)]  # made before timing

    def step(f: int) -> None:
        stack.process(sig, value[f % nf], q, stamps[f])

    f = 0
    for _ in range(n_warm):
        step(f)
        f += 1
    # The same number of frames unwrapped first, as a cross-check of "python": the wrappers' own clock reads (~0.9 us
    # of CPU each on the 2-core VM, two per kernel call) land in it (measured ~0.5 ns/sample at 1 Hz).
    bare = []
    for _ in range(repeats * frames):
        t0 = time.thread_time()
        step(f)
        bare.append(time.thread_time() - t0)
        f += 1
    timers: dict[str, list[float]] = defaultdict(list)
    undo = _wrap(timers)
    # Python methods timed as a whole (kernels inside them are timed apart too): shown, not summed.
    whole: dict[str, list[float]] = defaultdict(list)
    for owner, name, key in ((stack.machine_stage, "tick", "machine_stage.tick"),
                             (stack, "_silent", "stack._silent")):
        method = getattr(owner, name)

        def timed_m(*a: Any, _fn: Callable[..., Any] = method, _key: str = key) -> Any:
            t0 = time.thread_time()
            r = _fn(*a)
            whole[_key].append(time.thread_time() - t0)
            return r

        setattr(owner, name, timed_m)
    walls = []
    try:
        for _ in range(repeats * frames):
            t0 = time.thread_time()
            step(f)
            walls.append(time.thread_time() - t0)
            f += 1
    finally:
        for mod, name, fn in undo:
            setattr(mod, name, fn)
    per = sig.shape[0]
    calls = repeats * frames

    def ns(xs: list[float]) -> float:
        """Median call times calls per frame, per sample (robust to a frame that lost its core)."""
        return statistics.median(xs) * len(xs) / calls / per * 1e9

    def mean_ns(xs: list[float]) -> float:
        """Mean per frame, per sample: unlike the medians, these add up (CPU time: a lost core does not count)."""
        return sum(xs) / calls / per * 1e9

    total, total_mean = ns(walls), mean_ns(walls)
    print(f"\n{hz} Hz frames: {per:,} samples per frame, {calls} frames; ns per sample, CPU time: median frame, "
          f"and mean")
    kern = kern_mean = 0.0
    for key, xs in sorted(timers.items(), key=lambda kv: -sum(kv[1])):
        v, vm = ns(xs), mean_ns(xs)
        kern += v
        kern_mean += vm
        print(f"  {key:32s} {v:7.2f} {vm:7.2f}   ({len(xs) / calls:.0f} calls/frame)")
    print(f"  {'python (process minus kernels)':32s} {total - kern:7.2f} {total_mean - kern_mean:7.2f}")
    print(f"  {'python, unwrapped frames':32s} {ns(bare) - kern:7.2f} {mean_ns(bare) - kern_mean:7.2f}   "
          f"(whole process unwrapped minus the kernels as timed wrapped)")
    for key, xs in sorted(whole.items()):
        print(f"  {'(whole, with its kernels) ' + key:32s} {ns(xs):7.2f} {mean_ns(xs):7.2f}   "
              f"({len(xs) / calls:.0f} calls/frame)")
    print(f"  {'whole process':32s} {total:7.2f} {total_mean:7.2f}   (best frame {min(walls) / per * 1e9:.2f})")
    print(f"  {'whole process, unwrapped':32s} {ns(bare):7.2f} {mean_ns(bare):7.2f}   "
          f"(best frame {min(bare) / per * 1e9:.2f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signals", type=int, default=15_000)
    ap.add_argument("--per-machine", type=int, default=30)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hz", default="1,10")
    args = ap.parse_args(argv)
    n = args.signals
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(100, n)) * rng.uniform(0.5, 5.0, n) + rng.uniform(-100, 100, n)
    machine_of = np.arange(n) // args.per_machine
    for hz in (int(h) for h in args.hz.split(",")):
        profile(vals, machine_of, hz, args.frames, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
