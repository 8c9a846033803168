"""The edge's analytics in one object: the detector stack, the health/RUL estimator, their checkpoints.

Why a facade: ``edge/app.py`` should need four calls -- build, ``process`` each frame, ``tick`` on a
timer, ``close`` on shutdown -- and no knowledge of state arrays, model files or checkpoint layouts.

- ``EdgeAnalytics.from_table(table, settings, state_dir=..., base_dir=...)`` builds the stack from the
  plant's signal table, loads the RUL model if ``settings.health`` is set (relative model paths against
  ``base_dir``, the config folder), and resumes both from ``state_dir/detectors.npz`` and
  ``state_dir/health.npz`` when they fit; ``cold_reasons`` says why not (log it once).
- ``process(ts_ns, signal, value, quality)`` -> ``StackResult`` (views valid until the next call).
- ``tick(now_s)`` -> ``HealthResult | None``: every ``health.period_s`` the machines the model covers
  are estimated from the latest value of each input signal, and their HEALTH alarms advanced; also
  saves the checkpoints every ``checkpoint_interval_s``. Call it from the batch loop (cheap when idle).
- ``close()`` saves the checkpoints (on SIGTERM, after the last frame).
Counters for the metrics endpoint live in ``stats`` (plain ints, no registry dependency).
Model inputs are matched to signals by the signal's name within its machine (the part of the id after
``<machine id>.``), through ``health.inputs`` where the names differ; a machine lacking an input gets -1
for it and reports NaN until it has all of them (the model is never fed invented values).
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.detectors import checkpoint
from edge.detectors.checkpoint import CheckpointError
from edge.detectors.events import EVENT_DTYPE, EventColumns, Phase, Scope
from edge.detectors.machine import take_rebaseline_request
from edge.detectors.settings import AnalyticsSettings
from edge.detectors.stack import DetectorStack, StackResult
from edge.kernels import alarms
from edge.kernels.kinds import Kind
from edge.models.machine import MachineModelError
from edge.pdm.rul import RulEstimator, RulModel, RulModelError
from plantwire.plant import SignalTable

log = logging.getLogger(__name__)

DETECTORS_FILE = "detectors.npz"
HEALTH_FILE = "health.npz"
HEALTH_STATE_VERSION = 1


class AnalyticsConfigError(Exception):
    """Analytics settings that cannot be applied to this plant (model unreadable, no machine matches)."""


@dataclass(frozen=True, slots=True)
class HealthResult:
    """One health tick; arrays are copies, one row per covered machine."""

    ts_ns: int
    machine: np.ndarray  # int64 index into SignalTable.machine_ids
    health: np.ndarray  # [0, 1], NaN until all inputs were seen
    rul: np.ndarray  # ticks of the model (duty cycles)
    rul_low: np.ndarray
    rul_high: np.ndarray
    events: np.ndarray  # EVENT_DTYPE, scope MACHINE, kind HEALTH


@dataclass
class AnalyticsStats:
    frames: int = 0
    samples: int = 0
    events: int = 0
    events_dropped: int = 0
    health_ticks: int = 0
    checkpoints_saved: int = 0
    checkpoint_errors: int = 0


@dataclass
class _Health:
    est: RulEstimator
    machines: np.ndarray
    alarm_f: np.ndarray
    alarm_t: np.ndarray
    alarm_p: np.ndarray
    events: EventColumns
    period_s: float
    next_s: float = field(default=-np.inf)


class EdgeAnalytics:
    """Owns a ``DetectorStack`` and optionally a ``RulEstimator`` for one gateway's signal table."""

    def __init__(self, stack: DetectorStack, settings: AnalyticsSettings, state_dir: Path | None,
                 health: _Health | None) -> None:
        self.stack = stack
        self.settings = settings
        self.state_dir = state_dir
        self._health = health
        self.stats = AnalyticsStats()
        self.cold_reasons: list[str] = []
        self._next_ckpt_s = -np.inf
        # Latest usable value per signal, for the health model (NaN = never seen); only kept when needed.
        self.x_last = np.full(stack.n_signals, np.nan) if health is not None else None

    @classmethod
    def from_table(cls, table: SignalTable, settings: AnalyticsSettings | None = None, *,
                   state_dir: Path | None = None, base_dir: Path | None = None) -> EdgeAnalytics:
        """Build for a plant; raises ``AnalyticsConfigError`` if the health model cannot be used."""
        s = settings or AnalyticsSettings()
        try:
            stack = DetectorStack.from_table(table, s, base_dir=base_dir)
        except MachineModelError as exc:
            raise AnalyticsConfigError(f"machine.models: {exc}") from exc
        health = _build_health(table, s, base_dir) if s.health is not None else None
        self = cls(stack, s, state_dir, health)
        if state_dir is not None:
            self._restore()
        return self

    # -- hot path ------------------------------------------------------------------------------

    def process(self, ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray) -> StackResult:
        """Score, learn and alarm one frame (``edge.frames.Frame`` columns)."""
        r = self.stack.process(signal, value, quality, ts_ns)
        if self.x_last is not None:
            ok = (quality != 2) & np.isfinite(value)
            self.x_last[signal[ok]] = value[ok]
        self.stats.frames += 1
        self.stats.samples += int(signal.shape[0])
        self.stats.events += int(r.events.shape[0])
        self.stats.events_dropped += r.events_dropped
        return r

    def tick(self, now_s: float, now_ns: int | None = None) -> HealthResult | None:
        """Health estimate when its period is due, and a checkpoint when due; otherwise nothing."""
        out = None
        h = self._health
        if h is not None and now_s >= h.next_s:
            h.next_s = now_s + h.period_s
            out = self._health_tick(h, int(now_s * 1e9) if now_ns is None else now_ns)
        if self.state_dir is not None:
            self._poll_rebaseline()
        if self.state_dir is not None and now_s >= self._next_ckpt_s:
            if np.isfinite(self._next_ckpt_s):
                self.save()
            self._next_ckpt_s = now_s + self.settings.checkpoint_interval_s
        return out

    def _poll_rebaseline(self) -> None:
        """A confirmed change (``plantwire rebaseline``): the named machines drop their baseline and refit."""
        assert self.state_dir is not None
        ids = self.stack.machine_ids
        machines = take_rebaseline_request(self.state_dir, ids)
        if machines:
            self.stack.machine_stage.rebaseline(machines)
            log.info("machine stage: re-baselining %s", ", ".join(ids[m] for m in machines))

    def _health_tick(self, h: _Health, ts_ns: int) -> HealthResult:
        assert self.x_last is not None
        res = h.est.update(self.x_last, h.machines)
        n = h.machines.shape[0]
        score = np.where(np.isfinite(res[:, 0]), 1.0 - res[:, 0], 0.0)
        ts = np.full(n, ts_ns, dtype=np.int64)
        kind = np.full(n, int(Kind.HEALTH), dtype=np.uint8)
        n_ev = alarms.alarm_chunk(ts, h.machines, score, kind, n, h.alarm_f, h.alarm_t, h.alarm_p,
                                  *h.events.kernel_args())
        cap = h.events.entity.shape[0]
        ev = h.events.take(min(n_ev, cap), Scope.MACHINE) if n_ev else np.empty(0, dtype=EVENT_DTYPE)
        self.stats.events_dropped += max(n_ev - cap, 0)
        self.stats.events += int(ev.shape[0])
        self.stats.health_ticks += 1
        return HealthResult(ts_ns, h.machines.copy(), res[:, 0].copy(), res[:, 1].copy(), res[:, 2].copy(),
                            res[:, 3].copy(), ev)

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self) -> None:
        """Save all learned state; a failure is counted and re-raised (the caller logs it once)."""
        if self.state_dir is None:
            return
        try:
            self.stack.save(self.state_dir / DETECTORS_FILE)
            if self._health is not None:
                h = self._health
                checkpoint.save(self.state_dir / HEALTH_FILE, HEALTH_STATE_VERSION, h.est.fingerprint,
                                _health_arrays(h))
        except OSError:
            self.stats.checkpoint_errors += 1
            raise
        self.stats.checkpoints_saved += 1

    def close(self) -> None:
        self.save()

    def alarm_open(self, key: str) -> bool:
        """Whether the detectors hold an alarm open: ``s<signal>``, ``m<machine>`` (multivariate), ``h<machine>``
        (health) or ``d<device>`` (a PLC's); the alarm layer asks after a restart and at every tick
        (``edge.alarms.engine.IncidentEngine.reconcile``, ``resync``)."""
        i = int(key[1:])
        if key[0] == "s":
            return bool(self.stack.sig_alarm_f[i, alarms.ACTIVE] > 0)
        if key[0] == "m":
            return bool(self.stack.mach_alarm_f[i, alarms.ACTIVE] > 0)
        if key[0] == "d":  # a DEVICE alarm (one per PLC or server without a good poll)
            return bool(self.stack.dev_alarm_f[i, alarms.ACTIVE] > 0)
        h = self._health
        if h is None:
            return False
        pos = np.flatnonzero(h.machines == i)
        return bool(pos.size and h.alarm_f[pos[0], alarms.ACTIVE] > 0)

    def open_alarms(self) -> np.ndarray:
        """Every alarm the detectors hold open now, as OPEN event rows (``ts_start`` when it opened, ``kind`` its
        kind at the peak so far, ``peak``; ``top`` unknown): the alarm layer compares them with its incidents
        every 10 s and after a restart (``IncidentEngine.recover``) to recover an OPEN it never saw. One pass over
        the alarm states' ``active`` columns (15,000 signals: tens of microseconds)."""
        st = self.stack
        parts = [_open_rows(st.sig_alarm_f, st.sig_alarm_t, None, Scope.SIGNAL, None),
                 _open_rows(st.mach_alarm_f, st.mach_alarm_t, None, Scope.MACHINE, Kind.MACHINE),
                 _open_rows(st.dev_alarm_f, st.dev_alarm_t, None, Scope.DEVICE, Kind.DEVICE)]
        if self._health is not None:
            h = self._health
            parts.append(_open_rows(h.alarm_f, h.alarm_t, h.machines, Scope.MACHINE, Kind.HEALTH))
        return np.concatenate(parts)

    def _restore(self) -> None:
        assert self.state_dir is not None
        try:
            self.stack.restore(self.state_dir / DETECTORS_FILE)
        except CheckpointError as exc:
            self.cold_reasons.append(f"detectors start cold: {exc}")
        else:
            if self.stack.machine_cold and self.settings.machine.enabled:
                self.cold_reasons.append("machine stage starts cold: no usable baseline in the checkpoint "
                                         "(it records and fits again; the other detectors resume warm)")
            if self.stack.likelihood_cold and self.settings.likelihood.mode != "off":
                self.cold_reasons.append("likelihood stage starts cold: the checkpoint has no state for its settings "
                                         "(the other detectors resume warm)")
        if self._health is not None:
            h = self._health
            try:
                got = checkpoint.load(self.state_dir / HEALTH_FILE, HEALTH_STATE_VERSION, h.est.fingerprint,
                                      _health_arrays(h))
                for name, arr in _health_arrays(h).items():
                    arr[...] = got[name]
            except CheckpointError as exc:
                self.cold_reasons.append(f"health starts cold: {exc}")


def _open_rows(f: np.ndarray, t: np.ndarray, entities: np.ndarray | None, scope: Scope, kind: Kind | None
               ) -> np.ndarray:
    """OPEN rows of the active alarms in one alarm state (``edge.kernels.alarms`` layout)."""
    act = np.flatnonzero(f[:, alarms.ACTIVE] > 0)
    out = np.zeros(act.size, dtype=EVENT_DTYPE)
    out["ts_start"] = t[act, alarms.T_START]
    out["ts_end"] = -1
    out["entity"] = act if entities is None else entities[act]
    out["scope"] = scope
    out["phase"] = Phase.OPEN
    out["kind"] = f[act, alarms.PEAK_KIND] if kind is None else int(kind)
    out["peak"] = f[act, alarms.PEAK]
    out["top"] = -1
    return out


def _health_arrays(h: _Health) -> dict[str, np.ndarray]:
    return {"state": h.est.state, "alarm_f": h.alarm_f, "alarm_t": h.alarm_t}


def _build_health(table: SignalTable, s: AnalyticsSettings, base_dir: Path | None) -> _Health:
    hs = s.health
    assert hs is not None
    path = hs.model if hs.model.is_absolute() or base_dir is None else base_dir / hs.model
    try:
        model = RulModel.load(path)
    except RulModelError as exc:
        raise AnalyticsConfigError(f"health.model: {exc}") from exc
    covered = [i for i, m in enumerate(table.machine_ids) if any(fnmatch.fnmatchcase(m, p) for p in hs.machines)]
    if not covered:
        raise AnalyticsConfigError(f"health.machines: no machine matches {hs.machines}")
    n_machines = len(table.machine_ids)
    by_name: dict[tuple[int, str], int] = {}
    for idx, (sid, m) in enumerate(zip(table.ids, table.machine.tolist(), strict=True)):
        prefix = table.machine_ids[m] + "."
        by_name[(m, sid[len(prefix):] if sid.startswith(prefix) else sid)] = idx
    names = [hs.inputs.get(n, n) for n in model.input_names()]
    inputs = np.full((n_machines, model.n_inputs), -1, dtype=np.int64)
    for m in covered:
        for i, name in enumerate(names):
            inputs[m, i] = by_name.get((m, name), -1)
    if not (inputs[covered] >= 0).all(axis=1).any():
        raise AnalyticsConfigError(f"health: no covered machine has all model inputs {names}")
    est = RulEstimator(model, n_machines, inputs)
    alarm_f, alarm_t = alarms.init_state(n_machines)
    a = hs.alarm
    return _Health(est, np.array(covered, dtype=np.int64), alarm_f, alarm_t,
                   alarms.make_params(a.on_threshold, a.off_threshold, a.on_count, a.off_count),
                   EventColumns(max(len(covered), 1)), hs.period_s)
