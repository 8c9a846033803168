"""What the alarm layer knows about each machine from the plant file: area, criticality, state signal.

Built once at start-up. Area: the machine group's ``area`` (``{i}`` = machine number), else its template's,
else the machine name's first dotted part (``hx_line.brazing03`` -> ``hx_line``), which is how the demo
and dev plants name their lines and halls. Criticality: machine group, else template, else medium.
State signal: the template's ``state`` (a signal and the values meaning off), else a ``kind: state`` signal
named ``running`` with 0 meaning off, else none (the machine's state is unknown and never suppresses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plantwire.plant import Criticality, PlantConfig, SignalTable, format_placeholders

DEFAULT_STATE_SIGNAL = "running"
DEFAULT_OFF_VALUES = (0.0,)
MAX_OFF_VALUES = 16


@dataclass(frozen=True)
class MachineFacts:
    machine_ids: list[str]
    area: list[str]  # per machine
    criticality: list[Criticality]  # per machine
    state_signal: np.ndarray  # int64 per machine: signal index of its state signal, -1 for none
    state_machine: np.ndarray  # int64 per signal: the machine whose state it is, -1 for every other signal
    off_values: np.ndarray  # float64 (n_signals_with_state, MAX_OFF_VALUES), NaN padded, row per state signal
    off_row: np.ndarray  # int64 per signal: row in off_values, -1 for others

    @property
    def areas(self) -> list[str]:
        return sorted(set(self.area))

    @classmethod
    def from_plant(cls, plant: PlantConfig, table: SignalTable) -> MachineFacts:
        ids = table.machine_ids
        index = {sid: i for i, sid in enumerate(table.ids)}
        area: list[str] = []
        crit: list[Criticality] = []
        state_signal = np.full(len(ids), -1, dtype=np.int64)
        off_rows: list[tuple[float, ...]] = []
        state_machine = np.full(len(table), -1, dtype=np.int64)
        off_row = np.full(len(table), -1, dtype=np.int64)
        m = 0
        for mg in plant.machines:
            tmpl = plant.templates[mg.template]
            for k in range(mg.count):
                mid = ids[m]
                if mg.area is not None:
                    area.append(format_placeholders(mg.area, {"i": k + 1}, "area"))
                elif tmpl.area is not None:
                    area.append(tmpl.area)
                else:
                    area.append(mid.split(".", 1)[0])
                crit.append(mg.criticality or tmpl.criticality or Criticality.MEDIUM)
                if tmpl.state is not None:
                    name, off = tmpl.state.signal, tuple(tmpl.state.off_values)
                else:
                    name, off = DEFAULT_STATE_SIGNAL, DEFAULT_OFF_VALUES
                r = index.get(f"{mid}.{name}")
                if r is not None and (tmpl.state is not None or table.kinds[r] == "state"):
                    state_signal[m] = r
                    state_machine[r] = m
                    off_row[r] = len(off_rows)
                    off_rows.append(off)
                m += 1
        offv = np.full((max(len(off_rows), 1), MAX_OFF_VALUES), np.nan)
        for i, off in enumerate(off_rows):
            offv[i, : len(off)] = off
        return cls(list(ids), area, crit, state_signal, state_machine, offv, off_row)
