"""The demo's detection tally: alarms on the events lane against the faults the simulator injected.

Ground truth is the simulator's label file (``--labels``: one JSON line per injected signal anomaly with its
machine, signal, start and end). Alarms are the OPEN alarm documents the edge publishes on its events lane
(received by this process's own MQTT subscription, as the cloud would). Matching, per machine:

- a fault is **found** when an alarm of its machine (on any of its signals, or the machine alarm) opens
  between the fault's start and ``GRACE_S`` after its end; **missed** when that window has passed without
  one; otherwise still **open**;
- an alarm is **false** when it lies in no fault window of its machine (labels are written as a fault
  starts, so a later label cannot claim an earlier alarm).

Data-quality alarms (``bad``, ``silent``) are left out of both sides: they are about the measurement, and the
simulator's transport faults that cause them are not signal anomalies. Wear (RUL) labels are not faults here.
This is a live indication for the demo, not an evaluation (bench/sim_eval.py is); the grace and the
per-machine matching are generous on purpose and said so.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRACE_S = 120.0
DATA_QUALITY = ("bad", "silent")


@dataclass(frozen=True)
class Tally:
    faults: int
    found: int
    missed: int
    open: int
    alarms: int
    false: int
    by_model: dict[str, int]  # alarms per model_version ("none": the signal stack)

    def line(self) -> str:
        return (f"faults {self.faults} (found {self.found}, missed {self.missed}, open {self.open})  "
                f"alarms {self.alarms} (false {self.false})")


class FaultTally:
    def __init__(self, labels: Path, grace_s: float = GRACE_S) -> None:
        self.labels = labels
        self.grace_ns = int(grace_s * 1e9)
        self._lock = threading.Lock()
        self._alarms: list[tuple[str, int, str]] = []  # (machine, start_ns, model_version)
        self._faults: list[tuple[str, int, int]] = []  # (machine, start_ns, end_ns)
        self._offset = 0

    def on_events(self, docs: list[dict[str, Any]]) -> None:
        """From the MQTT thread: keep the OPEN process alarms."""
        rows = [(str(d.get("machine") or ""), int(d["start_ns"]), str(d.get("model_version") or "none"))
                for d in docs if d.get("type") == "alarm" and d.get("state") == "open"
                and d.get("kind") not in DATA_QUALITY and isinstance(d.get("start_ns"), int)]
        with self._lock:
            self._alarms.extend(rows)

    def _read_labels(self) -> None:
        try:
            with open(self.labels) as f:
                f.seek(self._offset)
                for line in f:
                    if not line.endswith("\n"):
                        break  # a line still being written: read it next time
                    self._offset += len(line.encode())
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if "signal" in rec and "start_ns" in rec and "end_ns" in rec and rec.get("machine"):
                        self._faults.append((rec["machine"], int(rec["start_ns"]), int(rec["end_ns"])))
        except FileNotFoundError:
            return

    def tally(self, now_ns: int | None = None) -> Tally:
        now = time.time_ns() if now_ns is None else now_ns
        self._read_labels()
        with self._lock:
            alarms = list(self._alarms)
        g = self.grace_ns
        found = missed = still = 0
        for m, lo, hi in self._faults:
            if any(am == m and lo <= at <= hi + g for am, at, _ in alarms):
                found += 1
            elif now > hi + g:
                missed += 1
            else:
                still += 1
        false = sum(1 for am, at, _ in alarms if not any(m == am and lo <= at <= hi + g for m, lo, hi in self._faults))
        by_model: dict[str, int] = {}
        for _, _, v in alarms:
            by_model[v] = by_model.get(v, 0) + 1
        return Tally(len(self._faults), found, missed, still, len(alarms), false, by_model)
