"""Interleaved A/B of the whole detector stack: another checkout's ``DetectorStack.process`` against this tree's.

Why: ``signal_frame_ab.py`` compares one kernel; a change to the per-frame call path, the alarm gate or the stack's
Python needs the whole ``process`` compared, and on the shared 2-core box two ``detector_speed.py`` runs minutes
apart differ by more than the changes measured. Here two worker processes -- one importing the other checkout's
``edge``, one this tree's -- each build ``detector_speed.py``'s default stack (15,000 signals, machines of 30 with
a running bit, a device per 400, random values; optionally a third of the machines off with the at-rest stage on),
warm it past warm-up, and then run timed repeats in turn (A, B, A, B, ...), each timed in the worker's thread CPU
time. ``--check`` also hashes every frame's outputs (scores, kinds, alarm scores, events) and the signal and alarm
state after each repeat, and fails if the two checkouts differ (bit-identical results). The other checkout is a
directory holding ``edge/`` and ``plantwire/``, e.g.

    git worktree add /tmp/base main   # or: mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    python bench/stack_ab.py /tmp/base [--hz 1,10] [--repeats 9] [--check] [--at-rest]

Prints ns/sample per side, best / median of the repeats, and the change of the best and of the median.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _worker(root: Path, hz: int, frames: int, check: bool, at_rest: bool) -> int:
    """Build the stack from ``root``'s ``edge``, then on each stdin line run ``frames`` frames and print the CPU
    ns/sample and (with ``check``) a hash of what they produced."""
    sys.path.insert(0, str(root))
    import time

    import numpy as np

    from edge.detectors.stack import DetectorStack

    n = 15_000
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(max(50, 10 * hz), n)) * rng.uniform(0.5, 5.0, n) + rng.uniform(-100, 100, n)
    machine_of = np.arange(n, dtype=np.int64) // 30
    running_of = np.full(n, -1, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, machine_of[1:] != machine_of[:-1]])
    running_of[first] = machine_of[first]
    vals[:, first] = 1.0
    kw: dict[str, Any] = {}
    if at_rest:
        from edge.detectors.settings import AnalyticsSettings

        vals[:, first[: first.shape[0] // 3]] = 0.0
        kw["settings"] = AnalyticsSettings(operating_state={"at_rest": {"enabled": True, "warm_s": 10.0}})
    stack = DetectorStack(n, machine_of, running_of=running_of, device_of=np.arange(n, dtype=np.int64) // 400, **kw)
    sig = np.tile(np.arange(n, dtype=np.uint32), hz)
    q = np.zeros(n * hz, dtype=np.uint8)
    n_rows = vals.shape[0] // hz
    rows = [np.ascontiguousarray(vals[f * hz:(f + 1) * hz].reshape(-1)) for f in range(n_rows)]
    base_ts = np.repeat(np.arange(hz, dtype=np.int64) * (10**9 // hz), n)
    f = 0

    def frame(f: int) -> Any:
        return stack.process(sig, rows[f % n_rows], q, base_ts + f * 10**9)

    for _ in range(max(40 // hz, 4)):
        frame(f)
        f += 1
    print("ready", flush=True)
    for _line in sys.stdin:
        h = hashlib.sha256()
        stamps = f
        t0 = time.thread_time()
        if check:
            for i in range(frames):
                r = frame(stamps + i)
                for a in (r.score, r.kind, r.alarm_score, r.events):
                    h.update(np.ascontiguousarray(a).tobytes())
        else:
            for i in range(frames):
                frame(stamps + i)
        dt = time.thread_time() - t0
        f += frames
        if check:
            for a in (stack.state, stack.z_last, stack.sig_alarm_f, stack.sig_alarm_t, stack.sig_rearm,
                      stack.first_ns, stack.hold_until, stack.m_state, stack.dev_good, stack.rest_state):
                h.update(np.ascontiguousarray(a).tobytes())
        print(f"{dt / frames / (n * hz) * 1e9:.3f} {h.hexdigest()[:16]}", flush=True)
    return 0


def _spawn(root: Path, hz: int, frames: int, check: bool, at_rest: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(root), "--hz", str(hz),
           "--frames", str(frames)] + (["--check"] if check else []) + (["--at-rest"] if at_rest else [])
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(root))
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if line != "ready":
        raise SystemExit(f"worker for {root} did not start (said {line!r})")
    return p


def _ask(p: subprocess.Popen[str]) -> tuple[float, str]:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("run\n")
    p.stdin.flush()
    ns, digest = p.stdout.readline().split()
    return float(ns), digest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="the other checkout (a directory holding edge/ and plantwire/)")
    ap.add_argument("--hz", default="1,10", help="sweeps per frame, comma-separated")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--frames", type=int, default=0, help="frames per repeat (0: 40 at 1 Hz, 4 at 10 Hz)")
    ap.add_argument("--check", action="store_true", help="fail unless both produce bit-identical results")
    ap.add_argument("--at-rest", action="store_true", help="a third of the machines off, the at-rest stage on")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.other.resolve(), int(args.hz), args.frames, args.check, args.at_rest)
    print(f"DetectorStack.process, 15,000 signals{', a third of machines off, at-rest on' if args.at_rest else ''}; "
          f"ns/sample in thread CPU time, best / median of {args.repeats} interleaved repeats; other = {args.other}")
    for hz in (int(h) for h in args.hz.split(",")):
        frames = args.frames or (40 if hz == 1 else 4)
        procs = {"other": _spawn(args.other.resolve(), hz, frames, args.check, args.at_rest),
                 "this": _spawn(ROOT, hz, frames, args.check, args.at_rest)}
        times: dict[str, list[float]] = {k: [] for k in procs}
        try:
            for r in range(args.repeats):
                got = {}
                for name in (("other", "this") if r % 2 == 0 else ("this", "other")):
                    ns, got[name] = _ask(procs[name])
                    times[name].append(ns)
                if args.check and got["other"] != got["this"]:
                    raise SystemExit(f"{hz} Hz: results differ in repeat {r}")
        finally:
            for p in procs.values():
                assert p.stdin is not None
                p.stdin.close()
                p.wait()
        o, s = times["other"], times["this"]
        print(f"{hz:>2} Hz: other {min(o):6.1f} / {statistics.median(o):6.1f}   this {min(s):6.1f} / "
              f"{statistics.median(s):6.1f}   change best {100 * (min(s) / min(o) - 1):+.1f} %, median "
              f"{100 * (statistics.median(s) / statistics.median(o) - 1):+.1f} %"
              + ("   (bit-identical)" if args.check else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
