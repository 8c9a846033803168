"""The edge analytics against the simulator's ground truth: injected faults (recall, false alarms, delay), wear (RUL).

Values come straight from the simulator's own generator, ``simulators.signals.SignalModel.step`` -- the
code both the Modbus slaves and the OPC-UA servers serve from, deterministic in (plant, seed, tick) --
computed 60 ticks at a time by ``simulators.bulk.BlockGenerator`` (the same values bit for bit,
``tests/test_sim_bulk.py``) in two helper threads ahead of the detector stack (``ticks``), so that the
whole 15,000-signal demo plant fits (per simulated second of it, 2026-12-03: the generator ~3.6 ms of
CPU in its threads, ``SignalModel.step`` ~18 ms; the stack ~3 ms) --
with the anomaly schedule (``simulators.faults.EventSchedule``) and the physics (shifts, duty cycles,
wear) of ``plantwire sim``; the ground truth is the same schedule the simulator writes to ``--labels``.
Modbus rows are quantised as their registers would carry them (integers rounded at their scale,
float32 rounded to float32), as the edge would read them. No servers are started: the transport
path has its own tests and benchmarks, and this way a simulated day runs in well under a minute.

**Faults, history protocol.** Any plant file (``--plant``, default ``configs/dev``; ``--machine-fraction``
keeps that fraction of every machine group, for plants too large to simulate for days here) at one
sample per signal per simulated second from Monday 00:00 UTC: the stack first learns ``--train-days``
fault-free (not scored), then ``--clean-days`` fault-free and ``--fault-days`` with random anomalies at
``--rate`` per signal per hour are scored, for each of ``--seeds`` -- crossing the 22:00 shift end and the
06:00 start, where whole machines change load (a plant's real source of false alarms). Edge default
``AnalyticsSettings`` (no tuning to this data). False alarms are broken down by kind, hour of day and signal
name; drifts by whether they were found while the faulty value was still inside [low, high]. Wear is off
in this part (judged below). ``--cold-start HZ ...`` also counts alarm openings per minute after a cold start
and after a restart from the checkpoint, fault-free, at those rates. Matching:

- an injected event is *detected* when an alarm opens (signal scope on the event's signal -- for a
  micro-leak, on any of the leak signals it moves -- or machine scope on its machine) with its first
  sample in [start, end + ``--grace``]; delay = that first sample - start;
- a *false alarm* is an alarm opening that matches no event that way (a signal alarm must match an
  event on its own signal; a machine alarm any event on one of the machine's signals); rate per
  1,000 signal-hours over every signal the stack scores.

**Wear / RUL.** Every wearing machine of a template (compressors, presses) wears from t=0 to a
failure drawn uniformly in 2-20 days (``simulators.physics.WearPlan``). A duty tick is every
``--rul-period`` simulated seconds (the edge's ``health.period_s``), the latest value of each chosen
signal is the model's input, as ``EdgeAnalytics.tick`` feeds it. Per template, a model is fitted
offline with ``tools/fit_rul.py``'s ``fit`` on the lives of ``--train-seeds`` (a plant's own
run-to-failure history) and evaluated through the edge kernel (``RulEstimator.run_rows``) on the lives
of ``--test-seeds``, machines it never saw. Reported in hours: RMSE and MAE over the ticks whose true
RUL is within the cap (the model cannot see further than its cap, as in C-MAPSS), the error at the
ticks closest to 24 h before failure, and the coverage of the 10-90 % band.

**Speed.** The whole 15,000-signal demo plant: ``--partitions 4`` runs the detector stack as four processes,
each over a group of whole devices and generating only its own columns (the figures are those of one stack:
every stage works per signal, machine or device; checked on the dev plant), and ``--progress`` prints wall
and CPU time every 6 simulated hours.

    python bench/sim_eval.py [--plant FILE] [--seeds 1 2] [--train-days 1] [--clean-days 1] [--fault-days 1]
                             [--rate 0.01] [--machine-fraction 1] [--cold-start 1 10] [--no-rul] [--no-faults]
                             [--partitions 4] [--progress] [--templates leak_test,welding_cell]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.detectors.analytics import EdgeAnalytics  # noqa: E402
from edge.detectors.events import EVENT_DTYPE, Phase, Scope  # noqa: E402
from edge.detectors.settings import AnalyticsSettings  # noqa: E402
from edge.detectors.stack import DetectorStack  # noqa: E402
from edge.kernels import atrest, robust, signal_stack  # noqa: E402
from edge.kernels.kinds import Kind  # noqa: E402
from edge.pdm.rul import RulEstimator  # noqa: E402
from plantwire.configfile import load_plant  # noqa: E402
from plantwire.plant import PlantConfig, Protocol, RegisterType, SignalTable  # noqa: E402
from simulators.bulk import BlockGenerator  # noqa: E402
from simulators.faults import KIND_ORDER, EventKind, Events, EventSchedule  # noqa: E402
from simulators.runtime import SimOptions, World, build_world  # noqa: E402
from simulators.signals import SignalModel  # noqa: E402
from tools.fit_rul import FitSettings, fit  # noqa: E402

PLANT = ROOT / "configs" / "dev" / "plant.yaml"
GEN_WORKERS = 2  # threads generating blocks ahead of the detector stack
BLOCK_TICKS = 60  # ticks the simulator generates at once (simulators.bulk); any size gives the same values
EPOCH_NS = int(np.datetime64("2026-01-05T00:00:00", "ns").astype(np.int64))  # a Monday, 00:00 UTC
# Abrupt kinds, for the median-delay goal (a drift or a stuck value is found by how long it lasts).
ABRUPT = (EventKind.SPIKE, EventKind.STEP, EventKind.NOISE_BURST, EventKind.DROPOUT, EventKind.OSCILLATION,
          EventKind.CALIBRATION_OFFSET)
LEAK_SIGNALS = ("decay_rate", "leak_rate", "helium_concentration")
# Inputs of the RUL model per wearing template: operating setting (load) first, then the signals wear
# moves in the simulator's physics (heated windings/bearings/motor, vibration bands) and their context.
RUL_INPUTS: dict[str, tuple[list[str], list[str]]] = {
    "compressor": (["motor_power"], ["winding_temp_1", "winding_temp_2", "winding_temp_3", "bearing_temp_1",
                                     "bearing_temp_2", "vibration_rms_1", "vibration_rms_2", "vibration_rms_3",
                                     "vibration_rms_4", "oil_temp", "motor_current", "ambient_temp"]),
    "press": (["tonnage"], ["motor_temp", "vibration_rms_1", "vibration_rms_2", "vibration_rms_3", "oil_temp",
                            "motor_current"]),
}


def quantiser(table: SignalTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows rounded to integers at their scale, their scale, their offset, float32 rows) of Modbus signals."""
    is_modbus = np.array([d.protocol is Protocol.MODBUS for d in table.devices], dtype=bool)[table.device]
    types = list(RegisterType)
    ints = {types.index(t) for t in (RegisterType.INT16, RegisterType.UINT16, RegisterType.INT32,
                                     RegisterType.UINT32, RegisterType.INT64, RegisterType.BOOL, RegisterType.BIT)}
    is_int = np.isin(table.reg_type, list(ints)) & is_modbus
    is_f32 = (table.reg_type == types.index(RegisterType.FLOAT32)) & is_modbus
    rows = np.flatnonzero(is_int)
    return rows, table.scale[rows], table.value_offset[rows], np.flatnonzero(is_f32)


def quantise(v: np.ndarray, q: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Round ``v`` (one tick, or a block of ticks as rows) as the Modbus registers carry it, in place."""
    rows, scale, offset, f32 = q
    v[..., rows] = np.round((v[..., rows] - offset) / scale) * scale + offset
    v[..., f32] = v[..., f32].astype(np.float32)


def ticks(model: SignalModel, q: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], k_from: int, k_to: int,
          period_s: float = 1.0, split_at: int | None = None,
          schedule: Callable[[int], EventSchedule | None] | None = None, block_ticks: int = BLOCK_TICKS,
          workers: int = GEN_WORKERS, columns: np.ndarray | None = None
          ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(tick, quantised values, quality) for ticks ``k_from`` .. ``k_to - 1`` at simulated time ``k * period_s``.

    The simulator's values come a block at a time (``simulators.bulk``: the same values ``SignalModel.step``
    gives, without its per-tick Python), the next ``workers`` blocks computed in helper threads while the
    caller consumes this one (numpy and the numba kernels release the GIL, so generator and detector stack
    overlap on two cores; on a box shared with others, each runnable thread gets its share). A block never
    straddles ``split_at``; ``schedule(k)``, called with each block's first
    tick, gives its anomaly schedule (default: the model's). A NaN register reads as a bad sample (2), as the
    sources mark it. ``columns``: only these of the model's rows (``q`` then quantises those columns). The
    arrays are views of buffers reused ``workers`` blocks later.
    """
    lock = threading.Lock()
    gens = [BlockGenerator(model, block_ticks, lock, columns) for _ in range(workers + 1)]
    quals = [np.empty((block_ticks, gens[0].columns.size), dtype=np.uint8) for _ in gens]
    spans: list[tuple[int, int]] = []
    k = k_from
    while k < k_to:
        end = min(k + block_ticks, k_to)
        if split_at is not None and k < split_at < end:
            end = split_at
        spans.append((k, end))
        k = end

    def make(i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = spans[i]
        ks = np.arange(a, b, dtype=np.int64)
        g = i % len(gens)
        vb = gens[g].block(ks, ks * period_s, schedule(a) if schedule is not None else model.schedule)
        quantise(vb, q)
        qb = quals[g][: b - a]
        np.isfinite(vb, out=qb.view(bool))
        np.subtract(1, qb, out=qb)
        np.multiply(qb, 2, out=qb)
        return vb, qb

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simgen") as pool:
        pending = deque(pool.submit(make, i) for i in range(min(workers, len(spans))))
        for i, (a, b) in enumerate(spans):
            vb, qb = pending.popleft().result()
            if i + workers < len(spans):  # its buffers are the ones block i - 1 used, which the caller is done with
                pending.append(pool.submit(make, i + workers))
            for j in range(b - a):
                yield a + j, vb[j], qb[j]


# -- partitions: the whole plant as several gateways -----------------------------------------------


def partitions(table: SignalTable, parts: int) -> list[np.ndarray]:
    """Rows of ``parts`` groups of whole devices (PLCs, servers) with about equal signal counts.

    Every stage of the detector stack works per signal, per machine (whose signals all sit on one device)
    or per device, so a stack per group raises the events one stack over the plant raises -- as a plant split
    over several gateways by PLC would. (Exception: a frame with more than ``max_events`` events drops the
    rest, per stack; counted and printed.)
    """
    counts = np.bincount(table.device, minlength=len(table.devices))
    load = np.zeros(parts)
    group = np.empty(counts.size, dtype=np.int64)
    for d in np.argsort(-counts, kind="stable").tolist():
        g = int(np.argmin(load))
        group[d] = g
        load[g] += counts[d]
    of_row = group[table.device]
    return [rows for g in range(parts) if (rows := np.flatnonzero(of_row == g)).size]


def sub_table(table: SignalTable, rows: np.ndarray) -> tuple[SignalTable, np.ndarray, np.ndarray]:
    """(the plant's ``rows`` as a table of their own, its machines' and devices' indices in ``table``)."""
    machines, m_inv = np.unique(table.machine[rows], return_inverse=True)
    devices, d_inv = np.unique(table.device[rows], return_inverse=True)
    n = len(table)
    update: dict[str, object] = {}
    for f in dataclasses.fields(table):
        x = getattr(table, f.name)
        if isinstance(x, np.ndarray) and x.shape[:1] == (n,):
            update[f.name] = x[rows]
        elif isinstance(x, list) and f.name not in ("machine_ids", "devices") and len(x) == n:
            update[f.name] = [x[r] for r in rows.tolist()]
    update["machine"] = m_inv.astype(table.machine.dtype)
    update["device"] = d_inv.astype(table.device.dtype)
    update["machine_ids"] = [table.machine_ids[m] for m in machines.tolist()]
    update["devices"] = [table.devices[d] for d in devices.tolist()]
    return dataclasses.replace(table, **update), machines, devices


@dataclass(frozen=True)
class _PartJob:
    plant: Path
    seed: int
    rate: float
    machine_fraction: float
    settings: AnalyticsSettings
    rows: np.ndarray
    t_score: int
    t_fault: int
    n_ticks: int
    progress: bool
    name: str
    templates: tuple[str, ...] = ()


def _part_run(job: _PartJob) -> tuple[np.ndarray, int, float]:
    """One partition's stack over the whole run (a child process): (OPEN events in the plant's indices from
    ``t_score`` on, events dropped, CPU seconds)."""
    c0 = time.process_time()
    t0 = time.monotonic()
    plant = subsample(keep_templates(load_plant(job.plant), job.templates), job.machine_fraction)
    world = build_world(SimOptions(plant=job.plant, seed=job.seed, anomaly_rate_per_h=job.rate, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    clean = build_world(SimOptions(plant=job.plant, seed=job.seed, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    model = world.model(np.arange(len(table)), job.seed)
    sub, machines, devices = sub_table(table, job.rows)
    an = EdgeAnalytics.from_table(sub, job.settings)
    n = len(sub)
    sig = np.arange(n, dtype=np.uint32)
    ts = np.empty(n, dtype=np.int64)
    opened: list[np.ndarray] = []
    dropped = 0
    for k, v, qual in ticks(model, quantiser(sub), 0, job.n_ticks, split_at=job.t_fault, workers=1,
                            columns=job.rows,
                            schedule=lambda k: world.schedule if k >= job.t_fault else clean.schedule):
        ts.fill(EPOCH_NS + k * 1_000_000_000)
        r = an.process(ts, sig, v, qual)
        dropped += r.events_dropped
        if r.events.shape[0] and k >= job.t_score:
            ev = r.events[r.events["phase"] == Phase.OPEN]
            if ev.shape[0]:
                opened.append(ev.copy())
        if job.progress and k % 21600 == 0 and k:
            print(f"  [{job.name}] {k / 86400:.2f} simulated days, {time.monotonic() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s CPU", flush=True)
    ev = np.concatenate(opened) if opened else np.empty(0, dtype=EVENT_DTYPE)
    ent = ev["entity"].astype(np.int64)
    scope = ev["scope"]
    ev["entity"] = np.where(scope == Scope.SIGNAL, job.rows[ent],
                            np.where(scope == Scope.MACHINE, machines[np.minimum(ent, machines.size - 1)],
                                     devices[np.minimum(ent, devices.size - 1)]))
    top = ev["top"]
    ev["top"] = np.where(top >= 0, job.rows[np.maximum(top, 0)], -1)
    return ev, dropped, time.process_time() - c0



# -- faults ------------------------------------------------------------------------------------------


@dataclass
class FaultFigures:
    events: int
    detected: np.ndarray  # bool per event
    delay_s: np.ndarray  # per event (NaN if missed)
    kinds: np.ndarray  # KIND_ORDER index per event
    in_range: np.ndarray  # bool per event: detected while the faulty value was still inside [low, high]
    false_signal: int
    false_machine: int
    false_by_kind: dict[str, int]
    false_by_hour: np.ndarray  # false alarm openings per hour of day (UTC)
    false_by_name: dict[str, int]  # per signal name within its machine (top offenders)
    clean_false: int  # false alarm openings on the fault-free scored days
    clean_signal_hours: float
    signal_hours: float  # all scored signal-hours (clean and fault days)
    n_signals: int
    seconds: float
    on_off_machine: np.ndarray | None = None  # bool per event: its machine was switched off (level <= 0.05) at start
    cpu_s: float = float("nan")  # CPU time of the run (generator, stack and bookkeeping), this process
    carried: int = 0  # alarm openings on faults in progress when the faulty schedule took over: not false, not scored
    # bool per event: its machine was powered but not producing at start (a test station without parts, a press idling,
    # ``Physics.idle``): the detectors' IDLE state judges it at rest, so it is reported apart from the running ones
    on_idle_machine: np.ndarray | None = None
    in_ramp: np.ndarray | None = None  # bool per event: a drift found before its ramp ended (its end is a step back)


def subsample(plant: PlantConfig, fraction: float) -> PlantConfig:
    """Every machine group keeps ``max(1, round(count * fraction))`` machines (same templates, same devices)."""
    if fraction >= 1.0:
        return plant
    groups = [g.model_copy(update={"count": max(1, round(g.count * fraction))}) for g in plant.machines]
    return plant.model_copy(update={"machines": groups})


def keep_templates(plant: PlantConfig, templates: tuple[str, ...] | list[str]) -> PlantConfig:
    """Only the machine groups of these templates (all when empty): a quick diagnosis of one kind of machine.

    The simulator draws phases, night modes and the anomaly schedule per machine and signal index, so the
    kept machines are not the same draws as in the whole plant's run: the figures are the template's, not
    the whole run's restricted to it.
    """
    if not templates:
        return plant
    known = {g.template for g in plant.machines}
    unknown = sorted(set(templates) - known)
    if unknown:
        raise SystemExit(f"--templates: {', '.join(unknown)} not a template of this plant's machines "
                         f"(it has {', '.join(sorted(known))})")
    return plant.model_copy(update={"machines": [g for g in plant.machines if g.template in templates]})


def fault_run(plant_path: Path, seed: int, train_days: float, clean_days: float, fault_days: float, rate: float,
              grace_s: float, settings: AnalyticsSettings | None = None, machine_fraction: float = 1.0,
              dump: Path | None = None, progress: bool = False, parts: int = 1,
              missed: Path | None = None, templates: tuple[str, ...] = ()) -> FaultFigures:
    """History protocol: learn ``train_days`` fault-free, score ``clean_days`` fault-free, then ``fault_days``."""
    plant = subsample(keep_templates(load_plant(plant_path), templates), machine_fraction)
    world = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=rate, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    clean = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    n = len(table)
    model = world.model(np.arange(n), seed)
    an = EdgeAnalytics.from_table(table, settings)
    q = quantiser(table)
    sig = np.arange(n, dtype=np.uint32)
    ts = np.empty(n, dtype=np.int64)
    opened: list[np.ndarray] = []
    t_score = int(train_days * 86400)
    t_fault = t_score + int(clean_days * 86400)
    n_ticks = t_fault + int(fault_days * 86400)
    t0 = time.monotonic()
    c0 = time.process_time()
    dropped = 0
    if parts > 1:  # one stack per group of devices, each in a process of its own (``partitions``)
        jobs = [_PartJob(plant_path, seed, rate, machine_fraction, settings or AnalyticsSettings(), rows, t_score,
                         t_fault, n_ticks, progress, f"part {i + 1}/{parts}, {rows.size} signals", templates)
                for i, rows in enumerate(partitions(table, parts))]
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.map(_part_run, jobs, chunksize=1)
        opened = [r[0] for r in results]
        dropped = sum(r[1] for r in results)
        c0 -= sum(r[2] for r in results)  # the children's CPU counts as the run's
        n_ticks_own = 0
    else:
        n_ticks_own = n_ticks
    trace = _StateTrace(an.stack.m_state) if missed is not None and parts == 1 else None
    probe = _EventProbe(world.schedule.starting(float(t_fault), float(n_ticks)), grace_s) if trace is not None else None
    rest_probe = _RestProbe(an.stack, world.schedule.starting(float(t_fault), float(n_ticks))) \
        if trace is not None else None
    for k, v, qual in ticks(model, q, 0, n_ticks_own, split_at=t_fault,
                            schedule=lambda k: world.schedule if k >= t_fault else clean.schedule):
        ts.fill(EPOCH_NS + k * 1_000_000_000)
        r = an.process(ts, sig, v, qual)
        if trace is not None:
            trace.see(k, an.stack.m_state)
        if probe is not None and k >= t_fault:
            probe.see(k, r.score, r.kind, r.alarm_score)
        if rest_probe is not None:
            rest_probe.see(k)
        dropped += r.events_dropped
        if r.events.shape[0] and k >= t_score:
            ev = r.events[r.events["phase"] == Phase.OPEN]
            if ev.shape[0]:
                opened.append(ev.copy())
        if progress and k % 21600 == 0 and k:
            print(f"  ... {k / 86400:.2f} simulated days, {time.monotonic() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s CPU", flush=True)
    seconds = time.monotonic() - t0
    cpu_s = time.process_time() - c0
    if dropped:
        print(f"  ({dropped} events dropped by the stack: more than max_events in a frame)")
    alarms = np.concatenate(opened) if opened else np.empty(0, dtype=EVENT_DTYPE)
    alarms = alarms[np.argsort(alarms["ts_start"], kind="stable")]
    score_ns = EPOCH_NS + t_score * 1_000_000_000
    fault_ns = EPOCH_NS + t_fault * 1_000_000_000
    alarms = alarms[alarms["ts_start"] >= score_ns]

    truth = world.schedule.starting(float(t_fault), float(n_ticks))
    machine_of = table.machine.astype(np.int64)
    leak_rows: dict[int, np.ndarray] = {}
    for m in range(len(table.machine_ids)):
        prefix = table.machine_ids[m] + "."
        leak_rows[m] = np.array([i for i in np.flatnonzero(machine_of == m) if table.ids[i][len(prefix):]
                                 in LEAK_SIGNALS], dtype=np.int64)
    micro = KIND_ORDER.index(EventKind.MICRO_LEAK)
    drift = KIND_ORDER.index(EventKind.DRIFT)
    sig_alarm = alarms[alarms["scope"] == Scope.SIGNAL]
    mach_alarm = alarms[alarms["scope"] == Scope.MACHINE]
    sig_used = np.zeros(sig_alarm.shape[0], dtype=bool)
    mach_used = np.zeros(mach_alarm.shape[0], dtype=bool)
    n_ev = len(truth)
    detected = np.zeros(n_ev, dtype=bool)
    in_range = np.zeros(n_ev, dtype=bool)
    in_ramp = np.zeros(n_ev, dtype=bool)
    delay = np.full(n_ev, np.nan)
    span = table.high - table.low
    for i in range(n_ev):
        row = int(truth.signal[i])
        m = int(machine_of[row])
        lo = EPOCH_NS + int(truth.start_s[i] * 1e9)
        hi = EPOCH_NS + int((truth.end_s[i] + grace_s) * 1e9)
        rows = leak_rows[m] if truth.kind[i] == micro and leak_rows[m].size else np.array([row])
        in_win_s = (sig_alarm["ts_start"] >= lo) & (sig_alarm["ts_start"] <= hi) & np.isin(sig_alarm["entity"], rows)
        in_win_m = (mach_alarm["ts_start"] >= lo) & (mach_alarm["ts_start"] <= hi) & (mach_alarm["entity"] == m)
        sig_used |= in_win_s
        mach_used |= in_win_m
        first = np.concatenate([sig_alarm["ts_start"][in_win_s], mach_alarm["ts_start"][in_win_m]])
        if first.size:
            detected[i] = True
            delay[i] = (first.min() - lo) / 1e9
            if truth.kind[i] == drift:
                # a drift ramps linearly to its magnitude over its duration: where was it when found?
                frac = min(delay[i] / max(truth.end_s[i] - truth.start_s[i], 1e-9), 1.0)
                x = model.clean_at(np.array([truth.start_s[i] + delay[i]]), np.array([row]))[0] \
                    + frac * truth.magnitude[i]
                in_range[i] = not (np.isfinite(span[row]) and (x < table.low[row] or x > table.high[row]))
                in_ramp[i] = delay[i] < truth.end_s[i] - truth.start_s[i]
    # Faults that started during the fault-free part and are still in progress when the faulty schedule takes over
    # (at ``t_fault`` the simulator switches schedules, so such a fault appears from its middle): not in ``truth``
    # (it lists faults starting in the scored window), but their alarms are not false either. Counted apart.
    carried = world.schedule.active(float(t_fault))
    carried = carried.select(carried.start_s < float(t_fault))
    carried_sig = sig_used.copy()
    carried_mach = mach_used.copy()
    for i in range(len(carried)):
        row = int(carried.signal[i])
        m = int(machine_of[row])
        lo = fault_ns
        hi = EPOCH_NS + int((carried.end_s[i] + grace_s) * 1e9)
        rows = leak_rows[m] if carried.kind[i] == micro and leak_rows[m].size else np.array([row])
        win = (sig_alarm["ts_start"] >= lo) & (sig_alarm["ts_start"] <= hi)
        carried_sig |= win & np.isin(sig_alarm["entity"], rows)
        carried_mach |= (mach_alarm["ts_start"] >= lo) & (mach_alarm["ts_start"] <= hi) & (mach_alarm["entity"] == m)
    n_carried = int((carried_sig & ~sig_used).sum() + (carried_mach & ~mach_used).sum())
    sig_used, mach_used = carried_sig, carried_mach
    false_sig = sig_alarm[~sig_used]
    if dump is not None:  # every false alarm opening, for diagnosis: time, signal, kind, machine's night mode
        night = world.physics.night if world.physics is not None else np.full(len(table.machine_ids), np.nan)
        with open(dump, "w") as fh:
            fh.write("t_s,signal,kind,night_level\n")
            for ts0, ent, kd in zip(false_sig["ts_start"].tolist(), false_sig["entity"].tolist(),
                                    false_sig["kind"].tolist(), strict=True):
                fh.write(f"{(ts0 - EPOCH_NS) / 1e9:.0f},{table.ids[ent]},{Kind(kd).name},"
                         f"{night[int(machine_of[ent])]:g}\n")
    by_kind: dict[str, int] = {}
    for k in np.unique(false_sig["kind"]).tolist():
        by_kind[Kind(k).name.lower()] = int((false_sig["kind"] == k).sum())
    if (~mach_used).any():
        by_kind["machine"] = int((~mach_used).sum())
    false_ts = np.concatenate([false_sig["ts_start"], mach_alarm["ts_start"][~mach_used]])
    by_hour = np.bincount(((false_ts - EPOCH_NS) // 3_600_000_000_000 % 24).astype(np.int64), minlength=24)
    names: dict[str, int] = {}
    for e in false_sig["entity"].tolist():
        sid = table.ids[e]
        name = sid[len(table.machine_ids[int(machine_of[e])]) + 1:]
        names[name] = names.get(name, 0) + 1
    top = dict(sorted(names.items(), key=lambda kv: -kv[1])[:8])
    clean_false = int((false_ts < fault_ns).sum())
    off = np.zeros(n_ev, dtype=bool)
    idle = np.zeros(n_ev, dtype=bool)
    if world.physics is not None and n_ev:
        ms = machine_of[truth.signal.astype(np.int64)]
        off = world.physics.level(truth.start_s.astype(np.float64), ms) <= 0.05
        idle = world.physics.idle(truth.start_s.astype(np.float64), ms)
    if probe is not None and missed is not None:
        np.save(missed.with_suffix(".held.npy"), probe.held_rows())
    if missed is not None:  # every injected event with its outcome, for diagnosis (which faults go unseen, where)
        visible = observable(world, seed, q, world.schedule, clean.schedule, truth, ~detected)
        with open(missed, "w") as fh:
            fh.write("start_s,end_s,signal,kind,magnitude,machine_off,detected,delay_s,clean_at_start,low,high,"
                     "det_state,det_since_s,visible,max_score,max_kind,max_alarm_score," + _RestProbe.HEADER + "\n")
            for i in range(n_ev):
                row = int(truth.signal[i])
                c0 = model.clean_at(np.array([float(truth.start_s[i])]), np.array([row]))[0]
                st_name, since = trace.at(int(machine_of[row]), float(truth.start_s[i])) if trace else ("?", "")
                fh.write(f"{truth.start_s[i]:.0f},{truth.end_s[i]:.0f},{table.ids[row]},"
                         f"{KIND_ORDER[int(truth.kind[i])].value},{truth.magnitude[i]:.6g},{int(off[i])},"
                         f"{int(detected[i])},{delay[i]:.1f},{c0:.6g},{table.low[row]:g},{table.high[row]:g},"
                         f"{st_name},{since},{int(visible[i])},{probe.raw[i] if probe else np.nan:.4f},"
                         f"{Kind(int(probe.kind[i])).name if probe else ''},"
                         f"{probe.gated[i] if probe else np.nan:.4f},{rest_probe.row(i) if rest_probe else ''}\n")
    return FaultFigures(n_ev, detected, delay, truth.kind.astype(np.int64), in_range, int((~sig_used).sum()),
                        int((~mach_used).sum()), by_kind, by_hour, top, clean_false, n * clean_days * 24.0,
                        n * (clean_days + fault_days) * 24.0, n, seconds, off, cpu_s, n_carried, idle, in_ramp)


class _EventProbe:
    """Per injected event (``--missed``): the largest stack score its signal reached in [start, end + grace], the
    kind that gave it, and the largest score the alarm saw after the settle and hold gates -- which stage came
    closest to a missed fault, and whether a hold (a start's grace, an operating change) kept it from alarming."""

    def __init__(self, truth: Events, grace_s: float) -> None:
        self.sig = truth.signal.astype(np.int64)
        self.lo = truth.start_s
        self.hi = truth.end_s + grace_s
        self.raw = np.zeros(len(truth))
        self.kind = np.zeros(len(truth), dtype=np.int64)
        self.gated = np.zeros(len(truth))
        self._next = 0
        self._active = np.empty(0, dtype=np.int64)
        self.held: list[np.ndarray] = []

    def see(self, k: int, score: np.ndarray, kind: np.ndarray, gated: np.ndarray) -> None:
        """Tick ``k``'s frame (one sample per signal, in signal order)."""
        j = self._next
        while j < self.lo.size and self.lo[j] <= k:
            j += 1
        if j > self._next:
            self._active = np.concatenate([self._active, np.arange(self._next, j)])
            self._next = j
        a = self._active[self.hi[self._active] >= k]
        self._active = a
        if a.size:
            rows = self.sig[a]
            s = score[rows]
            up = s > self.raw[a]
            self.raw[a[up]] = s[up]
            self.kind[a[up]] = kind[rows[up]]
            self.gated[a] = np.maximum(self.gated[a], gated[rows])
        # held samples: a process stage scored >= HELD_AT and a gate (a start's grace, an operating change) zeroed
        # it -- with the events' windows, what an exception to the hold for extreme scores would find and cost
        held = np.flatnonzero((score >= self.HELD_AT) & (gated < 0.5) & np.isin(kind, self.PROCESS))
        if held.size:
            self.held.append(np.stack([np.full(held.size, k, np.float64), held.astype(np.float64), score[held],
                                       kind[held].astype(np.float64)], axis=1))

    HELD_AT = 0.5
    PROCESS = np.array([int(Kind.LEVEL), int(Kind.CHANGE), int(Kind.RATE)])

    def held_rows(self) -> np.ndarray:
        """(tick, signal row, score, kind) of every held process sample seen."""
        return np.concatenate(self.held) if self.held else np.zeros((0, 4))


_STATE_NAMES = ("unknown", "off", "idle", "running")  # opstate's values


class _RestProbe:
    """The at-rest stage's view of each injected event's signal at the event's first and last tick (``--missed``).

    Why: a fault on a switched-off machine is missed for different reasons -- its signal is not judged at rest at
    all, the machine's stop grace (``hold_until``) still holds it, the band has not learned enough (``warm_s``), or
    the fault is small against the band; the probe records which, per event, so the misses can be broken down.
    """

    HEADER = ("rest_judged,rest_after_hold_s,rest_learned_s,rest_band,rest_loc,rest_loc_end,rest_band_end,"
              "rest_after_hold_end_s")

    def __init__(self, stack: DetectorStack, truth: Events) -> None:
        self._stack = stack
        self._rows = truth.signal.astype(np.int64)
        starts = np.floor(truth.start_s).astype(np.int64)
        ends = np.maximum(np.ceil(truth.end_s).astype(np.int64) - 1, starts)
        self._at: dict[int, list[tuple[int, bool]]] = {}
        for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            self._at.setdefault(a, []).append((i, True))
            self._at.setdefault(b, []).append((i, False))
        n = len(self._rows)
        self._start = np.full((n, 4), np.nan)  # after hold (s), learned (s), band half-width, rest value
        self._end = np.full((n, 3), np.nan)  # rest value, band half-width, after hold (s)

    def see(self, k: int) -> None:
        """Record the events that start or end at tick ``k`` (called after the tick's frame was processed)."""
        todo = self._at.get(k)
        if not todo:
            return
        stk = self._stack
        for i, first in todo:
            row = int(self._rows[i])
            m = int(stk.rest_machine_of[row])
            if m < 0:
                continue
            st = stk.rest_state[row]
            p = stk.rest_params
            floor = atrest._floor(stk.rest_state, row, stk.rest_floor, p, stk.state, signal_stack.B_LEVEL + robust.LOC)
            core = p[atrest.P_MULT] * st[atrest.MAD]
            t_ns = EPOCH_NS + k * 1_000_000_000
            if p[atrest.P_PEAK_MULT] > 0.0 and st[atrest.LEARNED_S] >= p[atrest.P_PEAK_WARM_S] and \
                    t_ns - max(int(stk.hold_until[m]), int(stk.m_since[m])) >= p[atrest.P_PEAK_WARM_S] * 1e9:
                core = min(core, p[atrest.P_PEAK_MULT] * st[atrest.PEAK])  # the peak cap, as the kernel applies it
            band = core + floor
            after = (EPOCH_NS + k * 1_000_000_000 - int(stk.hold_until[m])) / 1e9
            if first:
                self._start[i] = (after, st[atrest.LEARNED_S], band, st[atrest.LOC])
            else:
                self._end[i] = (st[atrest.LOC], band, after)

    def row(self, i: int) -> str:
        judged = int(self._stack.rest_machine_of[int(self._rows[i])] >= 0)
        vals = [*self._start[i].tolist(), *self._end[i].tolist()]
        return f"{judged}," + ",".join(f"{v:.6g}" for v in vals)


class _StateTrace:
    """The detector's operating state per machine over a run (``--missed``): when each machine's state changed."""

    def __init__(self, m_state: np.ndarray) -> None:
        self._prev = m_state.copy()
        self._changes: list[tuple[int, int, int]] = []  # (tick, machine, new state)

    def see(self, k: int, m_state: np.ndarray) -> None:
        moved = np.flatnonzero(m_state != self._prev)
        for m in moved.tolist():
            self._changes.append((k, m, int(m_state[m])))
        self._prev[moved] = m_state[moved]

    def at(self, m: int, t_s: float) -> tuple[str, str]:
        """(state name, seconds since its last change) of machine ``m`` at ``t_s``."""
        state, since = 0, None
        for k, mm, st in self._changes:
            if k > t_s:
                break
            if mm == m:
                state, since = st, k
        name = _STATE_NAMES[state] if 0 <= state < len(_STATE_NAMES) else str(state)
        return name, "" if since is None else f"{t_s - since:.0f}"


def observable(world: World, seed: int, q: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
               faulty: EventSchedule, clean: EventSchedule, truth: Events, which: np.ndarray,
               before_s: float = 1800.0) -> np.ndarray:
    """Per event: does the injected fault leave its signal's values outside what the signal shows without it?

    The simulator runs the event's signal alone (a model of that one row: its own noise draw, cheap on a large
    plant) twice over [start - ``before_s``, end], with and without the faults, with the same noise (it is seeded
    per tick), clipped and quantised as the registers carry it. An event is observable
    if a faulty sample inside its window is NaN (a dropout) or lies outside [min, max] of the fault-free values over
    the whole span, or if it is a stuck value where the fault-free signal is not constant over the window (its
    texture changes: a flat-line judgement can see it); otherwise (a negative step on a current clipped at 0, a
    value stuck at the rest value a stopped machine reads anyway) no judgement of that signal alone can see it.
    Only the events in ``which`` are run (~1 s each: a random generator per tick); the others count as observable
    (the caller passes the missed ones: a detected fault was observable).
    """
    out = np.ones(len(truth), dtype=bool)
    step = 600
    stuck = KIND_ORDER.index(EventKind.STUCK)
    for i in np.flatnonzero(which).tolist():
        row = int(truth.signal[i])
        gen = BlockGenerator(world.model(np.array([row]), seed), step)
        lq = _local_quantiser(q, np.array([row]))
        k0 = max(int(np.floor(truth.start_s[i] - before_s)), 0)
        k1 = int(np.ceil(truth.end_s[i])) + 1
        f_parts, c_parts = [], []
        for a in range(k0, k1, step):
            ks = np.arange(a, min(a + step, k1), dtype=np.int64)
            for sched, parts in ((faulty, f_parts), (clean, c_parts)):
                vb = gen.block(ks, ks.astype(np.float64), sched).copy()
                quantise(vb, lq)
                parts.append(vb[:, 0])
        fv, cv = np.concatenate(f_parts), np.concatenate(c_parts)
        tk = np.arange(k0, k0 + fv.size)
        inside = (tk >= truth.start_s[i]) & (tk < truth.end_s[i])
        lo, hi = np.nanmin(cv), np.nanmax(cv)
        w = fv[inside]
        c = cv[inside]
        textured = int(truth.kind[i]) == stuck and c.size > 1 and np.nanmax(c) > np.nanmin(c)
        out[i] = bool(np.isnan(w).any() or (w < lo).any() or (w > hi).any() or textured)
    return out


def print_faults(f: FaultFigures) -> None:
    print(f"\nfaults: {f.events} injected events, {f.n_signals:,} signals, stack (generator included) "
          f"{f.seconds:.0f} s wall, {f.cpu_s:.0f} s CPU")
    print(f"{'kind':20} {'events':>6} {'recall':>7} {'median delay s':>15}")
    for k, kind in enumerate(KIND_ORDER):
        sel = f.kinds == k
        if not sel.any():
            continue
        d = f.delay_s[sel & f.detected]
        med = f"{np.median(d):15.1f}" if d.size else f"{'-':>15}"
        extra = ""
        if kind is EventKind.DRIFT:
            extra = f"  found inside the range: {int(f.in_range[sel].sum())} of {int(sel.sum())}"
            if f.in_ramp is not None:  # the simulator's drift drops back at its end: a find after that is a step's
                run = sel & ~f.on_off_machine if f.on_off_machine is not None else sel
                extra += (f"; before its ramp ended: {int(f.in_ramp[sel].sum())} "
                          f"(machine running: {int(f.in_ramp[run].sum())} of {int(run.sum())})")
        print(f"{kind.value:20} {int(sel.sum()):6d} {f.detected[sel].mean():7.2f} {med}{extra}")
    abrupt = np.isin(f.kinds, [KIND_ORDER.index(k) for k in ABRUPT])
    d = f.delay_s[f.detected & abrupt]
    print(f"{'all':20} {f.events:6d} {f.detected.mean():7.2f}")
    print(f"{'abrupt kinds':20} {int(abrupt.sum()):6d} {f.detected[abrupt].mean():7.2f} "
          f"{np.median(d) if d.size else float('nan'):15.1f}")
    if f.on_off_machine is not None and f.on_off_machine.any():
        o = f.on_off_machine
        print(f"{'machine running':20} {int((~o).sum()):6d} {f.detected[~o].mean():7.2f}   (events on machines "
              f"switched off at their start: {int(o.sum())}, recall {f.detected[o].mean():.2f})")
    if f.on_idle_machine is not None and f.on_idle_machine.any():
        i = f.on_idle_machine
        o = f.on_off_machine if f.on_off_machine is not None else np.zeros_like(i)
        p = ~i & ~o
        print(f"{'machine producing':20} {int(p.sum()):6d} {f.detected[p].mean():7.2f}   (of the running ones: "
              f"events on machines powered but idle at their start -- test stations without parts, production "
              f"machines idling off shift: "
              f"{int(i.sum())}, recall {f.detected[i].mean():.2f})")
    fa = f.false_signal + f.false_machine
    print(f"false alarms: {fa} ({f.false_signal} signal, {f.false_machine} machine) over {f.signal_hours:,.0f} "
          f"scored signal-hours = {1000 * fa / f.signal_hours:.2f} per 1,000 signal-hours "
          f"(fault-free days alone: {f.clean_false} = {1000 * f.clean_false / max(f.clean_signal_hours, 1):.2f})")
    print(f"  not counted: {f.carried} alarm openings on faults already in progress when the faulty schedule took "
          f"over (started in the fault-free part; with them {1000 * (fa + f.carried) / f.signal_hours:.2f})")
    print(f"  by kind {f.false_by_kind}")
    print(f"  by hour of day (UTC) {f.false_by_hour.tolist()}")
    print(f"  top signal names {f.false_by_name}")


# -- cold start ------------------------------------------------------------------------------------


def cold_start(plant_path: Path, seed: int, rate_hz: float, start_h: float, minutes: float,
               machine_fraction: float, state_dir: Path) -> None:
    """Alarm openings per minute after a cold start and after a restart from a checkpoint, fault-free.

    The gateway starts cold at ``start_h`` (day shift: machines cycling), runs ``settle_s`` plus ``minutes``,
    checkpoints, and a second gateway restored from that checkpoint runs ``minutes`` more after a 5-minute
    outage. Every opening here is a false alarm (no faults injected).
    """
    plant = subsample(load_plant(plant_path), machine_fraction)
    world = build_world(SimOptions(plant=plant_path, seed=seed, anomaly_rate_per_h=0.0, wear_fraction=0.0,
                                   epoch_ns=EPOCH_NS), plant)
    table = world.table
    n = len(table)
    model = world.model(np.arange(n), seed)
    q = quantiser(table)
    sig = np.arange(n, dtype=np.uint32)
    qual = np.zeros(n, dtype=np.uint8)
    ts = np.empty(n, dtype=np.int64)
    settings = AnalyticsSettings()
    period = 1.0 / rate_hz
    k0 = int(start_h * 3600 * rate_hz)

    def run(an: EdgeAnalytics, k_from: int, n_ticks: int) -> np.ndarray:
        opened = []
        for k in range(k_from, k_from + n_ticks):
            t = k * period
            v = model.step(k, t)
            quantise(v, q)
            qual[:] = 0
            qual[~np.isfinite(v)] = 2
            ts.fill(EPOCH_NS + round(t * 1e9))
            r = an.process(ts, sig, v, qual)
            ev = r.events[(r.events["phase"] == Phase.OPEN) & (r.events["scope"] == Scope.SIGNAL)]
            opened += [(int(e) - EPOCH_NS) / 1e9 for e in ev["ts_start"].tolist()]
        return np.array(opened)

    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "detectors.npz").unlink(missing_ok=True)
    an = EdgeAnalytics.from_table(table, settings, state_dir=state_dir)
    settle_ticks = int(max(settings.settle_s, settings.alarm_settle * period) * rate_hz)
    first = run(an, k0, settle_ticks + int(minutes * 60 * rate_hz))
    an.save()
    t_settled = k0 * period + settle_ticks * period
    per_min = np.histogram(first, bins=np.arange(t_settled - 120, t_settled + minutes * 60 + 1, 60))[0]
    before = int((first < t_settled - 120).sum())
    print(f"\ncold start, {n:,} signals at {rate_hz:g} Hz from {start_h:g} h UTC (fault-free), settle_s "
          f"{settings.settle_s:g} s, alarm_settle {settings.alarm_settle} samples: {before} alarms opened before "
          f"the last 2 minutes of settling; per minute from 2 minutes before settling: {per_min.tolist()}")
    again = EdgeAnalytics.from_table(table, settings, state_dir=state_dir)
    k1 = k0 + settle_ticks + int(minutes * 60 * rate_hz) + int(300 * rate_hz)  # a 5-minute outage
    second = run(again, k1, int(minutes * 60 * rate_hz))
    per_min2 = np.histogram(second, bins=np.arange(k1 * period, k1 * period + minutes * 60 + 1, 60))[0]
    print(f"restart from the checkpoint after a 5-minute outage ({'; '.join(again.cold_reasons) or 'warm'}): "
          f"alarms opened per minute {per_min2.tolist()}")


# -- wear / RUL --------------------------------------------------------------------------------------


def wear_lives(template: str, seeds: list[int], period_s: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run-to-failure histories of each seed's wearing ``template`` machines: (inputs per tick, true RUL ticks)."""
    ops, sensors = RUL_INPUTS[template]
    runs, ruls = [], []
    for seed in seeds:
        opts = SimOptions(plant=PLANT, seed=seed, wear_fraction=1.0, epoch_ns=EPOCH_NS)
        world = build_world(opts)
        table = world.table
        tmpl = [mg.template for mg in world.plant.machines for _ in range(mg.count)]
        w = world.physics.wear
        pick = [i for i in range(len(w.machine)) if tmpl[int(w.machine[i])] == template]
        if not pick:
            continue
        cols = []
        for i in pick:
            m = int(w.machine[i])
            prefix = table.machine_ids[m] + "."
            index = {sid[len(prefix):]: r for r, sid in enumerate(table.ids) if sid.startswith(prefix)}
            cols.append([index[name] for name in ops + sensors])
        rows = np.unique(np.concatenate(cols))
        model = world.model(rows, seed)
        pos = {int(r): j for j, r in enumerate(rows.tolist())}
        q = quantiser(table)
        q_local = _local_quantiser(q, rows)
        fail = np.array([float(w.failure_s[i]) for i in pick])
        n_ticks = int(fail.max() // period_s) + 1
        x = np.empty((n_ticks, rows.size))
        for k in range(n_ticks):
            v = model.step(k, k * period_s)
            quantise(v, q_local)
            x[k] = v
        for j in range(len(pick)):
            last = int(fail[j] // period_s)  # last tick before failure
            idx = [pos[r] for r in cols[j]]
            runs.append(np.ascontiguousarray(x[: last + 1][:, idx]))
            ruls.append((fail[j] - np.arange(last + 1) * period_s) / period_s)
    return runs, ruls


def _local_quantiser(q: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                     rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ints, scale, offset, f32 = q
    where = {int(r): j for j, r in enumerate(rows.tolist())}
    keep = np.array([int(r) in where for r in ints.tolist()], dtype=bool)
    local = np.array([where[int(r)] for r in ints[keep].tolist()], dtype=np.int64)
    f_local = np.array([where[int(r)] for r in f32.tolist() if int(r) in where], dtype=np.int64)
    return local, scale[keep], offset[keep], f_local


def rul_eval(template: str, train: list[int], test: list[int], period_s: float, cap_h: float) -> None:
    t0 = time.monotonic()
    ops, sensors = RUL_INPUTS[template]
    cap = cap_h * 3600.0 / period_s
    tr_runs, _ = wear_lives(template, train, period_s)
    te_runs, te_ruls = wear_lives(template, test, period_s)
    if not tr_runs or not te_runs:
        print(f"\nRUL {template}: no wearing machines in the chosen seeds")
        return
    model = fit(tr_runs, ops, sensors, FitSettings(conditions=3, cap=cap, age_scale=cap))
    est = RulEstimator(model, 1, np.arange(len(ops) + len(sensors), dtype=np.int64)[None, :])
    err, inside, at24 = [], [], []
    for x, rul in zip(te_runs, te_ruls, strict=True):
        est.reset()
        _, pred, lo, hi = est.run_rows(x)
        sel = rul <= cap
        err.append((pred - rul)[sel])
        inside.append(((rul >= lo) & (rul <= hi))[sel])
        k24 = int(np.argmin(np.abs(rul - 24 * 3600.0 / period_s)))
        at24.append(pred[k24] - rul[k24])
    e = np.concatenate(err) * period_s / 3600.0
    a24 = np.array(at24) * period_s / 3600.0
    lives = [r.shape[0] * period_s / 86400.0 for r in te_runs]
    print(f"\nRUL {template}: fitted on {len(tr_runs)} lives (seeds {train}), tested on {len(te_runs)} unseen lives "
          f"(seeds {test}, {min(lives):.1f}-{max(lives):.1f} days), tick {period_s:.0f} s, cap {cap_h:.0f} h, "
          f"{time.monotonic() - t0:.1f} s")
    print(f"  within the cap: RMSE {np.sqrt(np.mean(e ** 2)):.1f} h, MAE {np.mean(np.abs(e)):.1f} h, "
          f"bias {np.mean(e):+.1f} h over {e.size} ticks; 10-90 % band coverage "
          f"{np.concatenate(inside).mean():.2f}")
    print(f"  24 h before failure: median |error| {np.median(np.abs(a24)):.1f} h, worst {np.max(np.abs(a24)):.1f} h")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plant", type=Path, default=PLANT, help="any plant file")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--train-days", type=float, default=1.0, help="fault-free days the stack learns on, not scored")
    ap.add_argument("--clean-days", type=float, default=1.0, help="fault-free days scored (false alarms only)")
    ap.add_argument("--fault-days", type=float, default=1.0, help="days scored with faults injected")
    ap.add_argument("--rate", type=float, default=0.01, help="anomalies per signal per simulated hour on fault days")
    ap.add_argument("--machine-fraction", type=float, default=1.0,
                    help="keep this fraction of every machine group (a documented subsample of a large plant)")
    ap.add_argument("--grace", type=float, default=60.0, help="s after an event's end an alarm still matches it")
    ap.add_argument("--rul-period", type=float, default=1789.0, help="simulated s per health tick")
    ap.add_argument("--cap-h", type=float, default=120.0, help="RUL cap of the model, hours")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[100, 101, 102, 103])
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--cold-start", type=float, nargs="*", metavar="HZ",
                    help="also measure cold start and restart at these rates (e.g. 1 10)")
    ap.add_argument("--cold-minutes", type=float, default=10.0, help="minutes observed after settling/restart")
    ap.add_argument("--no-rul", action="store_true")
    ap.add_argument("--progress", action="store_true", help="print wall and CPU time every 6 simulated hours")
    ap.add_argument("--partitions", type=int, default=1,
                    help="run the detector stack as this many processes, each over a group of whole devices (as "
                         "several gateways would); the same alarms, for a large plant on several cores")
    ap.add_argument("--settings", type=json.loads, default={},
                    help='AnalyticsSettings overrides as JSON (e.g. \'{"operating_state": {"off": "freeze"}}\'); '
                         "the default is the shipped defaults")
    ap.add_argument("--templates", type=lambda s: tuple(t for t in s.split(",") if t), default=(),
                    help="keep only the machines of these templates (comma-separated, e.g. leak_test,welding_cell): "
                         "a quick diagnosis of one kind of machine")
    ap.add_argument("--dump", type=Path, help="write every false alarm opening to DUMP.seedN.csv (diagnosis)")
    ap.add_argument("--missed", type=Path, help="write every injected event with its outcome (detected, machine off) "
                                                "to MISSED.seedN.csv (diagnosis)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    plant = args.plant.resolve()
    where = plant.relative_to(ROOT) if plant.is_relative_to(ROOT) else plant
    custom = " with " + json.dumps(args.settings) if args.settings else ""
    only = f", templates {','.join(args.templates)}" if args.templates else ""
    print(f"simulator ground truth, plant {where} (machine fraction {args.machine_fraction}{only}), edge default "
          f"AnalyticsSettings{custom}; learn {args.train_days} d fault-free, score {args.clean_days} d fault-free + "
          f"{args.fault_days} d with {args.rate} faults per signal-hour, 1 Hz")
    if not args.no_faults:
        for seed in args.seeds:
            print(f"\n== seed {seed}")
            f = fault_run(plant, seed, args.train_days, args.clean_days, args.fault_days, args.rate, args.grace,
                          settings=AnalyticsSettings.model_validate(args.settings),
                          machine_fraction=args.machine_fraction,
                          dump=None if args.dump is None else args.dump.with_suffix(f".seed{seed}.csv"),
                          progress=args.progress, parts=args.partitions,
                          missed=None if args.missed is None else args.missed.with_suffix(f".seed{seed}.csv"),
                          templates=args.templates)
            print_faults(f)
    for hz in args.cold_start or []:
        cold_start(plant, args.seeds[0], hz, 8.0, args.cold_minutes, args.machine_fraction,
                   ROOT / "state" / "sim_eval_cold")
    if not args.no_rul:
        for template in RUL_INPUTS:
            rul_eval(template, args.train_seeds, args.test_seeds, args.rul_period, args.cap_h)
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
