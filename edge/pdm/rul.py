"""A shipped RUL model (plain arrays in an .npz) and the per-machine estimator the edge ticks.

Why plain arrays: the edge must never import a training framework, and a model is data, not code --
``np.load(allow_pickle=False)`` reads it, the numba kernel in ``edge.kernels.health`` runs it. The
fitter (``tools/fit_rul.py``) writes the same file from run-to-failure history.

A model names its inputs (``op_names`` operating settings, then ``sensor_names``); the owner maps them
to signal indices once (``RulEstimator(model, n_machines, inputs)``, ``inputs[m, i]`` = signal of
input i on machine m, -1 when the machine lacks it). RUL is in ticks of the training data (cycles for
C-MAPSS); the owner ticks ``update`` once per machine duty cycle, not per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from edge.detectors import checkpoint
from edge.kernels import health

MODEL_VERSION = 1


class RulModelError(Exception):
    """A model file that cannot be used (missing, wrong version, inconsistent arrays, unknown inputs)."""


@dataclass(frozen=True)
class RulModel:
    """The arrays of ``edge.kernels.health`` plus the names of the inputs they expect."""

    op_names: np.ndarray  # str (n_op,)
    sensor_names: np.ndarray  # str (d,)
    cond: np.ndarray
    op_scale: np.ndarray
    norm: np.ndarray
    fnorm: np.ndarray
    w1: np.ndarray
    w2: np.ndarray
    band: np.ndarray
    p: np.ndarray
    band_quantiles: np.ndarray  # (2,) the quantiles the band holds, e.g. (0.1, 0.9)

    @property
    def n_inputs(self) -> int:
        return len(self.op_names) + len(self.sensor_names)

    @property
    def cap(self) -> float:
        return float(self.p[health.P_CAP])

    def input_names(self) -> list[str]:
        return [str(n) for n in self.op_names] + [str(n) for n in self.sensor_names]

    def input_index(self, names: list[str]) -> np.ndarray:
        """Position of each model input in ``names`` (e.g. CSV columns or a machine's signal names)."""
        missing = [n for n in self.input_names() if n not in names]
        if missing:
            raise RulModelError(f"model inputs {missing} are not among {names}")
        return np.array([names.index(n) for n in self.input_names()], dtype=np.int64)

    def check(self) -> None:
        n_op, d = len(self.op_names), len(self.sensor_names)
        k = self.cond.shape[0]
        f = health.n_features(d)
        ok = (self.cond.shape == (k, n_op) and self.op_scale.shape == (n_op,) and self.norm.shape == (2, k, d)
              and self.fnorm.shape == (2, f) and self.w1.shape[0] == f + 1 and self.w2.shape == (self.w1.shape[1] + 1,)
              and self.band.ndim == 2 and self.band.shape[0] == 3 and self.p.shape == (health.N_PARAMS,)
              and bool(np.all(self.norm[1] > 0)) and bool(np.all(self.fnorm[1] > 0))
              and bool(np.all(self.op_scale > 0)))
        if not ok:
            raise RulModelError("model arrays have inconsistent shapes or non-positive scales")

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self)}
        np.savez(path, __version__=np.int64(MODEL_VERSION), **arrays)

    @classmethod
    def load(cls, path: Path) -> RulModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise RulModelError(f"{path}: cannot read the model ({exc})") from exc
        return cls.from_arrays(got, str(path))

    @classmethod
    def from_arrays(cls, got: dict[str, np.ndarray], where: str) -> RulModel:
        """The model from ``save``'s arrays (a file, or a shipped bundle's ``arrays.npz``); checked."""
        if int(got.get("__version__", -1)) != MODEL_VERSION:
            raise RulModelError(f"{where}: model version {got.get('__version__')} is not {MODEL_VERSION}")
        try:
            model = cls(**{f.name: got[f.name] for f in fields(cls)})
        except KeyError as exc:
            raise RulModelError(f"{where}: array {exc} missing") from exc
        try:
            model.check()
        except (RulModelError, AttributeError, IndexError, TypeError) as exc:
            raise RulModelError(f"{where}: {exc}") from exc
        return model


class RulEstimator:
    """Health index and RUL with a band for ``n_machines`` machines; state in one array, checkpointable."""

    def __init__(self, model: RulModel, n_machines: int, inputs: np.ndarray) -> None:
        model.check()
        inputs = np.ascontiguousarray(inputs, dtype=np.int64)
        if inputs.shape != (n_machines, model.n_inputs):
            raise ValueError(f"inputs must be ({n_machines}, {model.n_inputs}), got {inputs.shape}")
        self.model = model
        self.inputs = inputs
        self.n_machines = n_machines
        self.d = len(model.sensor_names)
        self.state = np.zeros((n_machines, health.state_width(self.d)), dtype=np.float64)
        self._out = np.empty((max(n_machines, 1), health.N_OUT), dtype=np.float64)
        self._all = np.arange(n_machines, dtype=np.int64)
        self.fingerprint = checkpoint.fingerprint(MODEL_VERSION, self.inputs, model.w1, model.norm)

    def update(self, x_last: np.ndarray, machines: np.ndarray | None = None) -> np.ndarray:
        """Tick ``machines`` (default all) on the latest value of every signal; returns a view (n, 4).

        Columns: health in [0, 1], rul, rul_low, rul_high (``edge.kernels.health.OUT_*``), NaN for a
        machine that never had all its inputs; valid until the next call.
        """
        ms = self._all if machines is None else np.ascontiguousarray(machines, dtype=np.int64)
        m = self.model
        health.health_tick(ms, ms.shape[0], self.inputs, x_last, self.state, m.cond, m.op_scale, m.norm, m.fnorm,
                           m.w1, m.w2, m.band, m.p, self._out)
        return self._out[: ms.shape[0]]

    def run_rows(self, values: np.ndarray, machine: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Offline: one machine's ticks as rows of columns; ``inputs[machine]`` indexes the columns."""
        x = np.ascontiguousarray(values[:, self.inputs[machine]], dtype=np.float64)
        out = np.empty((x.shape[0], health.N_OUT), dtype=np.float64)
        m = self.model
        health.health_rows(x, machine, self.state, m.cond, m.op_scale, m.norm, m.fnorm, m.w1, m.w2, m.band, m.p, out)
        return out[:, 0], out[:, 1], out[:, 2], out[:, 3]

    def reset(self, machine: int | None = None) -> None:
        """Forget a machine's history (after a repair or replacement), or every machine's."""
        if machine is None:
            self.state[:] = 0.0
        else:
            self.state[machine] = 0.0

    def save(self, path: Path) -> None:
        checkpoint.save(path, MODEL_VERSION, self.fingerprint, {"state": self.state})

    def restore(self, path: Path) -> None:
        got = checkpoint.load(path, MODEL_VERSION, self.fingerprint, {"state": self.state})
        self.state[...] = got["state"]
