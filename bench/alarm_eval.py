"""The alarm layer (edge/alarms) on the simulator's ground truth: what reaches an operator, per area.

Issue 15's history protocol, as ``bench/sim_eval.py`` runs it (its machinery is reused: the simulator's own
generator, Modbus quantisation, dropouts as bad samples, the anomaly schedule as ground truth, a plant's
``--machine-fraction``): the detector stack learns ``--train-days`` fault-free, then ``--clean-days``
fault-free and ``--fault-days`` with random faults at ``--rate`` per signal-hour are scored, 1 Hz from
Monday 00:00 UTC (shift end 22:00, start 06:00). Every frame's OPEN/CLOSE events and its state-signal
samples go through ``IncidentEngine`` (edge default ``AlarmSettings``, areas from the plant file); its timers
tick once per simulated second, as the edge's flush loop does. The detectors' operating state per machine
(``StackResult.machine_state``, from a load signal) goes in as the daemon feeds it (``AlarmService.frame``:
``on_state``, ``on_machine_state``, ``on_events``, then the timers), so machines without a state signal are
suppressed when their load says off, exactly as on the edge. Figures:

- fault-free scored days: annunciated incidents per area per 10 minutes (average and the peak 10-minute
  window), chattering incidents, % of time each area is in flood (EEMUA 191 goals: <= 1, 0, < 1 %);
- fault days: % of injected faults annunciated (an incident of the fault's machine is shown to the operator
  -- opened, or updated, or unsuppressed/unshelved, while active and not suppressed, shelved or out of
  service -- within [start, end + ``--grace``]), incidents per fault (annunciated incidents that match a
  fault, per annunciated fault; and every annunciated incident of the fault days per injected fault), median
  time to annunciation for abrupt kinds (transition time - fault start, debounce and clear delay included);
  faults on machines that were off or starting (state suppression holds them back by design) are counted apart;
  for each fault on a running machine not annunciated, why (summarised into a flood incident, suppressed by
  state, shelved, continued an incident already shown, or no alarm on the machine); a fault whose incident was
  summarised into a flood is **not** annunciated (the operator was shown one line of a summary, not an alarm),
  and the share "shown on its own or summarised" is printed beside it;
- CPU of the alarm layer per sample (``on_state`` + ``on_events`` + ``tick``), beside the stack's.

An annunciation is counted when an incident becomes visible: a ``flood_open``, or any incident document
after which the incident is active, not suppressed, not shelved, not out of service, when the previous one
(if any) was not.

The protocol's fault rate (0.01 per signal-hour) is an upset, not a plant's rate, on a whole plant (bench/RESULTS.md,
"Alarm layer on the whole demo plant: the analysis"); ``--rate 0.001`` is a busy plant's, and ``--keep-faults``
approximates a lower rate from an existing recording.

    python bench/alarm_eval.py [--plant FILE] [--seeds 2] [--train-days 0.5] [--clean-days 1] [--fault-days 1]
                               [--rate 0.01] [--machine-fraction 0.07]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sim_eval import ABRUPT, EPOCH_NS, LEAK_SIGNALS, quantiser, subsample, ticks  # noqa: E402

from edge.alarms.engine import IncidentEngine  # noqa: E402
from edge.alarms.facts import MachineFacts  # noqa: E402
from edge.alarms.settings import AlarmSettings  # noqa: E402
from edge.detectors.analytics import EdgeAnalytics  # noqa: E402
from edge.detectors.events import EVENT_DTYPE, Scope  # noqa: E402
from edge.kernels import opstate  # noqa: E402
from edge.kernels.kinds import Kind  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from simulators.faults import KIND_ORDER, EventKind  # noqa: E402
from simulators.runtime import SimOptions, build_world  # noqa: E402

NS = 1_000_000_000
BIN_S = 600
DEMO = ROOT / "configs" / "demo" / "plant.yaml"


@dataclass
class Run:
    docs: list[dict[str, Any]]
    areas: list[str]
    machine_area: list[str]
    machine_ids: list[str]
    t_score_ns: int
    t_fault_ns: int
    t_end_ns: int
    truth: Any
    machine_of: np.ndarray
    state_at_fault: list[str]  # per injected fault: "running", "off", "startup", "unknown"
    stack_s: float
    alarm_s: float
    samples: int
    n_signals: int
    ids: list[str]
    replay_cpu_s: float = 0.0  # the engine's CPU over the scored ticks of the replay (thread time)
    scored_ticks: int = 0


def visible(d: dict[str, Any]) -> bool:
    return bool(d["active"] and d["suppressed_by"] is None and d["shelved_until_ns"] is None
                and not d["out_of_service"])


def _world(plant_path: Path, seed: int, rate: float, machine_fraction: float) -> tuple[Any, Any, Any]:
    plant = subsample(load_plant(plant_path), machine_fraction)
    world = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=rate, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    return plant, world, MachineFacts.from_plant(plant, world.table)


def simulate(plant_path: Path, seed: int, train_days: float, clean_days: float, fault_days: float, rate: float,
             machine_fraction: float, out: Path, live: bool = True) -> Path:
    """The expensive part, once: generator + detector stack; records every event and every change of a state
    signal (``out``), so the alarm layer can be replayed over it in seconds with any settings. The alarm layer
    also runs live here, to time it on whole frames (``live``; without it the recording is the same and its
    alarm-layer time NaN: the replay computes every figure)."""
    plant, world, facts = _world(plant_path, seed, rate, machine_fraction)
    clean = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    n = len(table)
    model = world.model(np.arange(n), seed)
    an = EdgeAnalytics.from_table(table, None)
    engine = IncidentEngine(table, facts, AlarmSettings())
    q = quantiser(table)
    sig = np.arange(n, dtype=np.uint32)
    ts = np.empty(n, dtype=np.int64)
    t_score = int(train_days * 86400)
    t_fault = t_score + int(clean_days * 86400)
    n_ticks = t_fault + int(fault_days * 86400)
    state_rows = np.flatnonzero(facts.state_machine >= 0)
    last_state = np.full(state_rows.size, np.nan)
    events: list[np.ndarray] = []
    ev_tick: list[np.ndarray] = []
    st_tick: list[np.ndarray] = []
    st_sig: list[np.ndarray] = []
    st_val: list[np.ndarray] = []
    ms_tick: list[np.ndarray] = []  # changes of the detectors' machine state (StackResult.machine_state)
    ms_mach: list[np.ndarray] = []
    ms_val: list[np.ndarray] = []
    last_ms = np.full(len(facts.machine_ids), -128, dtype=np.int16)
    stack_s = alarm_s = 0.0
    samples = 0
    t_wall = time.monotonic()
    c_wall = time.process_time()
    for k, v, qual in ticks(model, q, 0, n_ticks, split_at=t_fault,
                            schedule=lambda k: world.schedule if k >= t_fault else clean.schedule):
        now = EPOCH_NS + k * NS
        ts.fill(now)
        t0 = time.perf_counter()
        r = an.process(ts, sig, v, qual)
        t1 = time.perf_counter()
        if live:
            engine.on_state(sig, v, qual, now)
            if r.machine_state is not None:
                engine.on_machine_state(r.machine_state, now)
            if r.events.shape[0]:
                engine.on_events(r.events, now)
            engine.tick(now)
        t2 = time.perf_counter()
        if r.machine_state is not None:
            mch = np.flatnonzero(r.machine_state != last_ms)
            if mch.size:
                last_ms[mch] = r.machine_state[mch]
                ms_tick.append(np.full(mch.size, k, dtype=np.int64))
                ms_mach.append(mch.astype(np.int64))
                ms_val.append(r.machine_state[mch].astype(np.int8))
        if k >= t_score:
            stack_s += t1 - t0
            alarm_s += t2 - t1
            samples += n
        if r.events.shape[0]:
            events.append(r.events.copy())
            ev_tick.append(np.full(r.events.shape[0], k, dtype=np.int64))
        sv = v[state_rows]
        ch = np.flatnonzero(np.isfinite(sv) & (sv != last_state))
        if ch.size:
            last_state[ch] = sv[ch]
            st_tick.append(np.full(ch.size, k, dtype=np.int64))
            st_sig.append(state_rows[ch].astype(np.uint32))
            st_val.append(sv[ch].copy())
        if k % 21600 == 0 and k:
            print(f"  ... {k / 86400:.2f} simulated days, {time.monotonic() - t_wall:.0f} s wall, "
                  f"{time.process_time() - c_wall:.0f} s CPU", flush=True)
    print(f"  simulated {n_ticks / 86400:g} days of {n:,} signals (generator, stack, alarm layer): "
          f"{time.monotonic() - t_wall:.0f} s wall, {time.process_time() - c_wall:.0f} s CPU", flush=True)

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, events=cat(events, EVENT_DTYPE), ev_tick=cat(ev_tick, np.int64), st_tick=cat(st_tick, np.int64),
             st_sig=cat(st_sig, np.uint32), st_val=cat(st_val, np.float64),
             ms_tick=cat(ms_tick, np.int64), ms_mach=cat(ms_mach, np.int64), ms_val=cat(ms_val, np.int8),
             meta=np.array([seed, t_score, t_fault, n_ticks, n, samples], dtype=np.int64),
             meta_f=np.array([rate, machine_fraction, stack_s, alarm_s if live else np.nan]))
    return out


def replay(plant_path: Path, recording: Path, settings: AlarmSettings, ignore: list[str] | None = None,
           keep_faults: float = 1.0, grace_s: float = 60.0) -> Run:
    """The alarm layer over a recording (``simulate``): state-signal samples, the detectors' machine states, events
    (in the daemon's order, ``edge.alarms.service.AlarmService.frame``), then the timers, every tick."""
    with np.load(recording, allow_pickle=False) as z:
        rec = {k: z[k] for k in z.files}
    seed, t_score, t_fault, n_ticks, n, samples = (int(x) for x in rec["meta"])
    rate, fraction, stack_s, alarm_s = (float(x) for x in rec["meta_f"])
    _, world, facts = _world(plant_path, seed, rate, fraction)
    table = world.table
    engine = IncidentEngine(table, facts, settings)
    truth = world.schedule.starting(float(t_fault), float(n_ticks))
    starts = truth.start_s.astype(np.int64)
    machine_of = table.machine.astype(np.int64)
    state_at_fault = ["unknown"] * len(truth)
    ev, ev_tick = rec["events"], rec["ev_tick"]
    for spec in ignore or []:  # "SIGNAL_NAME:KIND": that signal name's alarms of that kind, on every machine
        name, kind = spec.split(":")
        sigs = np.array([i for i, sid in enumerate(table.ids) if sid.rsplit(".", 1)[-1] == name], dtype=np.int64)
        drop = (ev["scope"] == Scope.SIGNAL) & np.isin(ev["entity"], sigs) & (ev["kind"] == int(Kind[kind.upper()]))
        ev, ev_tick = ev[~drop], ev_tick[~drop]
        print(f"  ignoring {int(drop.sum())} {kind} alarm events of signals named {name} ({sigs.size} signals)")
    if keep_faults < 1.0:
        truth, ev, ev_tick = thin_faults(truth, ev, ev_tick, table, keep_faults, seed, grace_s)
        starts = truth.start_s.astype(np.int64)
        state_at_fault = ["unknown"] * len(truth)
    st_tick, st_sig, st_val = rec["st_tick"], rec["st_sig"], rec["st_val"]
    ev_at = np.searchsorted(ev_tick, np.arange(n_ticks + 1))
    st_at = np.searchsorted(st_tick, np.arange(n_ticks + 1))
    ms_tick, ms_mach, ms_val = rec["ms_tick"], rec["ms_mach"], rec["ms_val"]
    ms_at = np.searchsorted(ms_tick, np.arange(n_ticks + 1))
    mstate = np.full(len(facts.machine_ids), opstate.UNKNOWN, dtype=np.int8)
    fault_order = np.argsort(starts, kind="stable")
    fi = 0
    docs: list[dict[str, Any]] = []
    good = np.zeros(0, dtype=np.uint8)
    cpu = 0.0
    for k in range(n_ticks):
        now = EPOCH_NS + k * NS
        out: list[dict[str, Any]] = []
        c0 = time.thread_time()
        a, b = st_at[k], st_at[k + 1]
        if b > a:
            if good.size < b - a:
                good = np.zeros(b - a, dtype=np.uint8)
            out += engine.on_state(st_sig[a:b], st_val[a:b], good[: b - a], now)
        a, b = ms_at[k], ms_at[k + 1]
        if b > a:  # the daemon passes the whole array every frame; it only matters when it changes
            mstate[ms_mach[a:b]] = ms_val[a:b]
            out += engine.on_machine_state(mstate, now)
        a, b = ev_at[k], ev_at[k + 1]
        if b > a:
            out += engine.on_events(ev[a:b], now)
        out += engine.tick(now)
        if k >= t_score:
            cpu += time.thread_time() - c0
            docs += out
        while fi < fault_order.size and starts[fault_order[fi]] <= k:
            i = int(fault_order[fi])
            m = int(machine_of[int(truth.signal[i])])
            st = int(engine.state[m])
            state_at_fault[i] = ("startup" if m in engine._settling else "running") if st == 0 else \
                ("off" if st == 1 else "unknown")
            fi += 1
    return Run(docs, facts.areas, facts.area, facts.machine_ids, EPOCH_NS + t_score * NS, EPOCH_NS + t_fault * NS,
               EPOCH_NS + n_ticks * NS, truth, machine_of, state_at_fault, stack_s, alarm_s, samples, n,
               table.ids, cpu, n_ticks - t_score)


def thin_faults(truth: Any, ev: np.ndarray, ev_tick: np.ndarray, table: Any, keep: float, seed: int, grace_s: float
                ) -> tuple[Any, np.ndarray, np.ndarray]:
    """An approximation of a lower fault rate from a recording: keep a random share of the injected faults and
    drop the alarm events the others explain (events of the fault's signal, or machine alarms of its machine,
    opening within [start, end + grace]). Approximate: an alarm a dropped fault explains might have come anyway,
    and a kept fault's alarms were raised beside the others' (the detectors' state is the protocol rate's)."""
    rng = np.random.default_rng(1000 + seed)
    drop = rng.random(len(truth)) >= keep
    ev_s = ev["ts_start"] // NS - EPOCH_NS // NS
    machine = table.machine.astype(np.int64)
    gone = np.zeros(ev.shape[0], dtype=bool)
    sig_ev = ev["scope"] == Scope.SIGNAL
    mach_ev = ev["scope"] == Scope.MACHINE
    for i in np.flatnonzero(drop).tolist():
        s_i = int(truth.signal[i])
        inside = (ev_s >= truth.start_s[i]) & (ev_s <= truth.end_s[i] + grace_s)
        gone |= inside & ((sig_ev & (ev["entity"] == s_i)) | (mach_ev & (ev["entity"] == machine[s_i])))
    # a CLOSE goes with its OPEN (same entity and start)
    keys = {(int(e), int(sc), int(t)) for e, sc, t in zip(ev["entity"][gone], ev["scope"][gone], ev["ts_start"][gone],
                                                         strict=True)}
    gone |= np.array([(int(e), int(sc), int(t)) in keys for e, sc, t in zip(ev["entity"], ev["scope"], ev["ts_start"],
                                                                             strict=True)], dtype=bool)
    print(f"  thinned to {100 * keep:g} % of the faults: {int((~drop).sum())} of {len(truth)} kept, "
          f"{int(gone.sum())} of {ev.shape[0]} alarm events dropped with the others")
    return truth.select(~drop), ev[~gone], ev_tick[~gone]


def reactivations(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents at which a cleared incident became active again (``AlarmSettings.reactivation``): not new
    incidents (the cloud's KPIs count an incident once), counted beside them."""
    active: dict[str, bool] = {}
    out = []
    for d in docs:
        if d["machine"] is not None and d["active"] and d["id"] in active and not active[d["id"]]:
            out.append(d)
        active[d["id"]] = d["active"]
    return out


def annunciations(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents at which an incident became visible to an operator (a re-activated incident again)."""
    shown: dict[str, bool] = {}
    out = []
    for d in docs:
        if d["transition"] == "flood_open":
            out.append(d)
            shown[d["id"]] = True
            continue
        now = visible(d) and d["machine"] is not None
        if now and not shown.get(d["id"], False):
            out.append(d)
        shown[d["id"]] = now
    return out


def report(r: Run, grace_s: float) -> None:
    ann = annunciations(r.docs)
    # EEMUA's rate counts alarms annunciated, once per incident (cloud/alarms/kpi.py, the edge's
    # incidents_annunciated_total); a re-activation shows the operator an incident he already has.
    seen: set[str] = set()
    ann_new: list[dict[str, Any]] = []
    for d in ann:
        if d["id"] not in seen:
            seen.add(d["id"])
            ann_new.append(d)
    react = reactivations(r.docs)
    clean_lo, clean_hi = r.t_score_ns, r.t_fault_ns
    bins = max(1, (clean_hi - clean_lo) // (BIN_S * NS))
    print(f"  signals {r.n_signals:,}, machines {len(r.machine_ids)}, areas {len(r.areas)}; alarm layer "
          f"{1e9 * r.alarm_s / max(r.samples, 1):.1f} ns per sample (stack {1e9 * r.stack_s / max(r.samples, 1):.0f} "
          f"ns), {len(r.docs):,} incident documents")
    print(f"  alarm layer CPU on the recorded alarms (state changes, events, timers; not the per-sample state "
          f"gather, see --speed): {1e6 * r.replay_cpu_s / max(r.scored_ticks, 1):.1f} us per simulated second = "
          f"{1e9 * r.replay_cpu_s / max(r.scored_ticks * r.n_signals, 1):.2f} ns per sample at 1 Hz")
    if clean_hi > clean_lo:  # --clean-days 0: no fault-free day
        print(f"  fault-free scored day(s): {bins} ten-minute windows")
        print(f"  {'area':14} {'machines':>8} {'annunciated':>11} {'avg/10 min':>10} {'peak/10 min':>11} "
              f"{'suppressed':>10} {'flood %':>8} {'re-activated':>12}")
        chatter = sum(1 for d in r.docs if d["transition"] == "chatter" and clean_lo <= d["ts_ns"] < clean_hi)
        worst_avg = worst_flood = 0.0
        for area in r.areas:
            a_ts = np.array([d["ts_ns"] for d in ann_new if d["area"] == area and clean_lo <= d["ts_ns"] < clean_hi],
                            dtype=np.int64)
            n_react = sum(1 for d in react if d["area"] == area and clean_lo <= d["ts_ns"] < clean_hi)
            per_bin = np.bincount(((a_ts - clean_lo) // (BIN_S * NS)).astype(np.int64), minlength=bins)[:bins]
            supp = sum(1 for d in r.docs if d["area"] == area and d["transition"] == "suppress" and d["seq"] == 1
                       and clean_lo <= d["ts_ns"] < clean_hi)
            flood_ns = 0
            opened: int | None = None
            for d in r.docs:
                if d["area"] != area:
                    continue
                if d["transition"] == "flood_open":
                    opened = max(d["ts_ns"], clean_lo)
                elif d["transition"] == "flood_close" and opened is not None:
                    flood_ns += max(0, min(d["ts_ns"], clean_hi) - opened) if opened < clean_hi else 0
                    opened = None
            if opened is not None and opened < clean_hi:
                flood_ns += clean_hi - opened
            flood_pct = 100.0 * flood_ns / (clean_hi - clean_lo)
            n_mach = sum(1 for a in r.machine_area if a == area)
            avg = per_bin.mean()
            worst_avg, worst_flood = max(worst_avg, avg), max(worst_flood, flood_pct)
            print(f"  {area:14} {n_mach:8d} {a_ts.size:11d} {avg:10.3f} {per_bin.max():11d} {supp:10d} "
                  f"{flood_pct:8.2f} {n_react:12d}")
        print(f"  worst area: {worst_avg:.3f} annunciated per 10 min (goal <= 1), flood {worst_flood:.2f} % of the "
              f"time (goal < 1 %), chattering {chatter} (goal 0)")
    # -- fault days ----------------------------------------------------------------------------------
    t = r.truth
    n_ev = len(t)
    if n_ev == 0:
        return
    ann_fault = [d for d in ann if d["ts_ns"] >= r.t_fault_ns and d["machine"] is not None]
    by_machine: dict[str, list[dict[str, Any]]] = {}
    for d in ann_fault:
        by_machine.setdefault(d["machine"], []).append(d)
    # Updates of an incident already shown also announce a fault (a new contributor in an open incident).
    upd: dict[str, list[dict[str, Any]]] = {}
    for d in r.docs:
        if d["ts_ns"] >= r.t_fault_ns and d["machine"] is not None and d["transition"] == "update" and visible(d):
            upd.setdefault(d["machine"], []).append(d)
    found = np.zeros(n_ev, dtype=bool)
    delay = np.full(n_ev, np.nan)
    matched_ids: set[str] = set()
    for i in range(n_ev):
        mid = r.machine_ids[int(r.machine_of[int(t.signal[i])])]
        lo = EPOCH_NS + int(t.start_s[i] * NS)
        hi = EPOCH_NS + int((t.end_s[i] + grace_s) * NS)
        shown = [d for d in by_machine.get(mid, []) if lo <= d["ts_ns"] <= hi]  # became visible (or again)
        hits = shown + [d for d in upd.get(mid, []) if lo <= d["ts_ns"] <= hi]
        if hits:
            found[i] = True
            first = min(hits, key=lambda d: d["ts_ns"])
            delay[i] = (first["ts_ns"] - lo) / NS
            matched_ids.update(d["id"] for d in shown)
    kinds = t.kind.astype(np.int64)
    abrupt = np.isin(kinds, [KIND_ORDER.index(k) for k in ABRUPT])
    state = np.array(r.state_at_fault)
    held = np.isin(state, ["off", "startup"])
    incidents_fault_days = len({d["id"] for d in ann_fault})
    print(f"  fault day(s): {n_ev} injected faults; annunciated {100 * found.mean():.1f} % "
          f"(on machines running at the fault: {100 * found[~held].mean():.1f} % of {int((~held).sum())}; "
          f"{int(held.sum())} faults on machines off or starting, {int(found[held].sum())} of them shown)")
    why = miss_reasons(r, found, grace_s)
    run = ~held & ~found
    summ = np.array([w == SUMMARISED for w in why])
    print(f"    not annunciated on running machines ({int(run.sum())}), why: " + ", ".join(
        f"{w} {n}" for w, n in sorted(Counter(why[i] for i in np.flatnonzero(run)).items(), key=lambda x: -x[1])))
    floods = ", ".join(f"{a} {100 * p:.1f} %" for a, p in flood_share(r, r.t_fault_ns, r.t_end_ns).items() if p > 0)
    per10 = {a: 600 * NS * len({d["id"] for d in ann_fault if d["area"] == a}) / (r.t_end_ns - r.t_fault_ns)
             for a in r.areas}
    worst = max(per10, key=lambda a: per10[a])
    print(f"    annunciated per 10 min on the fault day(s), false ones included: worst area {worst} "
          f"{per10[worst]:.2f}; " + ", ".join(f"{a} {v:.2f}" for a, v in per10.items() if a != worst))
    print(f"    shown on their own or summarised into a flood incident (named there if among its 10 most urgent): "
          f"{100 * (found | summ)[~held].mean():.1f} % on running machines; flood time on the fault day(s): "
          f"{floods or 'none'}")
    print(f"    incidents per fault: {len(matched_ids) / max(int(found.sum()), 1):.2f} matched incidents per "
          f"annunciated fault; all annunciated incidents of the fault days per injected fault "
          f"{incidents_fault_days / n_ev:.2f} ({incidents_fault_days} incidents); re-activations on the fault day(s) "
          f"{sum(1 for d in react if d['ts_ns'] >= r.t_fault_ns)} (not new incidents)")
    d_ab = delay[found & abrupt]
    print(f"    time to annunciation, abrupt kinds: median {np.median(d_ab) if d_ab.size else float('nan'):.1f} s "
          f"over {d_ab.size} of {int(abrupt.sum())}; all kinds median {np.nanmedian(delay):.1f} s")
    print(f"    {'kind':20} {'faults':>6} {'shown':>6} {'median s':>9}")
    for k, kind in enumerate(KIND_ORDER):
        sel = kinds == k
        if not sel.any():
            continue
        dd = delay[sel & found]
        print(f"    {kind.value:20} {int(sel.sum()):6d} {found[sel].mean():6.2f} "
              f"{np.median(dd) if dd.size else float('nan'):9.1f}")
    _ = LEAK_SIGNALS, EventKind  # matching is per machine: a micro-leak's signals are all on its machine


SUMMARISED = "summarised into a flood"


def flood_share(r: Run, lo_ns: int, hi_ns: int) -> dict[str, float]:
    """Share of [lo_ns, hi_ns) each area spent with a flood incident open."""
    out = {a: 0.0 for a in r.areas}
    opened: dict[str, int] = {}
    for d in r.docs:
        if d["transition"] == "flood_open":
            opened[d["area"]] = d["ts_ns"]
        elif d["transition"] == "flood_close" and d["area"] in opened:
            a0 = opened.pop(d["area"])
            out[d["area"]] += max(0, min(d["ts_ns"], hi_ns) - max(a0, lo_ns))
    for a, a0 in opened.items():
        out[a] += max(0, hi_ns - max(a0, lo_ns))
    return {a: v / (hi_ns - lo_ns) for a, v in out.items()}


def miss_reasons(r: Run, found: np.ndarray, grace_s: float) -> list[str]:
    """Per injected fault, why it was not annunciated ("" if it was): its machine's incident documents within
    [start, end + grace] were all summarised into a flood, or suppressed by machine state, or shelved; or there
    were none because the machine's incident was already shown (the fault continued it without a new
    contributor), or was hidden; or no incident at all (the detectors raised no alarm on that machine)."""
    by_machine: dict[str, list[dict[str, Any]]] = {}
    for d in r.docs:
        if d["machine"] is not None:
            by_machine.setdefault(d["machine"], []).append(d)
    t = r.truth
    out = [""] * len(t)
    for i in np.flatnonzero(~found).tolist():
        mid = r.machine_ids[int(r.machine_of[int(t.signal[i])])]
        lo = EPOCH_NS + int(t.start_s[i] * NS)
        hi = EPOCH_NS + int((t.end_s[i] + grace_s) * NS)
        docs = by_machine.get(mid, [])
        inside = [d for d in docs if lo <= d["ts_ns"] <= hi]
        before = [d for d in docs if d["ts_ns"] < lo]
        prev = before[-1] if before else None
        hidden = inside or ([prev] if prev is not None and prev["active"] else [])
        by = {d["suppressed_by"] for d in hidden} - {None}
        if "flood" in by:
            out[i] = SUMMARISED
        elif by:
            out[i] = "suppressed by state (" + ", ".join(sorted(by)) + ")"
        elif any(d["shelved_until_ns"] or d["out_of_service"] for d in hidden):
            out[i] = "shelved or out of service"
        elif hidden:
            out[i] = "continued an incident already shown"
        else:
            out[i] = "no incident (no alarm on the machine)"
    return out


def speed(plant_path: Path, events_per_frame: int, frames: int = 200) -> None:
    """The alarm layer's CPU per sample on whole-plant frames (all signals, 1 Hz and 10 Hz flushes of 1 s), with
    ``events_per_frame`` OPEN/CLOSE events each (a storm; a healthy plant has far fewer): every step the daemon
    runs per flush (``on_state``, ``on_machine_state``, ``on_events``, the timers) and every 10 s the resync with
    the detectors (``resync`` with a look-up that always answers "open", ``EdgeAnalytics.open_alarms`` over
    whole-plant alarm states with the storm's alarms open, and ``recover``). CPU time of this thread
    (``time.thread_time``), steadier than wall time on a shared box."""
    from edge.detectors.analytics import _open_rows
    from edge.detectors.events import Phase, Scope
    from edge.kernels import alarms as alarm_kernel
    from plantwire.plant import expand

    plant = load_plant(plant_path)
    table = expand(plant)
    facts = MachineFacts.from_plant(plant, table)
    n = len(table)
    rng = np.random.default_rng(0)
    for hz in (1, 10):
        engine = IncidentEngine(table, facts, AlarmSettings())
        sig = np.tile(np.arange(n, dtype=np.uint32), hz)
        val = rng.normal(1.0, 0.1, sig.size)
        val[facts.state_machine[sig] >= 0] = 1.0  # running
        qual = np.zeros(sig.size, dtype=np.uint8)
        mstate = np.full(len(facts.machine_ids), opstate.RUNNING, dtype=np.int8)
        sig_f, sig_t = alarm_kernel.init_state(n)  # the detectors' signal alarm states, as open_alarms reads them
        mach_f, mach_t = alarm_kernel.init_state(len(facts.machine_ids))
        t_total = t_resync = 0.0
        for f in range(frames):
            now = EPOCH_NS + f * NS
            ev = np.zeros(events_per_frame, dtype=EVENT_DTYPE)
            ent = rng.integers(0, n, events_per_frame)
            opening = f % 2 == 0
            ev["entity"], ev["scope"], ev["kind"], ev["peak"], ev["top"] = ent, Scope.SIGNAL, 1, 0.9, -1
            ev["phase"] = Phase.OPEN if opening else Phase.CLOSE
            ev["ts_start"], ev["ts_end"] = now, -1 if opening else now
            sig_f[ent, alarm_kernel.ACTIVE] = 1.0 if opening else 0.0
            sig_f[ent, alarm_kernel.PEAK], sig_f[ent, alarm_kernel.PEAK_KIND] = 0.9, 1
            sig_t[ent, alarm_kernel.T_START] = now
            t0 = time.thread_time()
            engine.on_state(sig, val, qual, now)
            engine.on_machine_state(mstate, now)
            engine.on_events(ev, now)
            if f % 10 == 0:  # the service resyncs every 10 s (RESYNC_INTERVAL_NS)
                t1 = time.thread_time()
                engine.resync(lambda key: True, now)
                rows = np.concatenate([_open_rows(sig_f, sig_t, None, Scope.SIGNAL, None),
                                       _open_rows(mach_f, mach_t, None, Scope.MACHINE, Kind.MACHINE)])
                engine.recover(rows, now)
                t_resync += time.thread_time() - t1
            engine.tick(now)
            t_total += time.thread_time() - t0
        per = t_total / frames
        print(f"  {n:,} signals at {hz} Hz ({sig.size:,} samples per 1 s frame), {events_per_frame} events per frame: "
              f"{1e3 * per:.2f} ms CPU per frame = {1e9 * per / sig.size:.1f} ns per sample (resync and recover "
              f"every 10 s: {1e3 * t_resync / max(frames // 10, 1):.2f} ms each; {len(engine.current)} incidents open "
              f"at the end)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plant", type=Path, default=DEMO)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2])
    ap.add_argument("--train-days", type=float, default=0.5)
    ap.add_argument("--clean-days", type=float, default=1.0)
    ap.add_argument("--fault-days", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--machine-fraction", type=float, default=0.07)
    ap.add_argument("--grace", type=float, default=60.0)
    ap.add_argument("--state-settle-s", type=float, default=None, help="override AlarmSettings.state_settle_s")
    ap.add_argument("--suppression", choices=["state", "off"], default=None)
    ap.add_argument("--flood-keeps", choices=["critical", "high", "low"], default=None,
                    help="override AlarmSettings.flood_keeps (low: nothing summarised, floods only counted)")
    ap.add_argument("--reactivation", choices=["same_signal", "same_machine", "off"], default=None,
                    help="override AlarmSettings.reactivation (off: every alarm after a clear opens a new incident)")
    ap.add_argument("--reactivate-window-s", type=float, default=None,
                    help="override AlarmSettings.reactivate_window_s")
    ap.add_argument("--recordings", type=Path, default=ROOT / "state" / "alarm_eval",
                    help="simulated events are recorded here once; later runs replay them (any AlarmSettings)")
    ap.add_argument("--ignore", nargs="*", default=[], metavar="SIGNAL:KIND",
                    help="replay without these alarms (signal name within its machine, alarm kind), e.g. "
                    "part_temp:rate: what a detector setting would remove, approximately (another detector may "
                    "still alarm on those samples)")
    ap.add_argument("--keep-faults", type=float, default=1.0,
                    help="replay with this share of the injected faults (the alarms the others explain removed): an "
                    "approximation of a lower fault rate from the same recording")
    ap.add_argument("--no-live", action="store_true",
                    help="do not run the alarm layer during the simulation (it only times it there; the replay gives "
                         "every figure): faster on a large plant, alarm-layer CPU not reported")
    ap.add_argument("--speed", action="store_true", help="only the cost per sample on whole-plant frames")
    args = ap.parse_args(argv)
    if args.speed:
        print(f"alarm layer speed, plant {args.plant}")
        for n_ev in (2, 20):
            speed(args.plant, n_ev)
        return 0
    over: dict[str, Any] = {}
    if args.state_settle_s is not None:
        over["state_settle_s"] = args.state_settle_s
    if args.suppression is not None:
        over["suppression"] = args.suppression
    if args.flood_keeps is not None:
        over["flood_keeps"] = args.flood_keeps
    if args.reactivation is not None:
        over["reactivation"] = args.reactivation
    if args.reactivate_window_s is not None:
        over["reactivate_window_s"] = args.reactivate_window_s
    settings = AlarmSettings(**over)
    t0 = time.monotonic()
    plant = args.plant.resolve()
    where = plant.relative_to(ROOT) if plant.is_relative_to(ROOT) else plant
    print(f"alarm layer on simulator ground truth, plant {where} (machine fraction {args.machine_fraction}); "
          f"learn {args.train_days} d, score {args.clean_days} d fault-free + {args.fault_days} d at {args.rate} "
          f"faults per signal-hour, 1 Hz; AlarmSettings {settings.model_dump(exclude_defaults=True) or 'defaults'}")
    for seed in args.seeds:
        print(f"\n== seed {seed}")
        rec = args.recordings / (f"v2-{plant.stem}-{plant.parent.name}-s{seed}-f{args.machine_fraction:g}-"
                                 f"{args.train_days:g}-{args.clean_days:g}-{args.fault_days:g}-r{args.rate:g}.npz")
        if not rec.exists():
            simulate(plant, seed, args.train_days, args.clean_days, args.fault_days, args.rate, args.machine_fraction,
                     rec, live=not args.no_live)
        else:
            print(f"  (replaying {rec})")
        report(replay(plant, rec, settings, args.ignore, args.keep_faults, args.grace), args.grace)
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
