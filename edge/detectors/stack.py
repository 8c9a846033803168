"""The detector stack the edge runs on every frame: per-signal scores, per-machine scores, alarm events.

``DetectorStack.process(signal, value, quality, ts_ns)`` takes one frame's columns (in arrival order)
and returns a ``StackResult``: a score in [0, 1] and a ``Kind`` per sample, one score per machine
that had a sample in the frame (with the member signal that deviates most), and the alarm events
the frame opened or closed. Every sample is judged by state that has not yet learned it.

Stages, all numba kernels over state arrays sized once from the signal count and config:
0. ``opstate.update_states`` -- each machine's operating state (unknown / off / running) from its running
   indicator (``settings.operating_state``); an off machine's signals are neither learned nor judged (``off:
   freeze``, the default; ``own_baseline``: the off state has a baseline of its own; data quality is always
   judged), and a start or stop holds its process alarms for ``grace_s``; then ``opstate.update_activity`` --
   a running machine whose cycle signals stand at rest (declared activity signal, or found in the data:
   ``operating_state.idle``) is IDLE, judged like OFF, and its next cycle is a start;
1. ``signal_stack.signal_chunk`` -- level, change, stuck, rate and range per signal (fused, one pass);
1b. ``atrest.rest_chunk`` (``operating_state.at_rest``, with ``off: freeze``) -- an off machine's process signals,
   after its stop grace, against the band a machine at rest stays in (kind AT_REST; a separate pass that only
   touches off machines' signals, skipped while no machine is off or idle: ``opstate.count_resting``);
2. ``machine.MachineStage`` -- per machine a fitted PCA baseline per operating mode (``edge.kernels.pca``),
   ticked at most every ``machine.period_s`` on the latest good value of its members, naming the three
   signals that contributed most; without a model file it records its own first ``fit_after_s`` and fits
   one off the hot path (see ``edge/detectors/machine.py``);
3. optional (``settings.likelihood.mode``): ``likelihood.likelihood_chunk`` -- the anomaly likelihood of
   each signal's one-step prediction error given its own history, plus novelty (a value beyond the range
   seen so far), folded into the per-sample score (larger of the two, or replacing it);
4. ``opchange.machine_moves`` then ``alarms.settle_gate`` -- a signal's alarms wait until it has settled (samples
   and ``settle_s``), and process alarms are held while its machine changes operating point (every signal
   with a machine, independent of stage 2) and for ``restart_settle_s`` after a restart; data-quality kinds
   (BAD, SILENT: ``quality``) are never held;
5. ``devices`` -- per device (PLC, server) the time since its last good poll: one DEVICE alarm per device (scope
   DEVICE) after ``quality.device_s`` of bad samples (or ``silent_s`` of none), and while a device is down its
   signals' BAD and SILENT judgements are folded under it (one alarm for an unplugged PLC, not one per signal);
6. ``alarms.alarm_chunk`` three times -- signal scores (plus SILENT signals), machine scores and device scores
   into OPEN/CLOSE events (signal events, then machine events, then device events).
How they run (same results, fewer passes over the frame): stage 1 runs as ``signal_stack.signal_frame``, which also
records the device polls (5), the machine stage's latest values (2) and the operating-change counts (4) in its one
pass; the settle gate (4), the device fold (5) and the signal alarms (6) run as one pass,
``signal_alarms.gate_alarm_frame``. Why: at 15,000 signals every extra pass and kernel call cost ~2-3 ns a sample,
and the gate's read of a strided state column ~10 (bench/RESULTS.md, issue 15 item 6).

Result arrays are views into buffers owned by the stack (no per-sample allocation); they are valid
until the next ``process`` call -- copy what must outlive it. A frame longer than the buffers grows
them once. ``save``/``restore`` checkpoint all learned and alarm state (see ``checkpoint.py``). The likelihood stage's
state is saved always and restored apart: a checkpoint written before the stage existed (same layout
version otherwise) restores everything else warm and starts only that stage cold (``likelihood_cold``).
Not thread-safe: one owner (the edge's event loop, or the score CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.detectors import checkpoint
from edge.detectors.events import EVENT_DTYPE, EventColumns, Scope
from edge.detectors.machine import MachineStage
from edge.detectors.settings import (
    AlarmSettings,
    AnalyticsSettings,
    IdleSettings,
    IdleSource,
    LikelihoodMode,
    LikelihoodSettings,
    LikelihoodTails,
    OffJudgement,
)
from edge.kernels import (
    alarms,
    atrest,
    cusum,
    devices,
    likelihood,
    opchange,
    opstate,
    rate,
    rearm,
    robust,
    signal_alarms,
    signal_stack,
    stuck,
    trend,
)
from edge.kernels.kinds import EN_ALL, EN_CHANGE, EN_LEVEL, EN_MACHINE, EN_STATE, Kind, mask_for
from plantwire.plant import Protocol, RegisterType

if TYPE_CHECKING:
    from edge.models.machine import MachineModel
    from plantwire.plant import SignalTable

STATE_VERSION = 3  # 3: CUSUM keeps its residuals' autocorrelation
MACHINE_STATE_VERSION = 1  # the machine stage's own file beside the checkpoint (``<name>.machine.npz``)
_LEGACY_COMPONENTS = 3  # in the fingerprint since the subspace stage; kept so older checkpoints restore warm
NS_PER_S = 1_000_000_000
RUN_LEVEL_EVERY_S = 10.0  # data seconds between updates of the running level's slow extremes (``atrest.run_level``)
# Signal alarm kinds the re-arm window never holds back (``rearm``): range violations and data quality are facts.
REARM_EXEMPT = rearm.exempt_mask((Kind.RANGE, Kind.BAD, Kind.SILENT, Kind.DEVICE))
# A device scoring this much (down for 0.58 of device_s) folds its signals' BAD and SILENT judgements under it.
DEVICE_FOLD_AT = 0.25


@dataclass(frozen=True, slots=True)
class StackResult:
    """One frame's output; arrays are views valid until the next ``process`` call."""

    score: np.ndarray  # float64 per sample, [0, 1]
    kind: np.ndarray  # uint8 per sample, Kind of the largest component
    machine: np.ndarray  # int64 machine index per tick
    machine_score: np.ndarray  # float64 per tick, [0, 1]
    machine_top: np.ndarray  # int64 (ticks, 3) signals contributing most per tick (-1 if none)
    machine_ts_ns: int  # timestamp the ticks are stamped with (latest in the frame)
    events: np.ndarray  # EVENT_DTYPE, signal events then machine events
    events_dropped: int  # events beyond settings.max_events in this frame
    alarm_score: np.ndarray  # ``score`` with signals still settling (``alarm_settle``) at 0; ``score`` itself if none
    # int8 per machine, its operating state after this frame (``edge.kernels.opstate``): 0 unknown (no running
    # indicator, or none seen yet), 1 off, 2 idle (powered, not producing), 3 running. For the incident layer
    # (suppression by machine state) and the dashboard; signal-level judgement already uses it.
    machine_state: np.ndarray | None = None


def _machine_file(path: Path) -> Path:
    return Path(path).with_name(Path(path).stem + ".machine.npz")


def resolution_of(table: SignalTable) -> np.ndarray:
    """Per signal: the value step of its Modbus integer register (``|scale|``), 0 for continuous values."""
    if not table.devices:  # a table built without devices (tests, CSV scoring): nothing is known to be quantised
        return np.zeros(len(table))
    types = list(RegisterType)
    integer = [types.index(t) for t in (RegisterType.INT16, RegisterType.UINT16, RegisterType.INT32,
                                        RegisterType.UINT32, RegisterType.INT64)]
    modbus = np.array([d.protocol is Protocol.MODBUS for d in table.devices], dtype=bool)
    is_int = np.isin(table.reg_type, integer) & modbus[table.device]
    return np.where(is_int, np.abs(table.scale), 0.0)


def running_indicators(table: SignalTable, names: list[str],
                       loads: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per signal: (machine it indicates the state of, or -1; value at which the machine runs; value below which it
    is off). A machine's indicator is its first ``kind: state`` signal named (within the machine) in ``names``
    (runs at >= 0.5); a machine without one takes its first signal named in ``loads`` (name -> fraction ``f`` of
    its [low, high] span: runs at ``low + f * span``, off below ``low + f / 2 * span``; needs both limits)."""
    n = len(table)
    out = np.full(n, -1, dtype=np.int64)
    on_at, off_at = np.full(n, 0.5), np.full(n, 0.5)
    wanted = set(names)
    loads = loads or {}
    seen: set[int] = set()
    candidates: dict[int, int] = {}
    for r, (sid, kind, m) in enumerate(zip(table.ids, table.kinds, table.machine.tolist(), strict=True)):
        prefix = table.machine_ids[m] + "." if m >= 0 else ""
        if m < 0 or m in seen or not sid.startswith(prefix):
            continue
        name = sid[len(prefix):]
        if kind == "state" and name in wanted:
            out[r] = m
            seen.add(m)
        elif name in loads and m not in candidates and np.isfinite(table.high[r] - table.low[r]):
            candidates[m] = r
    for m, r in candidates.items():
        if m in seen:
            continue
        f = loads[table.ids[r][len(table.machine_ids[m]) + 1:]]
        span = float(table.high[r] - table.low[r])
        out[r] = m
        on_at[r] = float(table.low[r]) + f * span
        off_at[r] = float(table.low[r]) + f / 2 * span
    return out, on_at, off_at


def activity_signals(table: SignalTable, idle: IdleSettings, running_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per signal: (machine whose activity signal it is, or -1; ``opstate`` P_* parameters), for the IDLE state.

    Only machines with a running indicator (``running_of``) take part. Declared (``idle.signals``, matched on the
    name within the machine, any kind): the value meaning idle. Data rule (``IdleSource.DATA``, or ``BOTH`` for a
    machine without a declared signal): every process signal of the machine (not a state signal, not a counter)
    with both plausible limits, a move band of ``move_fraction`` of its span and its low limit as rest value.
    """
    n = len(table)
    act_of = np.full(n, -1, dtype=np.int64)
    act_p = np.full((n, opstate.P_WIDTH), np.nan)
    if idle.source is IdleSource.OFF:
        return act_of, act_p
    has_ind = np.zeros(max(len(table.machine_ids), 1), dtype=bool)
    has_ind[running_of[running_of >= 0]] = True
    declared: dict[int, list[int]] = {}
    generic: dict[int, list[int]] = {}
    for r, (sid, kind, m) in enumerate(zip(table.ids, table.kinds, table.machine.tolist(), strict=True)):
        if m < 0 or not has_ind[m] or running_of[r] >= 0:
            continue
        name = sid[len(table.machine_ids[m]) + 1:]
        if name in idle.signals and idle.source is not IdleSource.DATA:
            declared.setdefault(m, []).append(r)
            act_p[r, opstate.P_IDLE] = float(idle.signals[name])
        elif kind not in ("state", "counter") and np.isfinite(table.high[r] - table.low[r]) \
                and table.high[r] > table.low[r]:
            generic.setdefault(m, []).append(r)
            act_p[r, opstate.P_BAND] = idle.move_fraction * float(table.high[r] - table.low[r])
            act_p[r, opstate.P_REST] = float(table.low[r])
    for m, rows in declared.items():
        act_of[rows] = m
    if idle.source is not IdleSource.DECLARED:
        for m, rows in generic.items():
            if m not in declared:
                act_of[rows] = m
    return act_of, act_p


def signal_classes(table: SignalTable) -> np.ndarray:
    """Per signal its class for the trend stage's shift rule (``trend.class_fraction``): the same signal name within
    its machine and the same unit on every machine (every compressor's ``speed``); numbered in order of appearance."""
    keys: dict[tuple[str, str], int] = {}
    out = np.empty(len(table), dtype=np.int64)
    for i, (sid, unit, m) in enumerate(zip(table.ids, table.units, table.machine.tolist(), strict=True)):
        name = sid[len(table.machine_ids[m]) + 1:] if m >= 0 else sid
        out[i] = keys.setdefault((name, unit), len(keys))
    return out


def _alarm_params(a: AlarmSettings) -> np.ndarray:
    return alarms.make_params(a.on_threshold, a.off_threshold, a.on_count, a.off_count)


_LK_MODES = {LikelihoodMode.OFF: likelihood.MODE_OFF, LikelihoodMode.MAX: likelihood.MODE_MAX,
             LikelihoodMode.REPLACE: likelihood.MODE_REPLACE}


def _likelihood_params(lk: LikelihoodSettings) -> np.ndarray:
    return likelihood.make_params(
        lk.err_alpha, lk.err_huber_k, lk.err_threshold, lk.short_alpha, lk.long_alpha, lk.learn, lk.mean_floor,
        lk.var_floor, lk.threshold_decades, np.nan if lk.novelty_margin is None else lk.novelty_margin,
        tails=2 if lk.tails is LikelihoodTails.BOTH else 1, season_bins=lk.season_bins,
        season_period_s=lk.season_period_s, season_memory_s=lk.season_memory_s, season_decades=lk.season_decades)


class DetectorStack:
    """Anomaly detection for ``n_signals`` signals grouped into machines by ``machine_of_signal``.

    ``machine_of_signal``: int per signal, the machine index (0..n_machines-1) or -1 for none.
    ``low``/``high``: plausible range per signal (NaN = no limit). ``enable``: uint8 mask per signal
    (``edge.kernels.kinds.EN_*``; ``kinds.mask_for(kind)`` gives the default for a plant-file kind).
    """

    def __init__(self, n_signals: int, machine_of_signal: np.ndarray, settings: AnalyticsSettings | None = None, *,
                 low: np.ndarray | None = None, high: np.ndarray | None = None, enable: np.ndarray | None = None,
                 resolution: np.ndarray | None = None, capacity: int = 65_536,
                 machine_ids: list[str] | None = None, base_dir: Path | None = None,
                 machine_models: list[MachineModel | None] | None = None,
                 running_of: np.ndarray | None = None, running_on_at: np.ndarray | None = None,
                 running_off_at: np.ndarray | None = None, device_of: np.ndarray | None = None,
                 level_alpha: np.ndarray | None = None, activity_of: np.ndarray | None = None,
                 activity_p: np.ndarray | None = None, signal_class: np.ndarray | None = None) -> None:
        s = settings or AnalyticsSettings()
        machine_of = np.asarray(machine_of_signal, dtype=np.int64)
        if machine_of.shape != (n_signals,):
            raise ValueError(f"machine_of_signal must have one entry per signal ({n_signals})")
        self.settings = s
        self.n_signals = n_signals
        self.n_machines = int(machine_of.max()) + 1 if n_signals and machine_of.max() >= 0 else 0
        self.cfg = np.zeros((n_signals, signal_stack.C_WIDTH), dtype=np.float64)
        self.cfg[:, signal_stack.C_LOW] = np.nan if low is None else low
        self.cfg[:, signal_stack.C_HIGH] = np.nan if high is None else high
        mask = np.full(n_signals, EN_ALL, dtype=np.int64) if enable is None else np.asarray(enable, dtype=np.int64)
        self.cfg[:, signal_stack.C_MASK] = mask
        self.cfg[:, signal_stack.C_RES] = 0.0 if resolution is None else np.nan_to_num(np.abs(resolution))
        # a signal's own level learning rate (> 0; 0: the stack's), e.g. ``per_part.level_alpha`` (see from_table)
        self.cfg[:, signal_stack.C_ALPHA] = 0.0 if level_alpha is None else np.nan_to_num(level_alpha)
        self.params = signal_stack.pack_params(
            robust.make_params(s.level.alpha, s.level.huber_k, s.warmup, s.level.min_scale),
            cusum.make_params(s.change.k, s.change.h, s.change.z_clip, s.change.cap, s.change.rho_alpha),
            stuck.make_params(s.stuck.beta, s.stuck.tol, s.stuck.threshold_decades, s.stuck.p_floor, s.warmup),
            rate.make_params(s.rate.alpha, s.rate.huber_k, s.warmup, s.rate.min_scale, s.rate.gap_factor),
            level_threshold=s.level.threshold, rate_threshold=s.rate.threshold, limit_margin=s.range.margin,
            machine_z_clip=s.machine.z_clip, bad_s=s.quality.bad_s, guard=s.level.guard,
            guard_at=s.signal_alarm.off_threshold, rate_span=s.rate.span_floor,
            rel_res=s.level.rel_resolution)
        tr = s.trend
        self.trend_params = trend.make_params(tr.bin_s, tr.beta, tr.alpha, tr.huber_k, tr.warmup, tr.threshold,
                                              tr.guard, s.signal_alarm.off_threshold, tr.max_gap,
                                              s.level.rel_resolution, tr.peak_mult, tr.peak_decay,
                                              tr.machine_fraction, tr.machine_min, tr.machine_hold_s, tr.run,
                                              tr.tail_max, tr.quiet_s, tr.common_z, tr.common_clip,
                                              tr.rel_per_h)
        # machine-wide trends (a load change) hold a machine's trend scores: counted over its judged members
        self.trend_machine_of = np.where((mask & EN_CHANGE) != 0, machine_of, -1).astype(np.int64)
        members = np.bincount(self.trend_machine_of[self.trend_machine_of >= 0], minlength=max(self.n_machines, 1))
        self.trend_m_need = np.maximum(float(tr.machine_min), tr.machine_fraction * members).astype(np.float64)
        # the same signal of several machines trending at once (a shift's ramp) holds that class (``signal_class``:
        # per signal, -1 none; ``from_table``: name and unit)
        cls_of = np.full(n_signals, -1, np.int64) if signal_class is None or tr.class_fraction <= 0 \
            else np.asarray(signal_class, dtype=np.int64)
        self.trend_class_of = np.where((mask & EN_CHANGE) != 0, cls_of, -1).astype(np.int64)
        n_cls = int(self.trend_class_of.max()) + 1 if n_signals else 0
        c_members = np.bincount(self.trend_class_of[self.trend_class_of >= 0], minlength=max(n_cls, 1))
        self.trend_c_need = np.maximum(float(tr.machine_min), tr.class_fraction * c_members).astype(np.float64)
        self._silent_ns = s.quality.silent_s * NS_PER_S
        self._since_ns: int | None = None  # first timestamp this instance saw: silence is measured from it at most
        self._silent_next_ns = 0
        self._silent_rows = np.empty(n_signals, dtype=np.int64)  # silent_scan's outputs (views handed out per frame)
        self._silent_score = np.empty(n_signals, dtype=np.float64)
        self._silent_bound = np.full(1, -np.inf)  # earliest last sample of a non-silent signal (see ``_silent``)
        # Operating changes (machine-wide moves hold process alarms): every signal with a machine, not only the
        # multivariate stage's members.
        oc = s.operating_change
        self.oc_machine_of = machine_of.copy() if oc.enabled else np.full(n_signals, -1, dtype=np.int64)
        n_m = max(self.n_machines, 1)
        self.oc_members = np.bincount(machine_of[machine_of >= 0], minlength=n_m).astype(np.float64)[:n_m] \
            if self.n_machines else np.zeros(1)
        self._oc_stamp = np.full(n_signals, -1, dtype=np.int64)
        self._oc_hot = np.zeros(n_m, dtype=np.int64)
        self._oc_frame = 0
        self._resumed = False  # set by ``restore``: the first frame after it starts the restart hold
        self._hold_all_until = -1
        # Operating state: running indicators (machine per signal, -1 none) and the signals an off machine freezes
        # (every signal of a machine that has an indicator, except its state signals: range-only mask).
        st_on = s.operating_state.enabled and running_of is not None and self.n_machines > 0
        self.running_of = np.asarray(running_of, dtype=np.int64).copy() if st_on else np.full(n_signals, -1,
                                                                                                 dtype=np.int64)
        if self.running_of.shape != (n_signals,):
            raise ValueError(f"running_of must have one entry per signal ({n_signals})")
        self.on_at = np.full(n_signals, 0.5) if running_on_at is None else np.asarray(running_on_at, np.float64)
        self.off_at = np.full(n_signals, 0.5) if running_off_at is None else np.asarray(running_off_at, np.float64)
        has_ind = np.zeros(n_m, dtype=bool)
        has_ind[self.running_of[self.running_of >= 0]] = True
        freeze = (machine_of >= 0) & has_ind[np.maximum(machine_of, 0)] & (mask != EN_STATE)
        f_of = np.where(freeze, machine_of, n_m)
        f_order = np.argsort(f_of, kind="stable")
        self.st_sig = f_order[: int(freeze.sum())].astype(np.int64)
        self.st_ptr = np.concatenate([[0], np.cumsum(np.bincount(machine_of[self.st_sig], minlength=n_m)[:n_m])
                                      ]).astype(np.int64)
        self._state_on = bool(st_on and (self.running_of >= 0).any())
        # Devices (PLCs, servers): index per signal (-1 none); none known when built without a plant's devices.
        self.device_of = np.full(n_signals, -1, dtype=np.int64) if device_of is None else np.asarray(
            device_of, dtype=np.int64).copy()
        if self.device_of.shape != (n_signals,):
            raise ValueError(f"device_of must have one entry per signal ({n_signals})")
        self.n_devices = int(self.device_of.max()) + 1 if n_signals and self.device_of.max() >= 0 else 0
        self._dev_bad_ns = s.quality.device_s * NS_PER_S
        self._dev_score = np.zeros(self.n_devices, dtype=np.float64)
        self._dev_ent = np.arange(self.n_devices, dtype=np.int64)
        self._dev_kind = np.full(self.n_devices, int(Kind.DEVICE), dtype=np.uint8)
        self._dev_on = self.n_devices > 0 and s.quality.device_s > 0
        self._grace_ns = int(s.operating_state.grace_s * NS_PER_S)
        self._off_mode = opstate.OWN_BASELINE if s.operating_state.off is OffJudgement.OWN_BASELINE else opstate.FREEZE
        # IDLE (``opstate.update_activity``): machines with a running indicator and activity signals (declared or by
        # the data rule, ``activity_signals``); frozen like OFF, so only with ``off: freeze``.
        idle = s.operating_state.idle
        idle_on = self._state_on and idle.source is not IdleSource.OFF and self._off_mode == opstate.FREEZE \
            and activity_of is not None
        self.act_of = np.full(n_signals, -1, dtype=np.int64) if not idle_on else np.asarray(activity_of,
                                                                                            np.int64).copy()
        if self.act_of.shape != (n_signals,):
            raise ValueError(f"activity_of must have one entry per signal ({n_signals})")
        self.act_of[self.act_of >= 0] = np.where(has_ind[self.act_of[self.act_of >= 0]], self.act_of[self.act_of >= 0],
                                                 -1)
        self.act_p = np.ascontiguousarray(np.full((n_signals, opstate.P_WIDTH), np.nan) if activity_p is None
                                          else np.asarray(activity_p, np.float64))
        self._idle_on = bool((self.act_of >= 0).any())
        self._idle_ns = int(idle.idle_after_s * NS_PER_S)
        self._idle_min_moves = int(idle.min_moves)
        self._resume_ratio = float(idle.resume_ratio)  # the way back from IDLE: a grace as long as the spell
        # At-rest judgement (``atrest``): an off machine's process signals (level-judged ones: not its state signals,
        # not counters) against the band a machine at rest stays in; only with ``off: freeze`` (``own_baseline``
        # judges the off state with the full stack instead).
        ar = s.operating_state.at_rest
        rest_on = self._state_on and ar.enabled and self._off_mode == opstate.FREEZE
        rest_sig = np.zeros(n_signals, dtype=bool)
        rest_sig[self.st_sig] = True
        rest_sig &= (mask & EN_LEVEL) != 0
        self.rest_machine_of = np.where(rest_sig & rest_on, machine_of, -1).astype(np.int64)
        self._rest_on = bool((self.rest_machine_of >= 0).any())
        span = np.nan_to_num(self.cfg[:, signal_stack.C_HIGH] - self.cfg[:, signal_stack.C_LOW], nan=0.0,
                             posinf=0.0, neginf=0.0)
        # band floor: register steps or a fraction of the span; without a span, that fraction of the running level
        self.rest_floor = np.ascontiguousarray(np.stack([
            np.maximum(ar.floor_resolutions * self.cfg[:, signal_stack.C_RES], ar.floor_span * span),
            np.where(span > 0, 0.0, ar.floor_span)], axis=1))
        self.rest_params = atrest.make_params(ar.mult, ar.rel_resolution, ar.warm_s, ar.persist, ar.cap,
                                              ar.drain_per_s, ar.tau_loc_s, ar.tau_mad_s, ar.max_dt_s,
                                              ar.start_band, ar.start_hold_s, ar.peak_mult, ar.peak_warm_s,
                                              ar.start_persist_s, ar.start_run_fraction, ar.start_tau_s,
                                              ar.start_noise_band, ar.start_load_bands, ar.frozen_mult,
                                              ar.frozen_min_run, ar.frozen_runs, ar.frozen_tau_s,
                                              atrest.plant_need(self.rest_machine_of, ar.start_peers_min,
                                                                ar.start_peers_fraction), ar.start_peers_window_s)
        self.rest_need = atrest.machine_need(self.rest_machine_of, self.n_machines, ar.start_min, ar.start_fraction)
        self._run_tau_s = ar.start_level_tau_s  # the running level's slow extremes (``atrest.run_level``)
        self._run_due_ns = -1  # next update of them (every RUN_LEVEL_EVERY_S of data time), -1: at the next frame
        self._rest_sig = atrest.init_signals(n_signals)  # the start test's per-signal scratch
        # signals that read the same at rest as running keep their running judgement while off (``thaw_independent``)
        self.thaw_params = atrest.make_thaw_params(ar.same_ratio_min, ar.same_ratio_max, ar.same_dist,
                                                   ar.same_learned_s, float(s.warmup))
        self._thaw_on = ar.same_ratio_min > 0
        self._rest_frame = 0
        # The alarm gate holds a machine's process alarms for operating changes and state changes alike.
        self.gate_machine_of = machine_of.copy() if (oc.enabled or self._state_on) else np.full(
            n_signals, -1, dtype=np.int64)
        # Machine membership (CSR) of the signals that take part in the multivariate score.
        member = (machine_of >= 0) & ((mask & EN_MACHINE) != 0)
        self.machine_of = np.where(member, machine_of, -1) if s.machine.enabled else np.full(n_signals, -1)
        order = np.argsort(np.where(self.machine_of >= 0, self.machine_of, self.n_machines), kind="stable")
        self.m_sig = order[: int((self.machine_of >= 0).sum())].astype(np.int64)
        counts = np.bincount(self.machine_of[self.m_sig], minlength=self.n_machines) if self.n_machines else []
        self.m_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._machine_ids = machine_ids
        self._base_dir = base_dir
        self._machine_models = machine_models  # given models (per machine) instead of settings.machine.models
        self.lk_mode = _LK_MODES[s.likelihood.mode]
        self.lk_params = _likelihood_params(s.likelihood)
        self.lk_floor = np.ascontiguousarray(self.cfg[:, signal_stack.C_RES])
        self.lk_enable = mask.copy()
        self.likelihood_cold = False  # set by ``restore`` when the checkpoint had no likelihood state
        self.sig_alarm_params = _alarm_params(s.signal_alarm)
        self.mach_alarm_params = _alarm_params(s.machine_alarm)
        self.fingerprint = checkpoint.fingerprint(
            STATE_VERSION, n_signals, self.m_ptr, self.m_sig, _LEGACY_COMPONENTS
        )
        self._init_state()
        self._grow(capacity)
        self._events = EventColumns(s.max_events)
        self._frame_tables(s)

    def _frame_tables(self, s: AnalyticsSettings) -> None:
        """What the fused frame passes read (``signal_stack.signal_frame``, ``signal_alarms.gate_alarm_frame``): the
        bookkeeping each separate kernel did -- device polls, the machine stage's latest values, operating-change
        counts, the settle gate, the device fold -- routed per signal, with each stage's on/off folded into it."""
        n = self.n_signals
        self._route = np.full((n, signal_stack.R_WIDTH), -1, dtype=np.int64)
        if self._dev_on:  # device judgement off: the polls were never recorded
            self._route[:, signal_stack.R_DEVICE] = self.device_of
        self._route[:, signal_stack.R_MEMBER] = self.machine_of
        self._route[:, signal_stack.R_LAST] = 1 if self.n_machines else 0  # the machine stage ran only with machines
        self._route[:, signal_stack.R_OC] = self.oc_machine_of
        oc = s.operating_change
        self._oc_on = bool(oc.enabled and self.n_machines)
        # With the at-rest stage the marking waits until it has run (it reads the holds as they were before).
        self._oc_p = np.array([oc.z_hot, oc.min_fraction, float(oc.min_signals), 0.0 if self._rest_on else 1.0])
        self._oc_hold_ns = int(oc.hold_s * NS_PER_S)
        self._count = np.zeros(n, dtype=np.float64)  # level count per signal after the frame (signal_frame writes)
        self._frame_out = np.zeros(1, dtype=np.int64)  # the frame's latest timestamp
        self._gate_p = signal_alarms.make_params(float(s.alarm_settle), s.settle_s * NS_PER_S,
                                                 DEVICE_FOLD_AT if self._dev_on else np.inf,
                                                 float(s.signal_alarm.rearm_count))
        self._dev_ts = np.empty(self.n_devices, dtype=np.int64)  # the device alarms' timestamps (one per frame)

    @classmethod
    def from_table(cls, table: SignalTable, settings: AnalyticsSettings | None = None, *,
                   capacity: int = 65_536, base_dir: Path | None = None) -> DetectorStack:
        """The stack for an expanded plant: machines, plausible ranges, per-kind enables and resolutions.

        Resolution: one step of a Modbus integer register (its scale); OPC-UA and float registers are
        continuous (0). See ``signal_stack`` for why quantised signals need it.
        """
        enable = np.array([mask_for(k) for k in table.kinds], dtype=np.int64)
        per_part_alpha = (settings or AnalyticsSettings()).per_part.level_alpha
        level_alpha = np.array([per_part_alpha if k == "per_part" else 0.0 for k in table.kinds], dtype=np.float64)
        ops = (settings or AnalyticsSettings()).operating_state
        running_of, on_at, off_at = running_indicators(table, ops.running_signals, ops.load_signals)
        act_of, act_p = activity_signals(table, ops.idle, running_of)
        return cls(len(table), table.machine.astype(np.int64), settings, low=table.low, high=table.high,
                   enable=enable, resolution=resolution_of(table), capacity=capacity,
                   machine_ids=list(table.machine_ids), base_dir=base_dir,
                   running_of=running_of, running_on_at=on_at, running_off_at=off_at,
                   device_of=table.device.astype(np.int64) if table.devices else None, level_alpha=level_alpha,
                   activity_of=act_of, activity_p=act_p, signal_class=signal_classes(table))

    def _init_state(self) -> None:
        self.state = signal_stack.init_state(self.n_signals)
        self._silent_bound[0] = -np.inf  # last timestamps replaced: the next check scans
        # the other operating state's baseline (opstate, ``off: own_baseline``); with ``off: freeze`` the running
        # baseline as it was at each machine's last activity (``opstate.update_activity``: IDLE dates back to it)
        self.state_alt = signal_stack.init_state(self.n_signals)
        self.z_last = np.zeros(self.n_signals, dtype=np.float64)
        self.machine_stage = self._new_machine_stage()
        self.mach_top_open = np.full((self.n_machines, 3), -1, dtype=np.int32)
        self.machine_cold = False  # set by ``restore`` when the machine stage could not be restored
        # The machine file is about the model files too: a new model (a refit) must not be overridden.
        self._machine_fp = checkpoint.fingerprint(self.fingerprint, *(
            getattr(m, "data_hash", "") for m in self.machine_stage.models if m is not None))
        self.lk_state = likelihood.init_state(self.n_signals)
        self.lk_season = likelihood.init_season(self.n_signals, self.settings.likelihood.season_bins)
        self.sig_alarm_f, self.sig_alarm_t = alarms.init_state(self.n_signals)
        self.sig_rearm = rearm.init_state(self.n_signals)  # samples since close, closed peak (``rearm``)
        self.first_ns = np.full(self.n_signals, -1, dtype=np.int64)  # first usable sample per signal (settle_s)
        self.hold_until = np.full(max(self.n_machines, 1), -1, dtype=np.int64)  # operating change until (ns)
        self.m_state = np.zeros(max(self.n_machines, 1), dtype=np.int8)  # opstate.UNKNOWN / OFF / RUNNING
        self.m_since = np.full(max(self.n_machines, 1), -1, dtype=np.int64)  # last state change (ns)
        self._init_activity()
        self.rest_state = atrest.init_state(self.n_signals)  # at-rest band per signal (``atrest``)
        self.rest_run = atrest.init_run_level(self.n_signals)  # running level's slow extremes (the start test)
        self.trend_state = trend.init_state(self.n_signals)  # slow trend per signal (``trend``)
        self.trend_m_hot = np.zeros(max(self.n_machines, 1), dtype=np.int64)  # members trending now, per machine
        self.trend_m_held = np.full(max(self.n_machines, 1), -1, dtype=np.int64)  # trends held until (ns)
        self.trend_m_zsum = np.zeros(max(self.n_machines, 1), dtype=np.float64)  # members' clipped slope z: sum
        self.trend_m_zn = np.zeros(max(self.n_machines, 1), dtype=np.float64)  # and count
        self.trend_c_hot = np.zeros(self.trend_c_need.size, dtype=np.int64)  # members trending now, per class
        self.trend_c_held = np.full(self.trend_c_need.size, -1, dtype=np.int64)  # class held until (ns)
        self.rest_start = atrest.init_machines(self.n_machines)  # machines starting (at-rest held), not checkpointed
        self.thaw_seen = atrest.init_thaw(self.n_machines)  # the thaw's looks per machine (not checkpointed)
        self.cfg[:, signal_stack.C_FROZEN] = 0.0
        self.dev_good = np.full(self.n_devices, -1, dtype=np.int64)  # latest good poll per device (ns), -1 never
        self.dev_any = np.full(self.n_devices, -1, dtype=np.int64)  # latest sample of any quality per device (ns)
        self.dev_alarm_f, self.dev_alarm_t = alarms.init_state(self.n_devices)
        self.mach_alarm_f, self.mach_alarm_t = alarms.init_state(self.n_machines)

    def _init_activity(self) -> None:
        """IDLE's learned state (``opstate.update_activity``): anchors, moves, cycle signals, last activity."""
        self.act_v = np.full(self.n_signals, np.nan)
        self.act_i = np.zeros((self.n_signals, opstate.I_WIDTH), dtype=np.int64)
        self.act_i[:, opstate.I_MOVED] = -1
        self.act_i[:, opstate.I_CYCLER] = np.isfinite(self.act_p[:, opstate.P_IDLE]) & (self.act_of >= 0)
        self.m_last = np.full(max(self.n_machines, 1), -1, dtype=np.int64)

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        self._score = np.empty(capacity, dtype=np.float64)
        self._kind = np.empty(capacity, dtype=np.uint8)
        self._gated = np.empty(capacity, dtype=np.float64)

    def process(self, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                ts_ns: np.ndarray) -> StackResult:
        """Score, learn and alarm one frame (columns as in ``edge.frames.Frame``)."""
        n = int(signal.shape[0])
        if n > self.capacity:
            self._grow(max(n, 2 * self.capacity))
        score, kind = self._score[:n], self._kind[:n]
        if self._state_on and n:
            opstate.update_states(ts_ns, signal, value, quality, self.running_of, self.on_at, self.off_at,
                                  self.m_state, self.m_since,
                                  self.hold_until, self._grace_ns, self.st_ptr, self.st_sig, self.cfg,
                                  signal_stack.C_FROZEN, self._off_mode, self.state, self.state_alt,
                                  signal_stack.B_RATE + rate.LAST_V, signal_stack.B_RATE + rate.LAST_TS)
            if self._idle_on:
                opstate.update_activity(ts_ns, signal, value, quality, self.act_of, self.act_p, self.act_v,
                                        self.act_i, self.m_last, self.m_state, self.m_since, self.hold_until,
                                        self._grace_ns, self._idle_ns, self._idle_min_moves, self.st_ptr, self.st_sig,
                                        self.cfg, signal_stack.C_FROZEN, self.state, self.state_alt,
                                        signal_stack.B_RATE + rate.LAST_V, signal_stack.B_RATE + rate.LAST_TS,
                                        self._resume_ratio)
        # One pass: the signal stack, and the device polls, the machine stage's latest values and the
        # operating-change counts of the frame (``signal_stack.signal_frame``: each as its own kernel does it).
        if self._oc_on and n:
            self._oc_frame += 1
        ms = self.machine_stage
        signal_stack.signal_frame(ts_ns, signal, value, quality, self.state, self.cfg, self.params, score, kind,
                                  self.z_last, self._route, self._count, self._frame_out, self.dev_good, self.dev_any,
                                  ms.x_last, ms.seen, self._oc_stamp, self._oc_hot, self.oc_members, self.hold_until,
                                  self._oc_frame, self._oc_p, self._oc_hold_ns)
        tick_ts = int(self._frame_out[0]) if n else 0
        if self.settings.trend.enabled and n:  # slow trend (``trend``): reported as CHANGE where it is larger
            trend.trend_chunk(ts_ns, signal, value, quality, self.trend_state, self.cfg, signal_stack.C_MASK,
                              EN_CHANGE, signal_stack.C_FROZEN, signal_stack.C_RES, self.trend_params,
                              self.trend_machine_of, self.trend_m_hot, self.trend_m_need, self.trend_m_held,
                              self.trend_m_zsum, self.trend_m_zn, self.m_since, self.hold_until,
                              self.trend_class_of, self.trend_c_hot, self.trend_c_need, self.trend_c_held, score,
                              kind, int(Kind.CHANGE))
        if self._rest_on and n:
            self._rest_frame += 1
            if tick_ts >= self._run_due_ns:  # the running level's slow extremes, every few seconds of data
                elapsed_s = RUN_LEVEL_EVERY_S if self._run_due_ns < 0 else \
                    RUN_LEVEL_EVERY_S + (tick_ts - self._run_due_ns) / NS_PER_S
                atrest.run_level(self.rest_machine_of, self.m_state, self.state, signal_stack.B_LEVEL + robust.LOC,
                                 self.rest_run, min(elapsed_s / self._run_tau_s, 1.0))
                self._run_due_ns = tick_ts + int(RUN_LEVEL_EVERY_S * NS_PER_S)
            atrest.thaw_independent(tick_ts, self.m_state, self.m_since, self.thaw_seen, self.st_ptr, self.st_sig,
                                    self.rest_machine_of, self.rest_state, self.state,
                                    signal_stack.B_LEVEL + robust.LOC, signal_stack.B_LEVEL + robust.SCALE,
                                    signal_stack.B_LEVEL + robust.COUNT, self.thaw_params, self.cfg,
                                    signal_stack.C_FROZEN)
            # while no machine rests the pass would judge, learn and count nothing: skipped (bit-identical)
            if opstate.count_resting(self.m_state, self.n_machines):
                if self._thaw_on:  # the thaw's finds on resting machines are about the rest: kind AT_REST
                    atrest.label_thawed(signal, score, kind, self.rest_machine_of, self.m_state, self.cfg,
                                        signal_stack.C_FROZEN, int(Kind.AT_REST))
                atrest.rest_chunk(ts_ns, signal, value, quality, self.rest_machine_of, self.m_state, self.m_since,
                                  self.hold_until, self.rest_floor, self.rest_state, self.rest_params, score, kind,
                                  self.rest_need, self.rest_start, self._rest_sig, self._rest_frame, self.state,
                                  signal_stack.B_LEVEL + robust.LOC, self.rest_run)
            oc_p = self._oc_p
            opchange.mark_machines(self._oc_hot, self.oc_members, tick_ts, float(oc_p[signal_stack.OC_MIN_FRACTION]),
                                   float(oc_p[signal_stack.OC_MIN_SIGNALS]), self._oc_hold_ns, self.hold_until)
        if self.lk_mode != likelihood.MODE_OFF:
            likelihood.likelihood_chunk(ts_ns, signal, value, quality, self.lk_state, self.lk_season, self.lk_floor,
                                        self.lk_enable, self.lk_params, self.lk_mode, score, kind)
        n_ticks = 0
        if n and self._since_ns is None:
            self._since_ns = tick_ts
        dev_on = self._dev_on and n > 0
        if dev_on:
            devices.device_scores(tick_ts, int(self._since_ns), self.dev_good, self.dev_any, self._dev_bad_ns,
                                  self._silent_ns, self._dev_score)
        if self.n_machines and n:
            n_ticks = ms.tick(tick_ts, self.sig_alarm_f[:, alarms.ACTIVE])
        cap = self.settings.max_events
        cols = self._events.kernel_args()
        if self._resumed and n:
            self._resumed = False
            self._hold_all_until = int(ts_ns.min()) + int(self.settings.restart_settle_s * NS_PER_S)
        silent = self._silent(tick_ts) if n else None
        if silent is not None and dev_on:
            d = self.device_of[silent[0]]
            keep = (d < 0) | (self._dev_score[np.maximum(d, 0)] < DEVICE_FOLD_AT)
            silent = (silent[0][keep], silent[1][keep]) if not keep.all() else silent
        # Alarms wait until a signal has settled, by samples and by time (scores do not): a cold start must not
        # raise a storm. Data-quality kinds are never held back. Then the device fold and the alarm (one pass).
        alarm_score = self._gated[:n]
        n_sig_ev = signal_alarms.gate_alarm_frame(
            ts_ns, signal, score, kind, quality, self._count, self.first_ns, self.gate_machine_of, self.hold_until,
            self._hold_all_until, self.device_of, self._dev_score, self._gate_p, int(Kind.BAD), alarm_score,
            self.sig_alarm_f, self.sig_alarm_t, self.sig_rearm, self.sig_alarm_params, REARM_EXEMPT, *cols)
        if silent is not None:  # the SILENT judgements after the frame's samples, as if appended to it
            n_s = silent[0].shape[0]
            n_sig_ev += rearm.alarm_chunk_rearm(np.full(n_s, tick_ts, dtype=np.int64), silent[0], silent[1],
                                                np.full(n_s, int(Kind.SILENT), dtype=np.uint8), n_s, self.sig_alarm_f,
                                                self.sig_alarm_t, self.sig_rearm, self.sig_alarm_params,
                                                float(self.settings.signal_alarm.rearm_count), REARM_EXEMPT,
                                                *(c[n_sig_ev:] for c in cols))
        kept = min(n_sig_ev, cap)
        events = self._events.take(kept, Scope.SIGNAL) if kept else np.empty(0, dtype=EVENT_DTYPE)
        n_m_ev = 0
        if n_ticks:
            tts = np.full(n_ticks, tick_ts, dtype=np.int64)
            mk = np.full(n_ticks, int(Kind.MACHINE), dtype=np.uint8)
            n_m_ev = alarms.alarm_chunk(tts, ms.tick_m, ms.tick_s, mk, n_ticks, self.mach_alarm_f,
                                        self.mach_alarm_t, self.mach_alarm_params, *cols)
            if n_m_ev:
                m_ev = self._events.take(min(n_m_ev, cap), Scope.MACHINE)
                self._name_contributors(m_ev, n_ticks)
                events = np.concatenate([events, m_ev])
        n_d_ev = 0
        if dev_on:
            self._dev_ts.fill(tick_ts)
            n_d_ev = alarms.alarm_chunk(self._dev_ts, self._dev_ent,
                                        self._dev_score, self._dev_kind, self.n_devices, self.dev_alarm_f,
                                        self.dev_alarm_t, self.sig_alarm_params, *cols)
            if n_d_ev:
                events = np.concatenate([events, self._events.take(min(n_d_ev, cap), Scope.DEVICE)])
        dropped = max(n_sig_ev - cap, 0) + max(n_m_ev - cap, 0) + max(n_d_ev - cap, 0)
        return StackResult(score, kind, ms.tick_m[:n_ticks], ms.tick_s[:n_ticks], ms.tick_top[:n_ticks],
                           tick_ts, events, dropped, alarm_score, self.m_state[:self.n_machines])

    def _name_contributors(self, m_ev: np.ndarray, n_ticks: int) -> None:
        """Machine events carry the signals that contributed most when the episode opened (a handful per frame)."""
        ms = self.machine_stage
        row = {int(m): j for j, m in enumerate(ms.tick_m[:n_ticks].tolist())}
        for e in m_ev:
            m = int(e["entity"])
            if e["phase"] == 1 and m in row:  # Phase.OPEN
                self.mach_top_open[m] = ms.tick_top[row[m]]
            e["top"] = self.mach_top_open[m]

    def _silent(self, now_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(signals, SILENT scores) of signals seen before but without any sample for ``silent_s``; None if none.

        Checked at most once per second of data time (O(signals), not per sample). Silence is measured from the
        later of a signal's last sample and the first frame this instance saw, so a gateway that was itself down
        does not blame every signal for its own outage.
        """
        if self._since_ns is None:
            self._since_ns = now_ns
        if self._silent_ns <= 0 or now_ns < self._silent_next_ns:
            return None
        self._silent_next_ns = now_ns + NS_PER_S
        now_f = float(now_ns)
        # Last timestamps only grow, so no signal can be silent while even the earliest of them is recent enough:
        # the scan then runs about once per silent_s instead of every second (the checks keep their cadence).
        if now_f - self._silent_bound[0] <= self._silent_ns:
            return None
        n = signal_stack.silent_scan(self.state, float(self._since_ns), now_f, float(self._silent_ns),
                                     self._silent_rows, self._silent_score, self._silent_bound)
        if n == 0:
            return None
        self._silent_bound[0] = -np.inf  # silent signals are reported every check until they speak again
        return self._silent_rows[:n], self._silent_score[:n]

    # -- checkpoints -------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"state": self.state, "z_last": self.z_last,
                "sig_alarm_f": self.sig_alarm_f, "sig_alarm_t": self.sig_alarm_t,
                "mach_alarm_f": self.mach_alarm_f, "mach_alarm_t": self.mach_alarm_t}

    def save(self, path: Path) -> None:
        """Checkpoint all learned and alarm state atomically."""
        checkpoint.save(path, STATE_VERSION, self.fingerprint,
                        {**self._arrays(), **self._lk_arrays(), "first_ns": self.first_ns,
                         "op_state": self.m_state, "op_since": self.m_since, "state_alt": self.state_alt,
                         "rest_state": self.rest_state, **self._dev_arrays(), "sig_rearm": self.sig_rearm,
                         **self._act_arrays(), "trend_state": self.trend_state, "rest_run": self.rest_run})
        checkpoint.save(_machine_file(path), MACHINE_STATE_VERSION, self._machine_fp,
                        {**self.machine_stage.arrays(), "mach_top_open": self.mach_top_open})

    def restore(self, path: Path) -> None:
        """Resume from a checkpoint; raises ``CheckpointError`` (state untouched) if it does not fit.

        A checkpoint without the likelihood stage's state (written before the stage existed), or with a
        seasonal state of another size (``season_bins`` changed), restores the rest and starts that part
        cold, setting ``likelihood_cold``: enabling or retuning the stage must not cost the plant the
        warm-up of every other stage.
        """
        got = checkpoint.load(path, STATE_VERSION, self.fingerprint, self._arrays())
        lk_got: dict[str, np.ndarray | None] = {}
        for name, arr in self._lk_arrays().items():
            try:
                lk_got[name] = checkpoint.load(path, STATE_VERSION, self.fingerprint, {name: arr})[name]
            except checkpoint.CheckpointError:
                lk_got[name] = None
        for name, arr in self._arrays().items():
            arr[...] = got[name]
        try:
            self.first_ns[...] = checkpoint.load(path, STATE_VERSION, self.fingerprint,
                                                 {"first_ns": self.first_ns})["first_ns"]
        except checkpoint.CheckpointError:
            # A checkpoint from before settle_s: a signal that had learned its samples counts as settled long ago.
            seen = self.state[:, signal_stack.B_LEVEL + robust.COUNT] >= self.settings.alarm_settle
            self.first_ns[...] = np.where(seen, 0, -1)
        try:  # operating states (a checkpoint from before them: unknown until each indicator is read again)
            op = checkpoint.load(path, STATE_VERSION, self.fingerprint, {"op_state": self.m_state,
                                                                         "op_since": self.m_since,
                                                                         "state_alt": self.state_alt})
            self.m_state[...] = op["op_state"]
            self.m_since[...] = op["op_since"]
            self.state_alt[...] = op["state_alt"]
        except checkpoint.CheckpointError:
            self.m_state[...] = opstate.UNKNOWN
            self.m_since[...] = -1
            self.state_alt[...] = signal_stack.init_state(self.n_signals)
        try:  # IDLE's learned state (a checkpoint from before IDLE held no state 2: cycle signals are learned again)
            act = checkpoint.load(path, STATE_VERSION, self.fingerprint, self._act_arrays())
            for name, arr in self._act_arrays().items():
                arr[...] = act[name]
        except checkpoint.CheckpointError:
            # Learned again (a checkpoint from before IDLE, or before its run duration ``I_RUN_T0``). An IDLE machine
            # is taken as running: only a learned cycle signal could end its spell, and the data rule learns them
            # only while the machine runs (it would stay frozen until its running bit dropped). If it is still idle,
            # it is IDLE again after ``idle_after_s``.
            self._init_activity()
            self.m_state[self.m_state == opstate.IDLE] = opstate.RUNNING
        if not self._idle_on:  # IDLE switched off since: an idle machine is running (only activity would end it)
            self.m_state[self.m_state == opstate.IDLE] = opstate.RUNNING
        self._refreeze()
        self.thaw_seen[...] = atrest.init_thaw(self.n_machines)  # the thaw looks at every machine's state again
        try:  # device judgement (a checkpoint from before it: devices count as never seen until they answer)
            dv = checkpoint.load(path, STATE_VERSION, self.fingerprint, self._dev_arrays())
            for name, arr in self._dev_arrays().items():
                arr[...] = dv[name]
        except checkpoint.CheckpointError:
            self.dev_good[...] = -1
            self.dev_any[...] = -1
            self.dev_alarm_f[...] = 0.0
            self.dev_alarm_t[...] = 0
        try:  # the re-arm memory (a checkpoint from before it: no alarm remembered as recently closed)
            self.sig_rearm[...] = checkpoint.load(path, STATE_VERSION, self.fingerprint,
                                                  {"sig_rearm": self.sig_rearm})["sig_rearm"]
        except checkpoint.CheckpointError:
            self.sig_rearm[...] = rearm.init_state(self.n_signals)
        try:  # at-rest bands (a checkpoint from before them: each signal learns its rest again, ``warm_s``)
            self.rest_state[...] = checkpoint.load(path, STATE_VERSION, self.fingerprint,
                                                   {"rest_state": self.rest_state})["rest_state"]
        except checkpoint.CheckpointError:
            self.rest_state[...] = atrest.init_state(self.n_signals)
            try:  # bands saved before the start test's smoothed deviation (``atrest.DEV``): kept, DEV from 0
                old = self.rest_state[:, :atrest.DEV]
                self.rest_state[:, :atrest.DEV] = checkpoint.load(
                    path, STATE_VERSION, self.fingerprint, {"rest_state": np.empty_like(old)})["rest_state"]
            except checkpoint.CheckpointError:
                pass
        try:  # the running level's extremes (a checkpoint from before them: kept again from the next run on)
            self.rest_run[...] = checkpoint.load(path, STATE_VERSION, self.fingerprint,
                                                 {"rest_run": self.rest_run})["rest_run"]
        except checkpoint.CheckpointError:
            self.rest_run[...] = atrest.init_run_level(self.n_signals)
        try:  # slow trends (a checkpoint from before them: each signal learns its slopes again, ``trend.warmup``)
            self.trend_state[...] = checkpoint.load(path, STATE_VERSION, self.fingerprint,
                                                    {"trend_state": self.trend_state})["trend_state"]
        except checkpoint.CheckpointError:
            self.trend_state[...] = trend.init_state(self.n_signals)
            try:  # trends saved before the machine's common slope (``trend.ZC``): kept, ZC none until the next bin
                old = self.trend_state[:, :trend.ZC]
                self.trend_state[:, :trend.ZC] = checkpoint.load(
                    path, STATE_VERSION, self.fingerprint, {"trend_state": np.empty_like(old)})["trend_state"]
            except checkpoint.CheckpointError:
                pass
        self._trend_recount()
        self.likelihood_cold = any(a is None for a in lk_got.values())
        self._resumed = True
        self._silent_bound[0] = -np.inf  # last timestamps restored: the next check scans
        fresh = {"lk_state": likelihood.init_state(self.n_signals),
                 "lk_season": likelihood.init_season(self.n_signals, self.settings.likelihood.season_bins)}
        for name, arr in self._lk_arrays().items():
            a = lk_got[name]
            arr[...] = fresh[name] if a is None else a
        self._restore_machine_stage(path)

    def _dev_arrays(self) -> dict[str, np.ndarray]:
        return {"dev_good": self.dev_good, "dev_any": self.dev_any, "dev_alarm_f": self.dev_alarm_f,
                "dev_alarm_t": self.dev_alarm_t}

    def _refreeze(self) -> None:
        """The frozen column of ``cfg`` from the machines' states (after a restore; the kernel keeps it otherwise)."""
        self.cfg[:, signal_stack.C_FROZEN] = 0.0
        if self._off_mode != opstate.FREEZE:
            return
        for m in np.flatnonzero(np.isin(self.m_state[:self.n_machines], (opstate.OFF, opstate.IDLE))).tolist():
            self.cfg[self.st_sig[self.st_ptr[m]:self.st_ptr[m + 1]], signal_stack.C_FROZEN] = 1.0

    def _act_arrays(self) -> dict[str, np.ndarray]:
        """IDLE's learned state (``_init_activity``); its parameters come from the config, not the checkpoint."""
        return {"act_v": self.act_v, "act_i": self.act_i, "act_m_last": self.m_last}

    def _lk_arrays(self) -> dict[str, np.ndarray]:
        """The likelihood stage's state: saved always, restored each on its own (see ``restore``)."""
        return {"lk_state": self.lk_state, "lk_season": self.lk_season}

    @property
    def machine_ids(self) -> list[str]:
        """Machine names (from the plant table), or their indices as text when built without one."""
        return list(self._machine_ids) if self._machine_ids is not None else [str(m) for m in range(self.n_machines)]

    def _new_machine_stage(self) -> MachineStage:
        return MachineStage(self.n_signals, self.machine_of, self.m_ptr, self.m_sig, self.settings.machine,
                            machine_ids=self._machine_ids, base_dir=self._base_dir, models=self._machine_models)

    def _restore_machine_stage(self, path: Path) -> None:
        """The machine stage's own file (fitted baselines, their state); absent or unusable: that stage starts cold."""
        self.machine_cold = False
        try:
            with np.load(_machine_file(path), allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
            if (int(got.get("__version__", -1)) != MACHINE_STATE_VERSION
                    or str(got.get("__fingerprint__")) != self._machine_fp):
                raise ValueError("another layout or configuration")
            self.machine_stage.load_arrays(got)
            self.mach_top_open[...] = got["mach_top_open"]
        except (OSError, ValueError, KeyError) as exc:
            self.machine_cold = True
            self.machine_stage = self._new_machine_stage()
            self._machine_cold_reason = str(exc)

    def rebaseline(self, rows: np.ndarray) -> None:
        """Accept a confirmed change on signals ``rows``: their level, change and rate baselines learn afresh.

        Why: guarded learning (``level.guard``) keeps a persistent fault out of the baseline, so a change that is
        real and wanted (a new setpoint, a replaced sensor) stays in alarm until someone says it is the new normal.
        The signals go through warm-up and ``alarm_settle`` again (counted in samples; ``settle_s`` is not
        restarted: the signal has long covered the duty cycle); stuck statistics, data-quality and alarm state
        are kept, so an open alarm closes through its own hysteresis once the new baseline judges it normal.
        """
        rows = np.asarray(rows, dtype=np.int64)
        fresh = signal_stack.init_state(1)[0]
        keep = np.zeros(signal_stack.WIDTH, dtype=bool)
        keep[signal_stack.B_STUCK:signal_stack.B_STUCK + stuck.WIDTH] = True
        keep[signal_stack.B_RATE + rate.LAST_V] = keep[signal_stack.B_RATE + rate.LAST_TS] = True
        for r in rows.tolist():
            self.state[r, ~keep] = fresh[~keep]
        self.z_last[rows] = 0.0
        self.sig_rearm[rows] = rearm.init_state(rows.shape[0])  # a new baseline's first alarm is news
        self.rest_state[rows] = atrest.init_state(rows.size)  # the rest band learns afresh too
        self.rest_run[rows] = atrest.init_run_level(rows.size)  # and the running level
        self.trend_state[rows] = trend.init_state(rows.size)  # and the normal slope
        self._trend_recount()

    def _trend_recount(self) -> None:
        """Each machine's count of trending members and its members' slope z sum and count, from the signals' own
        columns (after a restore or re-baseline)."""
        hot = (self.trend_state[:, trend.HOT] != 0.0) & (self.trend_machine_of >= 0)
        self.trend_m_hot[...] = np.bincount(self.trend_machine_of[hot], minlength=self.trend_m_hot.size)
        c_hot = (self.trend_state[:, trend.HOT] != 0.0) & (self.trend_class_of >= 0)
        self.trend_c_hot[...] = np.bincount(self.trend_class_of[c_hot], minlength=self.trend_c_hot.size)
        zc = self.trend_state[:, trend.ZC]
        has = np.isfinite(zc) & (self.trend_machine_of >= 0)
        self.trend_m_zsum[...] = np.bincount(self.trend_machine_of[has], weights=zc[has],
                                             minlength=self.trend_m_zsum.size)
        self.trend_m_zn[...] = np.bincount(self.trend_machine_of[has], minlength=self.trend_m_zn.size)

    def reset(self) -> None:
        """Forget everything learned (cold start)."""
        self._init_state()
