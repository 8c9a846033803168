"""Signal values per tick, vectorised over every signal a process serves, with injected anomalies.

Determinism (issue 3 item 5): the value of a signal at tick ``k`` depends only on the seed, the
plant, the tick and the set of signals generated together (``key``, the first device index of the
set): noise is drawn from a generator seeded with ``(seed, key, k)``, so a restarted or skipped
tick reproduces the same numbers, and every process draws only for its own signals.

Clean shape (before anomalies): ``base + amplitude * sin(2 pi t / period + phase) + noise * N(0, 1)``
clipped to ``[low, high]`` and quantised to a sensor resolution (the power of ten just below a
quarter of the noise; noise-free signals are left exact), with a per-signal phase drawn from the
seed so that equal signals of different machines do not move in lock-step. Physics per template
(coupling, duty cycles) lives in ``simulators.physics`` and replaces the clean shape where a
template has a model.

Anomalies come from an :class:`simulators.faults.EventSchedule`; every process builds the same
schedule from the seed and applies the events of its own signals (see ``apply_events``).
"""

from __future__ import annotations

import numpy as np

from plantwire.plant import SignalTable

from .faults import EventKind, EventSchedule
from .physics import Physics

__all__ = ["SignalModel"]

_KIND = {k: i for i, k in enumerate(EventKind)}
OSCILLATION_PERIOD_S = 5.0


class SignalModel:
    """Values of ``rows`` of a SignalTable as a function of (tick, simulated time)."""

    def __init__(self, table: SignalTable, rows: np.ndarray, seed: int, schedule: EventSchedule | None = None,
                 physics: Physics | None = None) -> None:
        self.table = table
        self.physics = physics
        self.rows = np.asarray(rows, dtype=np.int64)
        self.seed = int(seed)
        self.key = int(table.device[self.rows].min()) if self.rows.size else 0
        self.schedule = schedule
        self.base = table.base[self.rows].copy()
        self.amplitude = table.amplitude[self.rows].copy()
        self.omega = 2.0 * np.pi / table.period_s[self.rows]
        phase_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EED]))
        self.phase_all = phase_rng.uniform(0.0, 2.0 * np.pi, len(table))  # same per signal in every process
        self.phase = self.phase_all[self.rows]
        self.noise = table.noise[self.rows].copy()
        self.low = np.where(np.isnan(table.low[self.rows]), -np.inf, table.low[self.rows])
        self.high = np.where(np.isnan(table.high[self.rows]), np.inf, table.high[self.rows])
        # Row of the SignalTable -> position in our value vector (-1: not ours).
        self.position = np.full(len(table), -1, dtype=np.int64)
        self.position[self.rows] = np.arange(self.rows.size)
        self.values = np.zeros(self.rows.size)
        self._scratch = np.zeros(self.rows.size)
        self._quantised = np.flatnonzero(self.noise > 0)
        self.resolution = 10.0 ** np.floor(np.log10(self.noise[self._quantised] / 4))

    def __len__(self) -> int:
        return int(self.rows.size)

    def clean_at(self, t_s: float | np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Noise-free value of SignalTable ``rows`` at simulated time(s) ``t_s`` (for stuck values)."""
        t = self.table
        omega = 2.0 * np.pi / t.period_s[rows]
        v = t.base[rows] + t.amplitude[rows] * np.sin(omega * t_s + self.phase_all[rows])
        if self.physics is not None:
            self.physics.evaluate(t_s, rows, v)
        lo = np.where(np.isnan(t.low[rows]), -np.inf, t.low[rows])
        hi = np.where(np.isnan(t.high[rows]), np.inf, t.high[rows])
        return np.asarray(np.clip(v, lo, hi), dtype=np.float64)

    def rng(self, tick: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.key, int(tick)])))

    def step(self, tick: int, t_s: float) -> np.ndarray:
        """Values at tick ``tick`` (simulated time ``t_s``), in ``rows`` order; the array is reused."""
        v, tmp = self.values, self._scratch
        np.multiply(self.omega, t_s, out=tmp)
        np.add(tmp, self.phase, out=tmp)
        np.sin(tmp, out=tmp)
        np.multiply(tmp, self.amplitude, out=tmp)
        np.add(tmp, self.base, out=v)
        if self.physics is not None:
            self.physics.evaluate(t_s, self.rows, v)
        rng = self.rng(tick)
        rng.standard_normal(out=tmp)
        np.multiply(tmp, self.noise, out=tmp)
        np.add(v, tmp, out=v)
        if self.schedule is not None:
            self.apply_events(t_s, rng)
        np.clip(v, self.low, self.high, out=v)
        # sensor resolution: an ADC's step, about a quarter of the noise, as a power of ten
        q = self._quantised
        v[q] = np.rint(v[q] / self.resolution) * self.resolution
        return v

    def apply_events(self, t_s: float, rng: np.random.Generator) -> None:
        """Add the anomalies active at ``t_s`` on our signals to ``values`` (before clipping)."""
        assert self.schedule is not None
        ev = self.schedule.active(t_s)
        if ev.signal.size == 0:
            return
        pos = self.position[ev.signal]
        mine = pos >= 0
        if not mine.any():
            return
        pos, kind, mag = pos[mine], ev.kind[mine], ev.magnitude[mine]
        start, end, sig = ev.start_s[mine], ev.end_s[mine], ev.signal[mine]
        v = self.values
        additive = np.isin(kind, [_KIND[EventKind.SPIKE], _KIND[EventKind.STEP], _KIND[EventKind.CALIBRATION_OFFSET]])
        np.add.at(v, pos[additive], mag[additive])
        sel = kind == _KIND[EventKind.DRIFT]
        if sel.any():
            frac = np.clip((t_s - start[sel]) / np.maximum(end[sel] - start[sel], 1e-9), 0.0, 1.0)
            np.add.at(v, pos[sel], mag[sel] * frac)
        sel = kind == _KIND[EventKind.OSCILLATION]
        if sel.any():
            np.add.at(v, pos[sel], mag[sel] * np.sin(2.0 * np.pi * (t_s - start[sel]) / OSCILLATION_PERIOD_S))
        sel = kind == _KIND[EventKind.NOISE_BURST]
        if sel.any():
            np.add.at(v, pos[sel], mag[sel] * rng.standard_normal(int(sel.sum())))
        sel = kind == _KIND[EventKind.STUCK]
        if sel.any():
            v[pos[sel]] = self.clean_at(start[sel], sig[sel])
        sel = kind == _KIND[EventKind.MICRO_LEAK]
        if sel.any():
            if self.physics is not None:
                rows, delta = self.physics.micro_leak(t_s, self.table.machine[sig[sel]], mag[sel])
                p = self.position[rows]
                np.add.at(v, p[p >= 0], delta[p >= 0])
            else:
                np.add.at(v, pos[sel], mag[sel])
        sel = kind == _KIND[EventKind.DROPOUT]
        if sel.any():
            v[pos[sel]] = np.nan
