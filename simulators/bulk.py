"""Many ticks of a :class:`~simulators.signals.SignalModel` at once, for the bench scripts.

``SignalModel.step`` serves one tick to the Modbus/OPC-UA servers; the bench scripts
(``bench/sim_eval.py``, ``bench/alarm_eval.py``) need hundreds of thousands of ticks of the whole
plant, where the per-tick Python (the anomaly schedule's ``active`` rebuilt every tick, a dozen numpy
calls on 15,000 rows each, the physics' fancy indexing) cost more than the detector stack itself.
``BlockGenerator.block`` computes a block of ticks as one ``(ticks, signals)`` array: the clean shape
and the physics are evaluated once over the whole block (the physics is closed-form in time, so a block
is the same arithmetic as its ticks one by one), the anomalies active anywhere in the block are looked
up once and applied per event over the ticks they cover.

Same values, bit for bit (``tests/test_sim_bulk.py``): every element goes through the same float
operations in the same order as in ``SignalModel.step`` -- the noise of tick ``k`` is still drawn from
its own generator seeded with ``(seed, key, k)``, followed by that tick's noise-burst draws; several
anomalies on one sample are applied in the schedule's order, kind group by kind group as
``apply_events`` does. Only the generation loop lives here: physics and fault models stay in
``simulators.physics``, ``simulators.faults`` and ``simulators.signals`` (micro-leaks call
``Physics.micro_leak`` per tick, exactly as ``apply_events`` does).
"""

from __future__ import annotations

import enum
import math
import threading

import numpy as np

from .faults import MAX_DURATION_S, WINDOW_S, EventKind, Events, EventSchedule
from .signals import OSCILLATION_PERIOD_S, SignalModel

__all__ = ["BlockGenerator"]


class Default(enum.Enum):
    """The model's own anomaly schedule (``block``'s default)."""

    MODEL = 0


DEFAULT = Default.MODEL

_KIND = {k: i for i, k in enumerate(EventKind)}
_ADDITIVE = (_KIND[EventKind.SPIKE], _KIND[EventKind.STEP], _KIND[EventKind.CALIBRATION_OFFSET])


class BlockGenerator:
    """``block(ticks, t_s)``: the values ``model.step(k, t)`` would give, one row per tick, in one array.

    The returned array is a view of a buffer reused by the next call (at most ``max_ticks`` rows).
    """

    def __init__(self, model: SignalModel, max_ticks: int = 60, lock: threading.Lock | None = None,
                 columns: np.ndarray | None = None) -> None:
        """``columns``: positions in the model's rows to compute (default all): the values of those columns of
        the whole model (the noise of every row is still drawn, so that each column sees its own draw)."""
        self.model = model
        # EventSchedule caches its windows in a dict it prunes: generators of one model in several threads
        # share a lock around the schedule look-up (the rest only reads the model and the physics).
        self._lock = lock if lock is not None else threading.Lock()
        self.max_ticks = int(max_ticks)
        n = len(model)
        self._all = columns is None
        cols = np.arange(n, dtype=np.int64) if columns is None else np.asarray(columns, dtype=np.int64)
        self.columns = cols
        self._col_of = np.full(n, -1, dtype=np.int64)  # model position -> column (-1: not computed here)
        self._col_of[cols] = np.arange(cols.size)
        self._omega, self._phase = model.omega[cols], model.phase[cols]
        self._amplitude, self._base, self._noise = model.amplitude[cols], model.base[cols], model.noise[cols]
        self._low, self._high = model.low[cols], model.high[cols]
        resolution = np.ones(n)
        resolution[model._quantised] = model.resolution
        self._quantised = np.flatnonzero(self._noise > 0)
        self._resolution = resolution[cols][self._quantised]
        self._noise_all = np.empty(n)
        self._values = np.empty((self.max_ticks, cols.size))
        self._scratch = np.empty((self.max_ticks, cols.size))
        phys = model.physics
        # Rows with a physics role, tiled over the block once (Physics.evaluate takes one time per row).
        self._phys_rows = np.empty(0, dtype=np.int64)
        if phys is not None:
            self._phys_pos = np.flatnonzero(phys.role[model.rows[cols]] != 0)
            self._phys_rows = model.rows[cols][self._phys_pos]
        self._tiled: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- the anomaly schedule over a block ------------------------------------------------------
    def _candidates(self, schedule: EventSchedule, t_first: float, t_last: float) -> Events:
        """Events that may be active at some time in [t_first, t_last], in ``EventSchedule.active``'s order.

        ``active(t)`` concatenates the windows ``w(t) - back .. w(t)`` and the fixed events and sorts them
        stably by start; a wider range of windows concatenated the same way sorts any two events in the same
        relative order, and the extra windows' events have ended before the block's later ticks.
        """
        s = schedule
        back = math.ceil(MAX_DURATION_S / WINDOW_S) + 1
        w0, w1 = math.floor(t_first / WINDOW_S), math.floor(t_last / WINDOW_S)
        parts = [s.window(k) for k in range(w0 - back, w1 + 1)]
        parts.append(s.fixed)
        ev = Events.concat([p for p in parts if len(p)])
        return ev.select((ev.start_s <= t_last) & (t_first < ev.end_s))

    def _events(self, schedule: EventSchedule | None, t: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """(active[e, j], pos, kind, magnitude, start, end, signal) of our events in progress in the block."""
        m = self.model
        if schedule is None:
            return None
        with self._lock:
            ev = self._candidates(schedule, float(t[0]), float(t[-1]))
        if len(ev) == 0:
            return None
        pos = m.position[ev.signal]
        mine = pos >= 0
        if not mine.any():
            return None
        pos, kind, mag = pos[mine], ev.kind[mine], ev.magnitude[mine]
        start, end, sig = ev.start_s[mine], ev.end_s[mine], ev.signal[mine]
        # active[e, j]: event e is in progress at tick j (start <= t < end), as EventSchedule.active selects
        active = (start[:, None] <= t[None, :]) & (t[None, :] < end[:, None])
        return active, self._col_of[pos], kind, mag, start, end, sig

    def _apply(self, v: np.ndarray, t: np.ndarray, ev: tuple[np.ndarray, ...],
               bursts: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """``SignalModel.apply_events`` over the block: kind group by kind group, events in schedule order.

        ``pos`` is the event's column here (-1: a row of the model this generator does not compute)."""
        m = self.model
        active, pos, kind, mag, start, end, sig = ev
        events = [e for e in range(kind.size) if pos[e] >= 0]
        for e in events:  # spikes, steps, calibration offsets (np.add.at applies them in this order)
            if kind[e] in _ADDITIVE:
                v[np.flatnonzero(active[e]), pos[e]] += mag[e]
        for e in events:
            if kind[e] == _KIND[EventKind.DRIFT]:
                j = np.flatnonzero(active[e])
                frac = np.clip((t[j] - start[e]) / np.maximum(end[e] - start[e], 1e-9), 0.0, 1.0)
                v[j, pos[e]] += mag[e] * frac
        for e in events:
            if kind[e] == _KIND[EventKind.OSCILLATION]:
                j = np.flatnonzero(active[e])
                v[j, pos[e]] += mag[e] * np.sin(2.0 * np.pi * (t[j] - start[e]) / OSCILLATION_PERIOD_S)
        for j, p, delta in bursts:
            np.add.at(v[j], p, delta)
        for e in events:
            if kind[e] == _KIND[EventKind.STUCK]:
                j = np.flatnonzero(active[e])
                if j.size:
                    v[j, pos[e]] = m.clean_at(start[e : e + 1], sig[e : e + 1])[0]
        leak = kind == _KIND[EventKind.MICRO_LEAK]
        if leak.any():
            for j in np.flatnonzero(active[leak].any(axis=0)).tolist():
                sel = leak & active[:, j]
                if m.physics is not None:
                    rows, delta = m.physics.micro_leak(float(t[j]), m.table.machine[sig[sel]], mag[sel])
                    p = m.position[rows]
                    c = np.where(p >= 0, self._col_of[np.maximum(p, 0)], -1)
                    np.add.at(v[j], c[c >= 0], delta[c >= 0])
                else:
                    c = pos[sel]
                    np.add.at(v[j], c[c >= 0], mag[sel][c >= 0])
        for e in events:
            if kind[e] == _KIND[EventKind.DROPOUT]:
                v[np.flatnonzero(active[e]), pos[e]] = np.nan

    # -- the block ---------------------------------------------------------------------------------
    def block(self, ticks: np.ndarray, t_s: np.ndarray, schedule: EventSchedule | Default | None = DEFAULT
              ) -> np.ndarray:
        """Values at ticks ``ticks`` (simulated times ``t_s``), shape ``(len(ticks), signals)``; reused buffer.

        ``schedule``: the anomalies to apply (default: the model's own ``schedule``; ``None``: none). Passing it
        here instead of setting ``model.schedule`` lets two generators of one model work in two threads.
        """
        m = self.model
        sched = m.schedule if isinstance(schedule, Default) else schedule
        ticks = np.asarray(ticks, dtype=np.int64)
        t = np.asarray(t_s, dtype=np.float64)
        b = int(t.size)
        if b == 0 or b > self.max_ticks or ticks.size != b:
            raise ValueError(f"block of {ticks.size} ticks and {b} times; 1 to {self.max_ticks}")
        n = int(self.columns.size)
        v = self._values[:b]
        tmp = self._scratch[:b]
        np.multiply(self._omega[None, :], t[:, None], out=tmp)
        np.add(tmp, self._phase, out=tmp)
        np.sin(tmp, out=tmp)
        np.multiply(tmp, self._amplitude, out=tmp)
        np.add(tmp, self._base, out=v)
        if m.physics is not None and self._phys_rows.size:
            rows, where = self._tiled_rows(b, n)
            flat = v.reshape(-1)
            sub = flat[where]
            m.physics.evaluate(np.repeat(t, self._phys_rows.size), rows, sub)
            flat[where] = sub
        ev = self._events(sched, t)
        burst_of: list[np.ndarray | None] = [None] * b
        if ev is not None:
            active, kind = ev[0], ev[2]
            is_burst = kind == _KIND[EventKind.NOISE_BURST]
            if is_burst.any():
                for j in np.flatnonzero(active[is_burst].any(axis=0)).tolist():
                    burst_of[j] = np.flatnonzero(is_burst & active[:, j])
        bursts: list[tuple[int, np.ndarray, np.ndarray]] = []
        for j in range(b):
            rng = m.rng(int(ticks[j]))
            if self._all:
                rng.standard_normal(out=tmp[j])
            else:  # every row's draw, in order, then ours
                rng.standard_normal(out=self._noise_all)
                np.take(self._noise_all, self.columns, out=tmp[j])
            e = burst_of[j]
            if e is not None:  # this tick's burst draws follow its noise on the same generator
                assert ev is not None
                delta = ev[3][e] * rng.standard_normal(int(e.size))
                c = ev[1][e]
                bursts.append((j, c[c >= 0], delta[c >= 0]))
        np.multiply(tmp, self._noise, out=tmp)
        np.add(v, tmp, out=v)
        if ev is not None:
            self._apply(v, t, ev, bursts)
        np.clip(v, self._low, self._high, out=v)
        q = self._quantised
        if q.size:
            v[:, q] = np.rint(v[:, q] / self._resolution) * self._resolution
        return v

    def _tiled_rows(self, b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        got = self._tiled.get(b)
        if got is None:
            rows = np.tile(self._phys_rows, b)
            where = (np.arange(b, dtype=np.int64)[:, None] * n + self._phys_pos[None, :]).reshape(-1)
            got = self._tiled[b] = (rows, where)
        return got
