"""A model fitted in the cloud from 3 days of history versus the edge learning alone from cold (issue 17).

Protocol (``bench/sim_eval.py``'s, same generator, quantisation, matching rules and default edge settings):
the simulated plant (``--plant``, default ``configs/dev``: 1,000 signals, 39 machines) runs from Monday
00:00 UTC with random anomalies at ``--rate`` per signal-hour throughout. Days 0..``--history-days`` are
*history*: a gateway is installed at the end of it and scored for ``--eval-days``. Three gateways see the
same samples from the install on:

- **cold**: the edge's defaults; the signal stack learns from its first sample, the machine stage has no
  model and scores nothing (``machine.self_fit`` off, the shipped default);
- **cold + self-fit**: the edge learning alone as far as it can: ``machine.self_fit: on`` records its first
  day and fits its own machine baselines (``fit_after_s`` 1 day);
- **shipped**: the edge's defaults plus the ``machine_pca`` models ``plantwire models fit`` fitted per
  template from the history (``cloud.models.fit.fit_site``, the same code and settings as the command),
  configured through ``machine.models`` as the edge would load a promoted bundle. The history is read
  through ``SimHistory``: the rows InfluxDB would return (last value of each 10 s tick, quantised as the
  edge reads it), computed from the generator instead of a server (``bench/model_fit.py`` measures the
  InfluxDB path). Left out of the fit: the injected anomalies' windows, as a stand-in for the alarm episodes
  a gateway would have reported (optimistic: a real history's missed faults stay in).
  The signal stack of this gateway starts cold as well: warm-starting it from ``signal_baseline`` bundles is
  the edge's side of the loop (not measured here).

Reported per gateway and per ``--bucket-h`` hours since install: alarm openings that match no injected event
(false alarms, signal and machine scope) per 1,000 signal-hours, and recall (an event is found when an alarm
opens on its signal, or on its machine for machine scope, within [start, end + grace]). "Time to a useful
model": for the machine stage, when it first scores (0 for shipped, fit_after_s for self-fit, never for cold);
for the whole gateway, the first bucket whose false-alarm rate is within ``--budget`` per 1,000 signal-hours.

    python bench/model_loop.py [--history-days 3] [--eval-days 2] [--rate 0.01] [--seed 0] [--bucket-h 6]
                               [--machine-fraction 1]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sim_eval import EPOCH_NS, quantise, quantiser, subsample  # noqa: E402

from cloud.models.exclude import Declared  # noqa: E402
from cloud.models.fit import FitOptions, fit_site  # noqa: E402
from cloud.models.history import Episodes, MachineRows, grid  # noqa: E402
from edge.detectors.analytics import EdgeAnalytics  # noqa: E402
from edge.detectors.events import Phase, Scope  # noqa: E402
from edge.detectors.settings import AnalyticsSettings, MachineSelfFit  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.plant import SignalTable  # noqa: E402
from simulators.runtime import SimOptions, build_world  # noqa: E402

PLANT = ROOT / "configs" / "dev" / "plant.yaml"
NS = 1_000_000_000


class SimHistory:
    """The ``cloud.models.history.History`` rows of a simulated history, from the generator (no server)."""

    def __init__(self, table: SignalTable, ticks: np.ndarray, values: np.ndarray, truth: object) -> None:
        self.table = table
        self.ts_ns = ticks  # tick starts
        self.values = values  # (n_ticks, n_signals) float32
        self.truth = truth
        self.index = {sid: i for i, sid in enumerate(table.ids)}
        self.queries = 0
        self.bytes_read = 0

    def machine_rows(self, site: str, machine: str, signals: tuple[str, ...], start_ns: int, end_ns: int,
                     period_s: int) -> MachineRows:
        ts = grid(start_ns, end_ns, period_s)
        sel = (self.ts_ns >= ts[0]) & (self.ts_ns <= ts[-1])
        cols = np.array([self.index[f"{machine}.{s}"] for s in signals], dtype=np.int64)
        vals = np.full((ts.shape[0], len(signals)), np.nan)
        k = (self.ts_ns[sel] - ts[0]) // (period_s * NS)
        vals[k] = self.values[sel][:, cols]
        return MachineRows(machine, signals, ts, vals, int(np.isfinite(vals).sum()) * period_s)

    def episodes(self, site: str, start_ns: int, end_ns: int, lookback_s: int) -> Episodes:
        t = self.truth
        sig = t.signal.astype(np.int64)  # type: ignore[attr-defined]
        machine = np.array([self.table.machine_ids[int(self.table.machine[s])] for s in sig], dtype=object)
        start = (EPOCH_NS + t.start_s * 1e9).astype(np.int64)  # type: ignore[attr-defined]
        end = (EPOCH_NS + t.end_s * 1e9).astype(np.int64)  # type: ignore[attr-defined]
        return Episodes(machine, np.array([self.table.ids[s] for s in sig], dtype=object), start, end)


@dataclass
class Gateway:
    name: str
    analytics: EdgeAnalytics
    opened: list[np.ndarray] = field(default_factory=list)
    first_machine_tick_s: float | None = None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plant", type=Path, default=PLANT)
    p.add_argument("--history-days", type=float, default=3.0)
    p.add_argument("--eval-days", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=0.01, help="anomalies per signal per hour")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket-h", type=float, default=6.0)
    p.add_argument("--grace-s", type=float, default=120.0)
    p.add_argument("--budget", type=float, default=2.0, help="false alarms per 1,000 signal-hours deemed useful")
    p.add_argument("--machine-fraction", type=float, default=1.0, help="keep this fraction of every machine group")
    args = p.parse_args()
    plant = subsample(load_plant(args.plant), args.machine_fraction)
    world = build_world(SimOptions(plant=args.plant, seed=args.seed, anomaly_rate_per_h=args.rate,
                                   wear_fraction=0.0, epoch_ns=EPOCH_NS), plant)
    table = world.table
    n = len(table)
    model = world.model(np.arange(n), args.seed)
    q = quantiser(table)
    t_install = int(args.history_days * 86_400)
    t_end = t_install + int(args.eval_days * 86_400)
    period_s = 10

    # 1. History: the last value of every 10 s tick, as InfluxDB's last(value) GROUP BY time(10s) returns it.
    t0 = time.monotonic()
    hist_ticks = np.arange(0, t_install, period_s)
    values = np.empty((hist_ticks.shape[0], n), dtype=np.float32)
    for i, k0 in enumerate(hist_ticks.tolist()):
        k = k0 + period_s - 1
        v = model.step(k, float(k))
        quantise(v, q)
        values[i] = v
    truth_hist = world.schedule.starting(0.0, float(t_install))
    history = SimHistory(table, EPOCH_NS + hist_ticks * NS, values, truth_hist)
    gen_s = time.monotonic() - t0
    t0 = time.monotonic()
    # Every tick of the history is read (read_ticks unbounded): reading costs nothing here, unlike InfluxDB.
    fitted = fit_site(history, plant, EPOCH_NS, EPOCH_NS + t_install * NS, FitOptions(read_ticks=10**12),
                      declared=list[Declared]())
    fit_s = time.monotonic() - t0
    del values, history
    print(f"history: {args.history_days:g} days of {n:,} signals ({len(table.machine_ids)} machines), "
          f"{len(truth_hist)} injected anomalies left out; generated in {gen_s:.0f} s, fitted in {fit_s:.1f} s")
    tmp = Path(tempfile.mkdtemp(prefix="pw-model-loop-"))
    models: dict[str, Path] = {}
    machines_of = {}
    for mg in plant.machines:
        machines_of.setdefault(mg.template, []).extend(
            mg.name.format(i=k + 1) if mg.count > 1 else mg.name for k in range(mg.count))
    import json

    for rep in fitted.templates:
        for f in rep.fitted:
            if f.kind != "machine_pca":
                continue
            path = tmp / f"{rep.template}.npz"
            np.savez(path, **f.arrays)
            path.with_suffix(".json").write_text(json.dumps(f.manifest["machine_model"]))
            for mid in machines_of[rep.template]:
                models[mid] = path
            v = f.validation
            print(f"  machine_pca {rep.template}: {len(f.signals)} signals, {f.rows:,} rows, "
                  f"{len(f.manifest['modes'])} mode(s); held-back (day {args.history_days * 0.8:.1f}-"
                  f"{args.history_days:g}): {v['holdout_over_limit_fraction']:.4f} of ticks over the limit, "
                  f"{v['holdout_alarm_openings_per_machine_day']:.2f} openings per machine-day")
        for kind, why in rep.skipped.items():
            if kind != "rul":
                print(f"  {kind} {rep.template}: {why}")

    # 2. Three gateways installed at t_install, the same samples.
    base = AnalyticsSettings()
    selffit = base.model_copy(update={"machine": base.machine.model_copy(update={"self_fit": MachineSelfFit.ON})})
    shipped = base.model_copy(update={"machine": base.machine.model_copy(update={"models": models})})
    gws = [Gateway("cold", EdgeAnalytics.from_table(table, base)),
           Gateway("cold + self-fit", EdgeAnalytics.from_table(table, selffit)),
           Gateway("shipped", EdgeAnalytics.from_table(table, shipped))]
    sig = np.arange(n, dtype=np.uint32)
    qual = np.zeros(n, dtype=np.uint8)
    ts = np.empty(n, dtype=np.int64)
    t0 = time.monotonic()
    for k in range(t_install, t_end):
        v = model.step(k, float(k))
        quantise(v, q)
        qual[:] = 0
        qual[~np.isfinite(v)] = 2
        ts.fill(EPOCH_NS + k * NS)
        for g in gws:
            r = g.analytics.process(ts, sig, v, qual)
            if r.events.shape[0]:
                ev = r.events[r.events["phase"] == Phase.OPEN]
                if ev.shape[0]:
                    g.opened.append(ev.copy())
            if g.first_machine_tick_s is None and g.analytics.stack.machine_stage.models is not None and any(
                    m is not None for m in g.analytics.stack.machine_stage.models):
                g.first_machine_tick_s = float(k - t_install)
    run_s = time.monotonic() - t0
    truth = world.schedule.starting(float(t_install), float(t_end))
    print(f"\nevaluation: {args.eval_days:g} days after install, {len(truth)} injected anomalies, "
          f"3 gateways in {run_s:.0f} s")
    _report(gws, truth, table, t_install, t_end, args)
    return 0


def _report(gws: list[Gateway], truth: object, table: SignalTable, t_install: int, t_end: int,
            args: argparse.Namespace) -> None:
    machine_of = table.machine.astype(np.int64)
    n = len(table)
    bucket_s = int(args.bucket_h * 3600)
    edges = np.arange(t_install, t_end + 1, bucket_s)
    t_sig = truth.signal.astype(np.int64)  # type: ignore[attr-defined]
    t_lo = EPOCH_NS + (truth.start_s * 1e9).astype(np.int64)  # type: ignore[attr-defined]
    t_hi = EPOCH_NS + ((truth.end_s + args.grace_s) * 1e9).astype(np.int64)  # type: ignore[attr-defined]
    header = f"{'gateway':16} {'hours':>9} {'false sig':>9} {'false mach':>10} {'per 1k sig-h':>12} {'recall':>7}"
    print(header)
    for g in gws:
        from edge.detectors.events import EVENT_DTYPE

        al = np.concatenate(g.opened) if g.opened else np.empty(0, dtype=EVENT_DTYPE)
        is_sig = al["scope"] == Scope.SIGNAL
        is_mach = al["scope"] == Scope.MACHINE
        used = np.zeros(al.shape[0], dtype=bool)
        found = np.zeros(t_sig.shape[0], dtype=bool)
        for i in range(t_sig.shape[0]):
            win = (al["ts_start"] >= t_lo[i]) & (al["ts_start"] <= t_hi[i])
            hit = win & ((is_sig & (al["entity"] == t_sig[i])) | (is_mach & (al["entity"] == machine_of[t_sig[i]])))
            used |= hit
            found[i] = bool(hit.any())
        al_s = (al["ts_start"] - EPOCH_NS) / 1e9
        ev_s = truth.start_s  # type: ignore[attr-defined]
        first_ok = None
        for a, b in itertools.pairwise(edges):
            inb = (al_s >= a) & (al_s < b)
            fs = int((inb & ~used & is_sig).sum())
            fm = int((inb & ~used & is_mach).sum())
            rate = 1000.0 * (fs + fm) / (n * (b - a) / 3600.0)
            evb = (ev_s >= a) & (ev_s < b)
            rec = f"{found[evb].mean():7.2f}" if evb.any() else f"{'-':>7}"
            if first_ok is None and rate <= args.budget:
                first_ok = (a - t_install) / 3600.0
            print(f"{g.name:16} {(a - t_install) / 3600:4.0f}-{(b - t_install) / 3600:<4.0f} {fs:9d} {fm:10d} "
                  f"{rate:12.2f} {rec}")
        fs = int((~used & is_sig).sum())
        fm = int((~used & is_mach).sum())
        total = 1000.0 * (fs + fm) / (n * (t_end - t_install) / 3600.0)
        mt = "never" if g.first_machine_tick_s is None else f"{g.first_machine_tick_s / 3600:.1f} h"
        ok = "not within the run" if first_ok is None else f"{first_ok:.0f} h"
        print(f"{g.name:16} {'all':>9} {fs:9d} {fm:10d} {total:12.2f} {found.mean():7.2f}   machine stage scores "
              f"from: {mt}; first bucket within {args.budget:g}/1k sig-h: {ok}")


if __name__ == "__main__":
    raise SystemExit(main())
