"""Cost of the at-rest stage alone (``atrest.rest_chunk``) per sample, every machine switched off.

Why a script of its own: ``bench/detector_speed.py --at-rest`` times the whole stack with a third of the machines
off, where the at-rest pass is a few ns among ~70; this isolates the pass (first pass for the start test, then the
judgement) so a change to it is measured against itself, in the same minute, with the same frames.

15,000 signals in machines of 30, all OFF and past their stop grace, warm (their rest bands learned from the
frames' own noise); half of each machine's signals are loads (running level 50 bands away from rest: the
running-level start test reads them), the others read the same running or not. One frame per call (one sample
per signal, in register order), best and median of ``--repeats`` timed blocks of ``--frames``.
Variants: the shipped defaults, the frozen-value test off (``frozen_mult`` 0), the start test's running-level rule
off (``start_run_fraction`` 0), both off (the stage as it was before 2026-12-03's night round, in one pass), the start
test off (no machine can reach ``m_need``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge.detectors.settings import AtRestSettings
from edge.kernels import atrest


def _params(ar: AtRestSettings) -> np.ndarray:
    return atrest.make_params(ar.mult, ar.rel_resolution, ar.warm_s, ar.persist, ar.cap, ar.drain_per_s,
                              ar.tau_loc_s, ar.tau_mad_s, ar.max_dt_s, ar.start_band, ar.start_hold_s, ar.peak_mult,
                              ar.peak_warm_s, ar.start_persist_s, ar.start_run_fraction, ar.start_tau_s,
                              ar.start_noise_band, ar.start_load_bands, ar.frozen_mult, ar.frozen_min_run,
                              ar.frozen_runs, ar.frozen_tau_s)


def run(n: int, per_machine: int, frames: int, repeats: int, variant: str, clock) -> tuple[float, float]:
    """ns per sample (best, median) of ``rest_chunk`` over ``frames`` one-sample-per-signal frames."""
    rng = np.random.default_rng(1)
    n_m = n // per_machine
    machine_of = (np.arange(n) // per_machine).astype(np.int64)
    m_state = np.full(n_m, atrest.OFF, np.int8)
    m_since = np.zeros(n_m, np.int64)
    hold = np.full(n_m, -1, np.int64)
    floor = np.ascontiguousarray(np.stack([np.full(n, 0.05), np.zeros(n)], axis=1))
    run_st = np.zeros((n, 1))
    run_st[::2, 0] = 50.0  # the loads' running level
    run_lvl = atrest.init_run_level(n)  # and its kept extremes (``atrest.run_level``)
    run_lvl[::2] = [60.0, 45.0]
    ar = AtRestSettings(warm_s=10.0)
    if variant in ("no-run-rule", "no-frozen-no-run-rule"):
        ar = ar.model_copy(update={"start_run_fraction": 0.0})
    if variant in ("no-frozen", "no-frozen-no-run-rule"):
        ar = ar.model_copy(update={"frozen_mult": 0.0})
    p = _params(ar)
    p[atrest.P_START_PEERS] = atrest.plant_need(machine_of, ar.start_peers_min, ar.start_peers_fraction)
    p[atrest.P_START_PEER_WINDOW_S] = ar.start_peers_window_s
    need = atrest.machine_need(machine_of, n_m, ar.start_min, ar.start_fraction)
    if variant == "no-start-test":
        need[:] = 1e18
    st, m_start, sig_start = atrest.init_state(n), atrest.init_machines(n_m), atrest.init_signals(n)
    score, kind = np.zeros(n), np.zeros(n, np.uint8)
    q = np.zeros(n, np.uint8)
    n_pre = 60
    total = n_pre + frames * repeats
    noise = np.abs(rng.normal(0.0, 0.2, size=(min(total, 400), n)))
    sig = np.arange(n, dtype=np.uint32)  # register order, as a device's block reads deliver them
    ts_all = np.repeat((np.arange(total + 1, dtype=np.int64) + 1)[:, None] * 10**9, n, axis=1)
    times = []
    f = 0
    for block in range(-1, repeats):
        count = n_pre if block < 0 else frames
        t0 = clock()
        for _ in range(count):
            f += 1
            atrest.rest_chunk(ts_all[f], sig, noise[f % noise.shape[0]], q, machine_of, m_state, m_since, hold,
                              floor, st, p, score, kind, need, m_start, sig_start, f, run_st, 0, run_lvl)
        if block >= 0:
            times.append((clock() - t0) / (count * n) * 1e9)
    return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signals", type=int, default=15_000)
    ap.add_argument("--per-machine", type=int, default=30)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--cpu-time", action="store_true", help="this thread's CPU time instead of the wall clock")
    args = ap.parse_args()
    clock = time.thread_time if args.cpu_time else time.perf_counter
    for variant in ("default", "no-frozen", "no-run-rule", "no-frozen-no-run-rule", "no-start-test", "default"):
        best, med = run(args.signals, args.per_machine, args.frames, args.repeats, variant, clock)
        print(f"rest_chunk, every machine off, {variant}: {best:.1f} / {med:.1f} ns/sample (best / median)")


if __name__ == "__main__":
    main()
