"""A candidate machine model scored beside the active one on the same frames; its alarms are counted only.

Why its own ``MachineStage``: the candidate must see exactly the samples the active model sees, tick on
the same boundaries (the tick grid depends only on the frames' timestamps and ``machine.period_s``) and
run through the same alarm hysteresis (the stack's machine alarm settings), so its alarm rate is the
rate operators would get after promotion. Only the template's machines are members (the others are
masked out), and its ``x_last`` starts from the active stage's latest values, so it scores after
``lags + 1`` ticks rather than after every member has been seen again. Nothing it raises is published:
the OPEN edges are counted (``alarms``) for the health document, the metric and auto-promotion.
At promotion the active stage takes this stage's kernel state for these machines (``swap_models``).
"""

from __future__ import annotations

import numpy as np

from edge.detectors.events import EventColumns
from edge.detectors.machine import MachineStage
from edge.detectors.settings import MachineSelfFit
from edge.detectors.stack import DetectorStack
from edge.kernels import alarms
from edge.kernels.kinds import Kind
from edge.models import machine as mm


class ShadowMachine:
    def __init__(self, stack: DetectorStack, machines: np.ndarray, model: mm.MachineModel, version: str,
                 since_s: float) -> None:
        self.version = version
        self.machines = np.asarray(machines, dtype=np.int64)
        self.since_s = since_s
        active = stack.machine_stage
        mask = np.isin(stack.machine_of, self.machines)
        machine_of = np.where(mask, stack.machine_of, -1)
        settings = stack.settings.machine.model_copy(update={"self_fit": MachineSelfFit.OFF, "models": {}})
        models: list[mm.MachineModel | None] = [None] * stack.n_machines
        for m in self.machines.tolist():
            models[m] = model
        self.model = model
        self.stage = MachineStage(stack.n_signals, machine_of, stack.m_ptr, stack.m_sig, settings, models=models)
        self.stage.x_last[mask] = active.x_last[mask]
        self._params = stack.mach_alarm_params
        self._alarm_f, self._alarm_t = alarms.init_state(stack.n_machines)
        self._events = EventColumns(max(stack.n_machines, 1))
        self.ticks = 0
        self.alarms = 0  # OPEN edges after hysteresis and debounce (what would have been annunciated)

    def process(self, signal: np.ndarray, value: np.ndarray, quality: np.ndarray, tick_ts_ns: int) -> None:
        if signal.shape[0] == 0:
            return
        st = self.stage
        n = st.process(signal, value, quality, tick_ts_ns)
        if n == 0:
            return
        self.ticks += n
        tts = np.full(n, tick_ts_ns, dtype=np.int64)
        kind = np.full(n, int(Kind.MACHINE), dtype=np.uint8)
        cols = self._events.kernel_args()
        n_ev = alarms.alarm_chunk(tts, st.tick_m, st.tick_s, kind, n, self._alarm_f, self._alarm_t, self._params,
                                  *cols)
        k = min(n_ev, cols[0].shape[0])
        self.alarms += int(np.count_nonzero(cols[1][:k] == 1))  # Phase.OPEN

    def rate_per_machine_h(self, now_s: float) -> float:
        hours = max(now_s - self.since_s, 1e-9) / 3600.0
        return self.alarms / (max(self.machines.shape[0], 1) * hours)
