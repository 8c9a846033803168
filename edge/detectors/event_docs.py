"""The events lane's alarm documents, built from the detectors' event rows.

A function of its own (not a gateway method) so the document format is tested on its inputs alone:
the event rows, the signal table's names and which model raised each alarm. The gateway only sends
what this returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from edge.detectors.events import Phase, Scope
from edge.kernels.kinds import Kind

# (scope, entity, phase, kind) -> the version of the model that raised the alarm, or None
ModelVersionOf = Callable[[int, int, int, int], "str | None"]


class _Named(Protocol):
    name: str


class AlarmTable(Protocol):
    """What the documents need of the signal table: names and the signal -> machine / device maps."""

    ids: Sequence[str]
    machine_ids: Sequence[str]
    machine: np.ndarray
    device: np.ndarray
    devices: Sequence[_Named]


def unit_model_version(scope: int, entity: int, phase: int, kind: int) -> str | None:
    """Without a model store: null for the signal stack, "local" for a model fitted on the box."""
    return None if scope == Scope.SIGNAL else "local"


def alarm_documents(events: np.ndarray, table: AlarmTable,
                    model_version: ModelVersionOf = unit_model_version) -> list[dict[str, Any]]:
    """One JSON-ready document per OPEN/CLOSE row (a handful per frame at most, never per sample).

    A signal alarm names its signal and machine; a DEVICE alarm its device and every machine it serves
    (``machine`` only when it serves one); a machine alarm its machine and the signals that contributed
    most, the first of them as the stored ``signal`` tag.
    """
    out: list[dict[str, Any]] = []
    for ev in events.tolist():
        ts_start, ts_end, entity, scope, phase, kind, peak, top = ev
        doc: dict[str, Any] = {
            "type": "alarm",
            "state": "open" if phase == Phase.OPEN else "closed",
            "kind": Kind(kind).name.lower(),
            "start_ns": int(ts_start),
            "end_ns": None if ts_end < 0 else int(ts_end),
            "peak": round(float(peak), 4),
        }
        if scope == Scope.SIGNAL:
            doc["signal"] = table.ids[entity]
            doc["machine"] = table.machine_ids[int(table.machine[entity])]
        elif scope == Scope.DEVICE:  # a PLC or server without a good poll: one alarm for all its signals
            served = sorted({table.machine_ids[m] for m in table.machine[table.device == entity]})
            doc["device"] = table.devices[entity].name
            doc["machine"] = served[0] if len(served) == 1 else None
            doc["machines"] = served
        else:
            doc["machine"] = table.machine_ids[entity]
            names = [table.ids[t] for t in top if t >= 0]
            if names:
                doc["signal"] = names[0]
                doc["contributors"] = names
        doc["model_version"] = model_version(scope, entity, phase, kind)
        out.append(doc)
    return out


def per_machine_events(events: np.ndarray) -> np.ndarray:
    """The rows a per-machine consumer (Sparkplug B's device messages) takes: a DEVICE alarm has no machine."""
    return events[events["scope"] != Scope.DEVICE]
