"""The demo's detection tally: found, missed, open and false against the simulator's label file."""

from __future__ import annotations

import json
from pathlib import Path

from plantwire.demo_faults import FaultTally

S = 1_000_000_000


def test_faults_are_found_missed_or_open_and_unmatched_alarms_are_false(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    faults = [("m1", 100, 110), ("m2", 100, 110), ("m3", 1000, 1010)]
    labels.write_text("".join(json.dumps({"kind": "step", "signal": f"{m}.x", "machine": m, "start_ns": a * S,
                                          "end_ns": b * S}) + "\n" for m, a, b in faults)
                      + json.dumps({"kind": "rul", "machine": "m1", "ts_ns": 5}) + "\n")
    tally = FaultTally(labels, grace_s=60)
    tally.on_events([
        {"type": "alarm", "state": "open", "kind": "machine", "machine": "m1", "start_ns": 150 * S,
         "model_version": "v1"},  # in m1's window (end + grace)
        {"type": "alarm", "state": "open", "kind": "level", "machine": "m2", "start_ns": 50 * S},  # before: false
        {"type": "alarm", "state": "open", "kind": "silent", "machine": "m2", "start_ns": 105 * S},  # data quality
        {"type": "alarm", "state": "closed", "kind": "level", "machine": "m2", "start_ns": 105 * S},  # a close
    ])
    t = tally.tally(now_ns=500 * S)
    assert (t.faults, t.found, t.missed, t.open, t.alarms, t.false) == (3, 1, 1, 1, 2, 1)
    assert t.by_model == {"v1": 1, "none": 1}
