"""What is not normal operation, and so must not be learned: alarm episodes and declared periods.

Why whole machine rows: a model of a machine learns how its signals move *together*; one signal in alarm
makes the whole row abnormal for that purpose (the edge's own recorder drops such rows too). Episodes are
padded by ``pad_s`` on both sides, because an alarm opens after its fault began (debounce, smoothing) and a
fault's tail outlives the alarm's hysteresis.

Sources:
- the ``events`` measurement (every alarm episode the gateways reported, any kind: process, machine, data
  quality -- a ``bad`` or ``silent`` episode is a period of bad quality as well);
- out-of-service periods of the alarm layer's incidents (``incident_transitions``, issue 16), as episodes of
  their machine (``cloud.models.history``);
- ``Declared`` periods given by the engineer (``--exclude START/END[/MACHINE_GLOB]``): maintenance, trials,
  anything the history does not record.
Bad-quality samples are already missing in the rows (``cloud.models.history``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np

from cloud.models.history import NS_PER_S, Episodes


@dataclass(frozen=True)
class Declared:
    """A period to leave out, for the machines matching ``machines`` (fnmatch; ``*`` = all)."""

    start_ns: int
    end_ns: int
    machines: str = "*"


def parse_declared(text: str, where: str = "--exclude") -> Declared:
    """``START/END[/GLOB]`` (ISO-8601 interval style) with START/END as UTC (``2026-01-05T06:00``) or ns."""
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"{where}: expected START/END[/MACHINE_GLOB], got {text!r}")
    start, end = (_time_ns(p, where) for p in parts[:2])
    if end <= start:
        raise ValueError(f"{where}: end before start in {text!r}")
    return Declared(start, end, parts[2] if len(parts) == 3 else "*")


def _time_ns(text: str, where: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return int(np.datetime64(text.rstrip("Z"), "ns").astype(np.int64))
    except ValueError as exc:
        raise ValueError(f"{where}: not a time: {text!r} (ISO-8601 UTC or integer ns)") from exc


def keep_rows(ts_ns: np.ndarray, period_s: int, machine: str, episodes: Episodes, declared: list[Declared],
              pad_s: int) -> np.ndarray:
    """Boolean mask of the ticks (starting at ``ts_ns``, ``period_s`` long) that overlap no excluded period."""
    keep = np.ones(ts_ns.shape[0], dtype=bool)
    if ts_ns.shape[0] == 0:
        return keep
    sel = episodes.machine == machine
    starts = episodes.start_ns[sel] - pad_s * NS_PER_S
    ends = episodes.end_ns[sel] + pad_s * NS_PER_S
    extra = [(d.start_ns, d.end_ns) for d in declared if fnmatch.fnmatchcase(machine, d.machines)]
    if extra:
        starts = np.concatenate([starts, np.array([a for a, _ in extra], dtype=np.int64)])
        ends = np.concatenate([ends, np.array([b for _, b in extra], dtype=np.int64)])
    if starts.size == 0:
        return keep
    # A tick [t, t + p) overlaps [s, e) iff s < t + p and e > t: mark with a difference array, vectorised.
    p = period_s * NS_PER_S
    first = int(ts_ns[0])
    n = ts_ns.shape[0]
    lo = np.clip((starts - first) // p, 0, n)
    hi = np.clip((ends - first + p - 1) // p, 0, n)
    ok = hi > lo
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, lo[ok], 1)
    np.add.at(diff, hi[ok], -1)
    keep &= np.cumsum(diff[:n]) == 0
    return keep
