"""Injected anomalies: a deterministic schedule drawn from the seed (plus an optional file), and labels.

The schedule is a pure function of (plant, seed, rate, faults file): every simulator process builds
it independently and applies only the events of its own signals, so no process has to tell another
what to inject, and the parent alone writes the labels file.

Random events are drawn window by window (``WINDOW_S`` of simulated time) from a generator seeded
with ``(seed, window)``: a window's events do not depend on how long the simulator has run, and the
schedule is unbounded in time without growing in memory (old windows are forgotten).

Labels (JSON lines, one object per event, written when the event starts so that a run's labels
never name data that was not served): ``kind``, ``signal`` (signal id) and ``machine``,
``start_ns`` and ``end_ns`` on the simulated clock (``epoch_ns + t_s * 1e9``), ``magnitude`` in the
signal's engineering unit (for ``stuck``: the held value; for ``dropout``: null) and ``source``
(``random`` or ``schedule``).

With ``--time-scale`` well above 1, an event shorter than a tick (a 2 s spike at an hour per tick)
falls between two ticks: it is labelled but no served sample shows it. Scorers should count an
event as detectable only if a sample of the signal falls inside [start_ns, end_ns).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import numpy as np

from plantwire.plant import SignalTable

if TYPE_CHECKING:
    from .physics import Physics


class Labelled(Protocol):
    """A scheduled fault that knows its start and its label (transport faults)."""

    start_s: float

    def label(self, table: SignalTable, epoch_ns: int) -> dict[str, object]: ...


__all__ = ["EventKind", "EventSchedule", "Events", "LabelWriter"]

WINDOW_S = 60.0
RUL_RECORDS_PER_LIFE = 50  # at least this many RUL labels over a wear life, however short


class EventKind(enum.StrEnum):
    """Signal anomalies. Their order is their uint8 code in ``Events.kind``."""

    SPIKE = "spike"
    STEP = "step"
    DRIFT = "drift"
    STUCK = "stuck"
    NOISE_BURST = "noise_burst"
    DROPOUT = "dropout"
    OSCILLATION = "oscillation"
    CALIBRATION_OFFSET = "calibration_offset"
    MICRO_LEAK = "micro_leak"  # on a leak-test station's decay_rate signal; magnitude in Pa/s


KIND_ORDER = list(EventKind)
SIGNAL_KINDS = KIND_ORDER[: KIND_ORDER.index(EventKind.MICRO_LEAK)]
MICRO_LEAK_RATE_FACTOR = 10.0  # micro-leaks per leak-test station relative to anomalies per signal
# (min, max) duration in simulated seconds, and magnitude in units of the signal's "scale".
_DURATION_S: dict[EventKind, tuple[float, float]] = {
    EventKind.SPIKE: (1.0, 2.5),
    EventKind.STEP: (60.0, 300.0),
    EventKind.DRIFT: (120.0, 600.0),
    EventKind.STUCK: (30.0, 300.0),
    EventKind.NOISE_BURST: (10.0, 60.0),
    EventKind.DROPOUT: (5.0, 60.0),
    EventKind.OSCILLATION: (30.0, 120.0),
    EventKind.CALIBRATION_OFFSET: (600.0, 3600.0),
    EventKind.MICRO_LEAK: (600.0, 3600.0),
}
_MAGNITUDE: dict[EventKind, tuple[float, float]] = {
    EventKind.SPIKE: (5.0, 10.0),
    EventKind.STEP: (2.0, 4.0),
    EventKind.DRIFT: (3.0, 6.0),
    EventKind.STUCK: (0.0, 0.0),
    EventKind.NOISE_BURST: (3.0, 6.0),
    EventKind.DROPOUT: (0.0, 0.0),
    EventKind.OSCILLATION: (1.5, 3.0),
    EventKind.CALIBRATION_OFFSET: (1.5, 3.0),
    EventKind.MICRO_LEAK: (20.0, 80.0),  # Pa/s, not in units of the signal scale
}
MAX_DURATION_S = max(hi for _, hi in _DURATION_S.values())


@dataclass(frozen=True, slots=True)
class Events:
    """Anomaly events as columns, sorted by start."""

    signal: np.ndarray  # int64 SignalTable row
    kind: np.ndarray  # uint8, KIND_ORDER index
    start_s: np.ndarray  # float64 simulated seconds since the epoch
    end_s: np.ndarray
    magnitude: np.ndarray  # float64, engineering units (0 where it does not apply)
    source: np.ndarray  # uint8: 0 random, 1 schedule file

    @staticmethod
    def empty() -> Events:
        z = np.zeros(0)
        return Events(z.astype(np.int64), z.astype(np.uint8), z, z, z, z.astype(np.uint8))

    def __len__(self) -> int:
        return int(self.signal.size)

    def select(self, mask: np.ndarray) -> Events:
        return Events(self.signal[mask], self.kind[mask], self.start_s[mask], self.end_s[mask],
                      self.magnitude[mask], self.source[mask])

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        if not parts:
            return Events.empty()
        ev = Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                      ("signal", "kind", "start_s", "end_s", "magnitude", "source")))
        order = np.argsort(ev.start_s, kind="stable")
        return ev.select(order)


def signal_scale(table: SignalTable) -> np.ndarray:
    """A typical excursion per signal, the unit anomaly magnitudes are drawn in."""
    span = np.where(np.isfinite(table.high - table.low), table.high - table.low, 0.0)
    return np.maximum.reduce([table.amplitude, 4.0 * table.noise, 0.02 * np.abs(table.base), 0.01 * span,
                              np.full(len(table), 1e-3)])


class EventSchedule:
    """Anomalies drawn from ``seed`` at ``rate_per_h`` events per eligible signal per hour, plus ``fixed``."""

    def __init__(self, table: SignalTable, seed: int, rate_per_h: float, fixed: Events | None = None) -> None:
        self.table = table
        self.seed = int(seed)
        self.rate_per_h = float(rate_per_h)
        self.fixed = fixed if fixed is not None else Events.empty()
        analog = (table.amplitude > 0) | (table.noise > 0)
        state = np.array([k == "state" for k in table.kinds], dtype=bool)
        self.eligible = np.flatnonzero(analog & ~state)
        self.leak_rows = np.array([r for r, sid in enumerate(table.ids) if sid.endswith(".decay_rate")], np.int64)
        self.scale = signal_scale(table)
        self._windows: dict[int, Events] = {}

    def add_fixed(self, events: Events) -> None:
        """Add events on command (control API); every process adds the same ones."""
        self.fixed = Events.concat([self.fixed, events])

    def window(self, w: int) -> Events:
        """Random events whose start falls in window ``w`` ([w, w+1) * WINDOW_S)."""
        cached = self._windows.get(w)
        if cached is not None:
            return cached
        if w < 0 or self.rate_per_h <= 0 or self.eligible.size == 0:
            ev = Events.empty()
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xFA017, w]))
            n = int(rng.poisson(self.rate_per_h * self.eligible.size * WINDOW_S / 3600.0))
            signal = rng.choice(self.eligible, size=n)
            kind = rng.integers(0, len(SIGNAL_KINDS), size=n).astype(np.uint8)
            if self.leak_rows.size:
                nl = int(rng.poisson(self.rate_per_h * MICRO_LEAK_RATE_FACTOR * self.leak_rows.size * WINDOW_S / 3600))
                signal = np.concatenate([signal, rng.choice(self.leak_rows, size=nl)])
                kind = np.concatenate([kind, np.full(nl, KIND_ORDER.index(EventKind.MICRO_LEAK), np.uint8)])
                n += nl
            start = (w + rng.random(n)) * WINDOW_S
            dur_lo = np.array([_DURATION_S[KIND_ORDER[k]][0] for k in kind.tolist()])
            dur_hi = np.array([_DURATION_S[KIND_ORDER[k]][1] for k in kind.tolist()])
            mag_lo = np.array([_MAGNITUDE[KIND_ORDER[k]][0] for k in kind.tolist()])
            mag_hi = np.array([_MAGNITUDE[KIND_ORDER[k]][1] for k in kind.tolist()])
            duration = dur_lo + (dur_hi - dur_lo) * rng.random(n)
            sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
            magnitude = sign * (mag_lo + (mag_hi - mag_lo) * rng.random(n)) * self.scale[signal]
            leak = kind == KIND_ORDER.index(EventKind.MICRO_LEAK)
            magnitude[leak] = mag_lo[leak] + (mag_hi[leak] - mag_lo[leak]) * rng.random(int(leak.sum()))
            order = np.argsort(start, kind="stable")
            ev = Events(signal.astype(np.int64), kind, start, start + duration, magnitude,
                        np.zeros(n, np.uint8)).select(order)
        self._windows[w] = ev
        for old in [k for k in self._windows if k < w - math.ceil(MAX_DURATION_S / WINDOW_S) - 2]:
            del self._windows[old]
        return ev

    def starting(self, t0_s: float, t1_s: float) -> Events:
        """Events (random and fixed) that start in [t0_s, t1_s), sorted by start."""
        parts = [self.window(w) for w in range(math.floor(t0_s / WINDOW_S), math.floor(t1_s / WINDOW_S) + 1)]
        parts.append(self.fixed)
        ev = Events.concat(parts)
        return ev.select((ev.start_s >= t0_s) & (ev.start_s < t1_s))

    def active(self, t_s: float) -> Events:
        """Events in progress at ``t_s`` (start <= t_s < end)."""
        w = math.floor(t_s / WINDOW_S)
        back = math.ceil(MAX_DURATION_S / WINDOW_S) + 1
        parts = [self.window(k) for k in range(w - back, w + 1)]
        parts.append(self.fixed)
        ev = Events.concat([p for p in parts if len(p)])
        return ev.select((ev.start_s <= t_s) & (t_s < ev.end_s))


class LabelWriter:
    """Appends the ground truth of every event to a JSONL file as its start is reached."""

    def __init__(self, path: Path | None, table: SignalTable, schedule: EventSchedule, epoch_ns: int,
                 clean_at: object = None, physics: Physics | None = None, transport: Sequence[Labelled] = (),
                 rul_period_s: float = 60.0) -> None:
        self.path = path
        self.physics = physics
        self.transport = list(transport)
        self._transport_done = [False] * len(self.transport)
        self.rul_period_s = rul_period_s
        nw = len(physics.wear.machine) if physics is not None else 0
        self._wear_started = np.zeros(nw, dtype=bool)
        self._wear_failed = np.zeros(nw, dtype=bool)
        self._next_rul = np.zeros(nw)
        self.table = table
        self.schedule = schedule
        self.epoch_ns = int(epoch_ns)
        self._clean_at = clean_at
        self._done_s = 0.0
        self._fh: IO[str] | None = None
        self.written = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", buffering=1)

    def add_transport(self, fault: Labelled) -> None:
        self.transport.append(fault)
        self._transport_done.append(False)

    def ns(self, t_s: float) -> int:
        return self.epoch_ns + round(t_s * 1e9)

    def advance(self, t_s: float) -> int:
        """Write the labels of events that started up to and including ``t_s``; returns how many."""
        if t_s < self._done_s:
            return 0
        ev = self.schedule.starting(self._done_s, np.nextafter(t_s, np.inf))
        self._done_s = float(np.nextafter(t_s, np.inf))
        before = self.written
        for i in range(len(ev)):
            self.write(self.record(ev, i))
        self._advance_wear(t_s)
        for i, fault in enumerate(self.transport):
            if not self._transport_done[i] and fault.start_s <= t_s:
                self._transport_done[i] = True
                self.write(fault.label(self.table, self.epoch_ns))
        return self.written - before

    def _advance_wear(self, t_s: float) -> None:
        """Wear start (with the true RUL), RUL every ``rul_period_s`` (or life/50 if shorter), and the failure."""
        if self.physics is None:
            return
        w = self.physics.wear
        for i in range(len(w.machine)):
            machine = self.table.machine_ids[int(w.machine[i])]
            start, fail = float(w.start_s[i]), float(w.failure_s[i])
            if not self._wear_started[i] and start <= t_s:
                self._wear_started[i] = True
                self._next_rul[i] = start
                self.write({"kind": "wear", "machine": machine, "start_ns": self.ns(start), "end_ns": self.ns(fail),
                            "rul_s": fail - start, "source": "schedule" if w.fixed[i] else "random"})
            while self._wear_started[i] and self._next_rul[i] <= min(t_s, fail) and self._next_rul[i] < fail:
                at = float(self._next_rul[i])
                self.write({"kind": "rul", "machine": machine, "ts_ns": self.ns(at), "rul_s": fail - at,
                            "health": (at - start) / (fail - start)})
                # records missed while the writer was behind (slow start-up) are written late, not skipped
                self._next_rul[i] = at + max(1.0, min(self.rul_period_s, (fail - start) / RUL_RECORDS_PER_LIFE))
            if not self._wear_failed[i] and fail <= t_s:
                self._wear_failed[i] = True
                self.write({"kind": "failure", "machine": machine, "start_ns": self.ns(fail),
                            "end_ns": self.ns(fail + float(w.repair_s[i])), "rul_s": 0.0})

    def record(self, ev: Events, i: int) -> dict[str, object]:
        row = int(ev.signal[i])
        kind = KIND_ORDER[int(ev.kind[i])]
        magnitude: float | None = float(ev.magnitude[i])
        if kind is EventKind.DROPOUT:
            magnitude = None
        elif kind is EventKind.STUCK and callable(self._clean_at):
            magnitude = float(self._clean_at(np.array([ev.start_s[i]]), np.array([row]))[0])
        return {
            "kind": str(kind),
            "signal": self.table.ids[row],
            "machine": self.table.machine_ids[int(self.table.machine[row])],
            "start_ns": self.ns(float(ev.start_s[i])),
            "end_ns": self.ns(float(ev.end_s[i])),
            "magnitude": magnitude,
            "source": "schedule" if ev.source[i] else "random",
        }

    def write(self, record: dict[str, object]) -> None:
        self.written += 1
        if self._fh is not None:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
