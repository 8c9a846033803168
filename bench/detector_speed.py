"""Detector speed at gateway scale: the edge stack vs River's online detectors of the same class, one run.

What is timed, per sample, over ``--signals`` signals (one sample per signal per frame, as a 1 Hz gateway
delivers them):

- **plantwire**: ``DetectorStack.process`` -- the whole stack the edge runs (robust level, CUSUM change,
  stuck, rate, range per signal; fitted PCA (T², SPE) per machine of ``--per-machine`` signals; alarm
  hysteresis for both), frame columns in, scores and events out; and the same without the machine stage.
- **River** (online-ml, installed for this benchmark only, never a project dependency): per signal one
  ``anomaly.StandardAbsoluteDeviation`` (a streaming z-score: the same class as our level detector, and
  cheaper than it -- mean/variance, not a robust Huber estimate) and one ``drift.PageHinkley`` (the
  change-detection class of our CUSUM), score before learn, as River's docs use them; per machine one
  ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees()`` over the machine's signals (River's
  multivariate streaming detector; it has no streaming subspace/PCA one), fed a dict per machine tick as
  River's API requires. Also the per-signal stages alone on both sides. River gets the benefit of every
  doubt: its per-signal level detector is a plain mean/variance z-score (ours is a robust Huber
  estimate), it has no stuck/rate/range stages and no alarm hysteresis, and its values are Python floats
  converted before the clock starts.

Both sides are warmed up past their warm-up periods first, then timed over repeats of ``--frames``
frames; the best repeat and the median are printed (the box is shared). River is looked for on
``sys.path`` and, failing that, in ``state/river-pkgs`` (``pip install --target state/river-pkgs river``),
which is *appended* to the path so the project's numpy stays first.

    python bench/detector_speed.py [--signals 15000] [--per-machine 30] [--frames 20] [--repeats 7] [--hz10-frames 4]
                                   [--default-only] [--at-rest] [--cpu-time]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.detectors.settings import AnalyticsSettings  # noqa: E402
from edge.detectors.stack import DetectorStack  # noqa: E402


def _time(step: Callable[[int], None], frames: int, repeats: int, samples_per_frame: int,
          start: int, clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """(best, median) ns per sample of ``repeats`` runs of ``frames`` calls of ``step(frame_index)``."""
    runs, f = [], start
    for _ in range(repeats):
        t0 = clock()
        for _ in range(frames):
            step(f)
            f += 1
        runs.append((clock() - t0) / frames / samples_per_frame * 1e9)
    return min(runs), statistics.median(runs)


def plantwire_speed(vals: np.ndarray, machine_of: np.ndarray, frames: int, repeats: int,
                    fitted_per_machine: int = 0, period_s: float = 10.0, context: bool = True,
                    hz: int = 1, clock: Callable[[], float] = time.perf_counter, at_rest: bool = False,
                    off_fraction: float = 0.0, trend: bool = False) -> tuple[float, float]:
    """``fitted_per_machine``: every machine scores a fitted PCA model (one fitted on the first machine's
    columns, shared), ticked every ``period_s`` of sample time (frames are 1 s apart; the default 10 s is the
    edge's ``machine.period_s``); without it the defaults: no model given, self-fit off, so the machine
    stage only keeps each signal's latest value. ``context``: what a plant table gives the edge -- one device per
    400 signals (a PLC; device data quality) and each machine's first signal its running bit (operating state;
    always on here, so no baseline swaps: a start or stop is rare). ``hz``: sweeps per frame -- the edge flushes
    once a second, so at 10 Hz a frame holds ten samples of every signal (150,000 in arrival order: sweep by
    sweep, 100 ms apart). ``at_rest``: the at-rest stage on (``operating_state.at_rest``; shipped off);
    ``off_fraction``: that share of the machines has its running bit at 0 all along (switched off: their signals
    are frozen, and the at-rest stage judges them)."""
    n = vals.shape[1]
    kw: dict[str, np.ndarray] = {}
    if context:
        vals = vals.copy()
        running_of = np.full(n, -1, dtype=np.int64)
        if (machine_of >= 0).any():
            first = np.flatnonzero(np.r_[True, machine_of[1:] != machine_of[:-1]] & (machine_of >= 0))
            running_of[first] = machine_of[first]
            vals[:, first] = 1.0
            vals[:, first[: int(off_fraction * first.shape[0])]] = 0.0
        kw = {"running_of": running_of, "device_of": np.arange(n, dtype=np.int64) // 400}
    sig = np.tile(np.arange(n, dtype=np.uint32), hz)
    q = np.zeros(n * hz, dtype=np.uint8)
    n_frames = vals.shape[0] // hz
    step_ns = 10**9 // hz
    ts = [np.repeat(np.arange(f * hz, (f + 1) * hz, dtype=np.int64) * step_ns, n) for f in range(n_frames)]
    rows = [np.ascontiguousarray(vals[f * hz:(f + 1) * hz].reshape(-1)) for f in range(n_frames)]
    if fitted_per_machine:
        from edge.detectors.settings import MachineSettings
        from edge.models import machine

        model = machine.fit(vals[:, :fitted_per_machine], [str(i) for i in range(fitted_per_machine)])
        n_m = int(machine_of.max()) + 1
        settings = AnalyticsSettings(machine=MachineSettings(period_s=period_s))
        stack = DetectorStack(n, machine_of.astype(np.int64), settings, machine_models=[model] * n_m, **kw)
    elif at_rest:
        settings = AnalyticsSettings(operating_state={"at_rest": {"enabled": True, "warm_s": 10.0}})
        stack = DetectorStack(n, machine_of.astype(np.int64), settings, **kw)
    elif trend:
        flip = not AnalyticsSettings().trend.enabled  # the stage toggled from the shipped default
        stack = DetectorStack(n, machine_of.astype(np.int64), AnalyticsSettings(trend={"enabled": flip}), **kw)
    else:
        stack = DetectorStack(n, machine_of.astype(np.int64), **kw)
    warm = max(40 // hz, 4)  # past the default warm-up (30 samples) so every stage, machines included, is live

    # Every frame's timestamps made before the clock starts (the edge's frames come with theirs): shifting a
    # 150,000-sample column per frame inside the timed loop cost ~1-2 ns a sample (a fresh 1.2 MB array each time).
    stamps = [ts[f % n_frames] + (f // n_frames) * n_frames * 10**9 for f in range(warm + frames * repeats)]

    def step(f: int) -> None:
        stack.process(sig, rows[f % n_frames], q, stamps[f])

    for f in range(warm):
        step(f)
    return _time(step, frames, repeats, n * hz, warm, clock)


def river_speed(vals: np.ndarray, per_machine: int, frames: int, repeats: int) -> tuple[float, float, str]:
    import river
    from river import anomaly, drift, preprocessing

    n = vals.shape[1]
    sad = [anomaly.StandardAbsoluteDeviation() for _ in range(n)]
    ph = [drift.PageHinkley() for _ in range(n)]
    rows = [vals[k].tolist() for k in range(vals.shape[0])]
    x: dict[str, float] = {}
    scores = [0.0] * n
    n_machines = n // per_machine if per_machine else 0
    names = [f"s{j}" for j in range(per_machine)]
    hst = [preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=m) for m in range(n_machines)]
    m_scores = [0.0] * n_machines

    def step(f: int) -> None:
        row = rows[f % len(rows)]
        for i in range(n):
            v = row[i]
            d, p = sad[i], ph[i]
            s = d.score_one(x, v)  # score before learn, as the edge does
            d.learn_one(x, v)
            p.update(v)
            scores[i] = s + (1.0 if p.drift_detected else 0.0)
        for m in range(n_machines):
            xm = dict(zip(names, row[m * per_machine:(m + 1) * per_machine], strict=True))
            det = hst[m]
            m_scores[m] = det.score_one(xm)
            det.learn_one(xm)

    warm = 35  # PageHinkley's min_instances is 30; HalfSpaceTrees' first window (250) is not reached: its
    # learn_one costs the same before and after, and its score is only cheaper while the trees are empty
    for f in range(warm):
        step(f)
    best, med = _time(step, frames, repeats, n, warm)
    return best, med, river.__version__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signals", type=int, default=15_000)
    ap.add_argument("--per-machine", type=int, default=30)
    ap.add_argument("--frames", type=int, default=20, help="frames per timed repeat (plantwire)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--hz10-frames", type=int, default=4,
                    help="frames per timed repeat of the 10 Hz line (150,000 samples each; 0: skip it)")
    ap.add_argument("--default-only", action="store_true",
                    help="only the default stack's lines (1 Hz and 10 Hz frames): for A/B runs of the speed work")
    ap.add_argument("--trend-cost", action="store_true",
                    help="also time the defaults with the trend stage toggled (off when shipped on)")
    ap.add_argument("--at-rest", action="store_true",
                    help="also the at-rest stage's cost (shipped off), with all machines running and a third off")
    ap.add_argument("--river-frames", type=int, default=2, help="frames per timed repeat (River)")
    ap.add_argument("--river-repeats", type=int, default=3)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this thread's CPU time instead of the wall clock: on a box shared with other "
                         "jobs (load average above the core count) wall time mostly measures the neighbours")
    args = ap.parse_args(argv)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    if args.cpu_time:
        print("timed in thread CPU time (--cpu-time), not wall time")
    n = args.signals
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(50, n)) * rng.uniform(0.5, 5.0, n) + rng.uniform(-100, 100, n)
    print(f"{n:,} signals, one sample per signal per frame; ns/sample, best / median of repeats")
    machine_of = np.arange(n) // args.per_machine
    pw_best, pw_med = plantwire_speed(vals, machine_of, args.frames, args.repeats, clock=clock)
    print(f"plantwire stack, {n // args.per_machine} machines of {args.per_machine}, defaults (no model given): "
          f"{pw_best:8.1f} / {pw_med:8.1f}   (goal <= 50)", flush=True)
    if args.hz10_frames:
        vals10 = rng.normal(size=(100, n)) * rng.uniform(0.5, 5.0, n) + rng.uniform(-100, 100, n)
        h_best, h_med = plantwire_speed(vals10, machine_of, args.hz10_frames, args.repeats, hz=10, clock=clock)
        print(f"plantwire stack, defaults, 10 Hz frames (ten sweeps per frame): {h_best:8.1f} / {h_med:8.1f}",
              flush=True)
    if args.trend_cost:  # the slow-trend stage's cost per sample: the default stack with it on (shipped off)
        for hz, v, fr in ((1, vals, args.frames), (10, vals10 if args.hz10_frames else None, args.hz10_frames)):
            if v is None:
                continue
            t_best, t_med = plantwire_speed(v, machine_of, fr, args.repeats, hz=hz, clock=clock, trend=True)
            flip = "off" if AnalyticsSettings().trend.enabled else "on"
            print(f"plantwire stack, defaults, {hz} Hz, trend stage {flip}: {t_best:8.1f} / {t_med:8.1f}", flush=True)
    if args.at_rest:
        for off in (0.0, 1 / 3):
            for rest in (False, True):
                a_best, a_med = plantwire_speed(vals, machine_of, args.frames, args.repeats, clock=clock, at_rest=rest,
                                                off_fraction=off)
                print(f"plantwire stack, defaults, {off:.0%} of machines off, at-rest stage {'on' if rest else 'off'}: "
                      f"{a_best:8.1f} / {a_med:8.1f}", flush=True)
    if args.default_only:
        return 0
    fm_best, fm_med = plantwire_speed(vals, machine_of, args.frames, args.repeats, fitted_per_machine=args.per_machine,
                                      clock=clock)
    print(f"plantwire stack, fitted machine models (ticks every 10 s): {fm_best:8.1f} / {fm_med:8.1f}   (goal <= 50)",
          flush=True)
    fw_best, fw_med = plantwire_speed(vals, machine_of, args.frames, args.repeats, fitted_per_machine=args.per_machine,
                                      period_s=1e-9, clock=clock)
    print(f"plantwire stack, fitted models ticked every frame (worst case): {fw_best:8.1f} / {fw_med:8.1f}",
          flush=True)
    ns_best, ns_med = plantwire_speed(vals, np.full(n, -1), args.frames, args.repeats, clock=clock)
    print(f"plantwire stack, no machine stage:         {ns_best:8.1f} / {ns_med:8.1f}", flush=True)
    nc_best, nc_med = plantwire_speed(vals, machine_of, args.frames, args.repeats, context=False, clock=clock)
    print(f"plantwire stack, defaults without devices and running bits (no operating state, no device "
          f"judgement): {nc_best:8.1f} / {nc_med:8.1f}", flush=True)
    try:
        import river  # noqa: F401
    except ImportError:
        sys.path.append(str(ROOT / "state" / "river-pkgs"))
    try:
        rv_best, rv_med, version = river_speed(vals, args.per_machine, args.river_frames, args.river_repeats)
        rs_best, rs_med, _ = river_speed(vals, 0, args.river_frames, args.river_repeats)
    except ImportError as exc:
        print(f"River not importable ({exc}); install it with: pip install --target state/river-pkgs river")
        return 1
    print(f"River {version}, per signal StandardAbsoluteDeviation + PageHinkley, per machine MinMaxScaler | "
          f"HalfSpaceTrees: {rv_best:,.0f} / {rv_med:,.0f}")
    print(f"River {version}, per signal only:                {rs_best:,.0f} / {rs_med:,.0f}")
    print(f"ratio River / plantwire, whole stacks: {rv_best / pw_best:,.0f}x best, {rv_med / pw_med:,.0f}x median "
          f"(goal >= 1,000x); per-signal stages only: {rs_best / ns_best:,.0f}x best, {rs_med / ns_med:,.0f}x median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
