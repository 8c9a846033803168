"""The machine stage of the detector stack: fitted PCA per machine, self-fitted from the first hours if needed.

Why a stage of its own: its model is fitted, not learned sample by sample, so it has a life cycle the
per-signal kernels do not -- load or record a baseline, fit it off the hot path, score against it,
re-baseline on purpose. The numbers are in ``edge.kernels.pca`` (scoring) and ``edge.models.machine``
(fitting, numpy only).

Timing: a machine ticks at most once per ``period_s`` of sample time (the frame's latest timestamp), on
the latest good value of each member -- one model row. Every machine seen since the last tick ticks
together, so the recorder below fills one row for all machines at once.

Life cycle per machine:
- **fitted**: a model matched from ``settings.models`` (or fitted earlier) is packed into the kernel's
  arrays; the machine scores from its ``lags + 1``-th tick.
- **recording** (``self_fit`` on, or after ``rebaseline``): no model yet. Rows (float32, ``fit_rows`` x
  members of all recording machines: memory
  bounded whatever the duration) are recorded until ``fit_after_s`` of sample time has passed -- with
  ``lags`` 0 (the default) every tick until the rows are full, then every other row is dropped and every
  second tick recorded, and so on, so a day of operation (both shifts, every duty cycle) is sampled
  evenly in at most ``fit_rows`` rows whatever the tick rate; with ``lags`` > 0 the model needs consecutive
  ticks, so the recording stops after ``fit_rows`` ticks -- then fitted on a worker thread with the same
  numpy code as the offline tool; the frame that finds the fit done swaps the new arrays in. A frame never
  waits for a fit. Nothing is scored while recording.
- **rebaseline(machines)**: a confirmed change (an operator's command): the machines drop their model
  and record afresh. A model never learns while it scores, so a persistent fault is not absorbed; only
  this deliberate refit moves a baseline.

State for checkpoints (``arrays``/``load_arrays``): the kernel's per-machine state, ``x_last`` and the
fitted bank itself, so a restart neither re-records nor re-fits.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detectors.settings import MachineSelfFit, MachineSettings
from edge.kernels import pca
from edge.models import machine as mm

log = logging.getLogger(__name__)


@dataclass
class _Recording:
    machines: np.ndarray  # int64 machines being recorded
    cols: np.ndarray  # int64 signal index per column (their members, machine by machine)
    rows: np.ndarray  # float32 (fit_rows, len(cols))
    n: int
    start_ns: int
    every: int  # ticks per recorded row
    ticks: int = 0


class MachineStage:
    """Fitted multivariate monitoring for machines given in CSR form (``m_ptr``, ``m_sig``, ``machine_of``)."""

    def __init__(self, n_signals: int, machine_of: np.ndarray, m_ptr: np.ndarray, m_sig: np.ndarray,
                 settings: MachineSettings, *, machine_ids: list[str] | None = None,
                 models: list[mm.MachineModel | None] | None = None, base_dir: Path | None = None) -> None:
        self.settings = settings
        self.machine_of = machine_of
        self.m_ptr = m_ptr
        self.m_sig = m_sig
        self.n_machines = int(m_ptr.shape[0] - 1)
        self.sizes = np.diff(m_ptr)
        self.x_last = np.full(n_signals, np.nan)
        self.fit_settings = mm.FitSettings(lags=settings.lags, variance=settings.variance, ewma=settings.ewma,
                                           quantile=settings.quantile, margin=settings.margin,
                                           modes=settings.modes)
        if models is None:
            models = self._match_models(machine_ids, base_dir)
        self.models: list[mm.MachineModel | None] = list(models)
        self.bank = mm.pack(self.models, self.sizes)
        self.seen = np.zeros(max(self.n_machines, 1), dtype=np.uint8)
        self.next_tick_ns = -1
        self.touched = np.zeros(max(self.n_machines, 1), dtype=np.uint8)
        self.tick_m = np.empty(max(self.n_machines, 1), dtype=np.int64)
        self.tick_s = np.empty(max(self.n_machines, 1), dtype=np.float64)
        self.tick_top = np.full((max(self.n_machines, 1), pca.N_TOP), -1, dtype=np.int64)
        self._rec: _Recording | None = None
        self._rebaselined: set[int] = set()  # machines told to re-baseline: they record even with self_fit off
        self._stale: set[int] = set()  # re-baselined while a fit was under way: its result for them is dropped
        self._fit_thread: threading.Thread | None = None
        self._fit_result: list[tuple[int, mm.MachineModel | None]] | None = None
        self.fits_done = 0
        self.fits_failed = 0

    # -- models ---------------------------------------------------------------------------------

    def _match_models(self, machine_ids: list[str] | None, base_dir: Path | None) -> list[mm.MachineModel | None]:
        out: list[mm.MachineModel | None] = [None] * self.n_machines
        if not self.settings.models or machine_ids is None:
            return out
        cache: dict[Path, mm.MachineModel] = {}
        for m, mid in enumerate(machine_ids[: self.n_machines]):
            for pattern, path in self.settings.models.items():
                if fnmatch.fnmatchcase(mid, pattern):
                    p = path if path.is_absolute() or base_dir is None else base_dir / path
                    if p not in cache:
                        cache[p] = mm.load(p)
                    out[m] = cache[p]
                    break
        return out

    def set_models(self, models: list[mm.MachineModel | None]) -> None:
        """Swap in a new set of models (kernel state restarts for every machine)."""
        self.models = list(models)
        self.bank = mm.pack(self.models, self.sizes)

    def config_models(self, machine_ids: list[str] | None, base_dir: Path | None) -> list[mm.MachineModel | None]:
        """The models ``settings.models`` gives each machine (what a rollback past every bundle returns to)."""
        return self._match_models(machine_ids, base_dir)

    def swap_models(self, machines: np.ndarray, model: mm.MachineModel | None,
                    warm_from: MachineStage | None = None) -> None:
        """Give ``machines`` the model ``model`` between two frames, keeping every state that is still valid.

        Why not ``set_models``: that restarts the kernel state of every machine. Here a machine whose model
        does not change keeps its smoothed statistic, lag ring and mode; a changed machine takes the state of
        ``warm_from`` (a shadow stage that ran this very model on the same samples) when it has it, else its
        own when the new model equals the old one (a restart re-applying the active bundle), else it starts
        fresh (scores again after ``lags + 1`` ticks). Alarm state lives in the stack and is untouched, so an
        open machine alarm closes through its own hysteresis. A self-fit recording or fit under way for
        these machines is abandoned: a shipped model wins over the edge's own.
        """
        changed = {int(m) for m in np.asarray(machines, dtype=np.int64).tolist()}
        models = list(self.models)
        for m in changed:
            models[m] = model
        bank = mm.pack(models, self.sizes)
        for m in range(self.n_machines):
            src: mm.Bank | None = self.bank
            if m in changed:
                if warm_from is not None and same_model(warm_from.models[m], model):
                    src = warm_from.bank
                elif not same_model(self.models[m], model):
                    src = None
            if src is not None:
                _copy_machine_state(src, bank, m, int(self.sizes[m]))
        self.models = models
        self.bank = bank
        for m in changed:
            self._rebaselined.discard(m)
            if self._fit_thread is not None:
                self._stale.add(m)
        if self._rec is not None and np.isin(self._rec.machines, list(changed)).any():
            self._rec = None

    def rebaseline(self, machines: list[int]) -> None:
        """A confirmed change: these machines drop their model and record a new baseline (then refit)."""
        models = list(self.models)
        for m in machines:
            models[m] = None
            self._rebaselined.add(m)
            if self._fit_thread is not None:
                self._stale.add(m)  # a fit under way used rows from before the change: do not adopt it
        self.set_models(models)
        self._rec = None  # restart the recording so it covers the new machines from now on

    # -- per frame ----------------------------------------------------------------------------

    def process(self, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, tick_ts_ns: int,
                in_alarm: np.ndarray | None = None) -> int:
        """Take one frame; returns the number of machines ticked (``tick_m``/``tick_s``/``tick_top``).

        ``in_alarm`` (per signal, nonzero = its own alarm is active): a recorded row in which a member is in
        alarm is not learned (a fault on one signal must not become part of the machine's baseline).
        """
        if signal.shape[0] == 0:
            self._adopt_fit()
            return 0
        pca.update_last(signal, value, quality, self.x_last, self.machine_of, self.seen)
        return self.tick(tick_ts_ns, in_alarm)

    def tick(self, tick_ts_ns: int, in_alarm: np.ndarray | None = None) -> int:
        """``process`` after the frame's latest values are already in ``x_last`` and ``seen`` (what
        ``pca.update_last`` does; ``DetectorStack`` does it inside its signal pass, ``signal_stack.signal_frame``)."""
        self._adopt_fit()
        if self.next_tick_ns < 0:
            self.next_tick_ns = tick_ts_ns
        if tick_ts_ns < self.next_tick_ns:
            return 0
        period_ns = int(self.settings.period_s * 1e9)
        self.next_tick_ns = tick_ts_ns - tick_ts_ns % period_ns + period_ns
        ticked = np.flatnonzero(self.seen[: self.n_machines])
        self.seen[:] = 0
        if ticked.shape[0] == 0:
            return 0
        rep = self.m_sig[self.m_ptr[ticked]].astype(np.uint32)  # one member per machine: ticks it once
        n = pca.machine_tick(rep, self.machine_of, self.m_ptr, self.m_sig, self.x_last, self.bank.mach_i,
                             self.bank.mach_f, self.bank.hist, self.bank.mdl_i, self.bank.mdl_f, self.bank.mdl_vec,
                             self.touched, self.tick_m, self.tick_s, self.tick_top)
        self._record(tick_ts_ns, in_alarm)
        return n

    # -- self-fit --------------------------------------------------------------------------------

    def _record(self, ts_ns: int, in_alarm: np.ndarray | None) -> None:
        if self._fit_thread is not None:
            return
        if self._rec is None:
            if self.settings.self_fit is MachineSelfFit.OFF and not self._rebaselined:
                return
            todo = np.array([m for m in range(self.n_machines) if self.models[m] is None and self.sizes[m] > 1
                             and (self.settings.self_fit is MachineSelfFit.ON or m in self._rebaselined)],
                            dtype=np.int64)
            if todo.shape[0] == 0:
                return
            cols = np.concatenate([self.m_sig[self.m_ptr[m]:self.m_ptr[m + 1]] for m in todo])
            rows = np.empty((self.settings.fit_rows, cols.shape[0]), np.float32)
            self._rec = _Recording(todo, cols, rows, 0, ts_ns, 1)
        rec = self._rec
        full = False
        if rec.ticks % rec.every == 0:
            if rec.n == rec.rows.shape[0]:
                if self.settings.lags > 0:
                    full = True  # a lagged model needs consecutive ticks: stop here
                else:  # thin: keep every other row, record half as often -- still spanning the whole time
                    half = rec.n // 2
                    rec.rows[:half] = rec.rows[0:2 * half:2]
                    rec.n = half
                    rec.every *= 2
            if not full and rec.ticks % rec.every == 0:
                rec.rows[rec.n] = self.x_last[rec.cols]
                if in_alarm is not None:
                    rec.rows[rec.n, in_alarm[rec.cols] != 0] = np.nan  # the fit drops the machine's row
                rec.n += 1
        rec.ticks += 1
        if ts_ns - rec.start_ns >= self.settings.fit_after_s * 1e9 or full:
            self._rec = None
            self._fit_thread = threading.Thread(target=self._fit_all, args=(rec,), name="machine-fit", daemon=True)
            self._fit_thread.start()

    def _fit_all(self, rec: _Recording) -> None:
        """Worker thread: fit every recorded machine (numpy; the GIL is released in its linear algebra)."""
        out: list[tuple[int, mm.MachineModel | None]] = []
        a = 0
        for m in rec.machines.tolist():
            d = int(self.sizes[m])
            x = rec.rows[: rec.n, a:a + d].astype(np.float64)
            a += d
            try:
                out.append((m, mm.fit(x, [str(i) for i in self.m_sig[self.m_ptr[m]:self.m_ptr[m + 1]]],
                                      self.fit_settings, name=f"machine {m}")))
            except (ValueError, np.linalg.LinAlgError) as exc:
                log.warning("machine %d: no baseline fitted from %d rows (%s); recording again", m, rec.n, exc)
                out.append((m, None))
        self._fit_result = out

    def _adopt_fit(self) -> None:
        t = self._fit_thread
        if t is None or t.is_alive():
            return
        t.join()
        self._fit_thread = None
        result, self._fit_result = self._fit_result or [], None
        stale, self._stale = self._stale, set()
        if not result:
            return
        models = list(self.models)
        for m, model in result:
            if m in stale:
                continue
            models[m] = model
            if model is not None:
                self._rebaselined.discard(m)
            self.fits_done += model is not None
            self.fits_failed += model is None
        self.set_models(models)
        log.info("machine stage: %d baselines fitted, %d failed", sum(m is not None for _, m in result),
                 sum(m is None for _, m in result))

    def wait_fit(self, timeout_s: float | None = None) -> None:
        """Block until a running fit is done and adopted (tests, ``plantwire score``; never the edge's loop)."""
        t = self._fit_thread
        if t is not None:
            t.join(timeout_s)
        self._adopt_fit()

    @property
    def recording(self) -> bool:
        return self._rec is not None or self._fit_thread is not None

    # -- checkpoints ----------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything to restore warm: kernel state, latest values and the fitted bank."""
        b = self.bank
        return {"x_last": self.x_last, "mach_i": b.mach_i, "mach_f": b.mach_f, "hist": b.hist, "mdl_i": b.mdl_i,
                "mdl_f": b.mdl_f, "mdl_vec": b.mdl_vec}

    def load_arrays(self, got: dict[str, np.ndarray]) -> None:
        """Restore from ``arrays()`` of a stage with the same machines (the caller checked the file)."""
        bank = mm.Bank(got["mach_i"].copy(), got["mach_f"].copy(), got["hist"].copy(), got["mdl_i"].copy(),
                       got["mdl_f"].copy(), got["mdl_vec"].copy())
        if bank.mach_i.shape != self.bank.mach_i.shape:
            raise ValueError("machine stage checkpoint is for other machines")
        self.models = mm.unpack(bank, self.sizes)
        self.bank = bank
        self.x_last[...] = got["x_last"]


def same_model(a: mm.MachineModel | None, b: mm.MachineModel | None) -> bool:
    """The same numbers (names and fit settings aside: a model restored from a checkpoint has neither)."""
    if a is None or b is None:
        return a is b
    if a.lags != b.lags or len(a.modes) != len(b.modes) or a.d != b.d:
        return False
    arrays = ("mean", "scale", "centroid", "mode_scale", "loadings", "eigenvalues")
    scalars = ("t2_ref", "spe_ref", "limit", "ewma", "init")
    return all(all(np.array_equal(getattr(x, k), getattr(y, k)) for k in arrays)
               and all(getattr(x, k) == getattr(y, k) for k in scalars) for x, y in zip(a.modes, b.modes, strict=True))


def _copy_machine_state(src: mm.Bank, dst: mm.Bank, m: int, d: int) -> None:
    """Machine ``m``'s kernel state (lag ring, fill, position, mode, smoothed statistic) from ``src`` to ``dst``."""
    if src.mach_i[m, pca.MI_LAGS] != dst.mach_i[m, pca.MI_LAGS]:
        return
    n = int((dst.mach_i[m, pca.MI_LAGS] + 1) * d)
    a, b = int(src.mach_i[m, pca.MI_HIST]), int(dst.mach_i[m, pca.MI_HIST])
    dst.hist[b:b + n] = src.hist[a:a + n]
    for col in (pca.MI_FILLED, pca.MI_POS, pca.MI_MODE):
        dst.mach_i[m, col] = src.mach_i[m, col]
    dst.mach_f[m] = src.mach_f[m]


REBASELINE_FILE = "machine-rebaseline"  # in the edge's state directory: machine id patterns, one per line


def request_rebaseline(state_dir: Path, patterns: list[str]) -> Path:
    """Ask a running edge to re-baseline the machines matching ``patterns`` (``plantwire rebaseline``).

    Written atomically; the edge picks it up on its next analytics tick, removes it and logs what it did.
    Requests add up: patterns already waiting are kept.
    """
    path = Path(state_dir) / REBASELINE_FILE
    old = path.read_text().split() if path.exists() else []
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join([*old, *patterns]) + "\n")
    tmp.replace(path)
    return path


def take_rebaseline_request(state_dir: Path, machine_ids: list[str]) -> list[int]:
    """Machines a pending request names (the request file is consumed); [] when there is none."""
    path = Path(state_dir) / REBASELINE_FILE
    try:
        patterns = path.read_text().split()
        path.unlink()
    except FileNotFoundError:
        return []
    return [m for m, mid in enumerate(machine_ids) if any(fnmatch.fnmatchcase(mid, p) for p in patterns)]
