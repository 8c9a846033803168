"""Operating changes: many signals of one machine leaving their baseline together.

Why: when a machine starts, stops or changes load (a shift start, an idle machine going back to work), all its
load-following signals move at once. Each per-signal detector sees its own baseline broken and would raise a
level, change or rate alarm -- measured on the simulated plant, most of the false alarms left after the CUSUM
was made robust came from machines starting at 06:00. A fault on one sensor moves that sensor; a machine
whose signals move *together* is changing its operating point, which the operator knows from the schedule.
So a machine in which, within one frame, at least ``max(min_signals, min_fraction * members)`` distinct member
signals have ``|z| >= z_hot`` is marked as changing until ``hold_ns`` after the last such frame; the alarm
gate (``alarms.settle_gate``) then holds its members' process alarms (level, change, rate). Range, stuck and
data-quality alarms are never held, and the scores themselves are not touched.

A frame is what the edge flushes once per batch interval (one sample per signal), a row in ``plantwire
score``; ``z`` is the stack's clipped level z (``z_last``) after the frame. ``stamp`` (int64 per signal)
counts each signal once per frame; ``hot`` (int64 per machine) is scratch, left at 0.
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit


@njit(cache=True, nogil=True)
def machine_moves(ts_ns: np.ndarray, signal: np.ndarray, quality: np.ndarray, z: np.ndarray,
                  machine_of: np.ndarray, members: np.ndarray, frame: int, stamp: np.ndarray, hot: np.ndarray,
                  z_hot: float, min_fraction: float, min_signals: float, hold_ns: int,
                  hold_until: np.ndarray) -> int:
    """Mark machines moving together in this frame (``hold_until[m]`` = latest ts + ``hold_ns``); returns how many."""
    n = signal.shape[0]
    t_max = np.int64(-(2 ** 62))
    for k in range(n):
        if ts_ns[k] > t_max:
            t_max = ts_ns[k]
        s = signal[k]
        m = machine_of[s]
        if m < 0 or quality[k] == 2 or stamp[s] == frame:
            continue
        stamp[s] = frame
        if abs(z[s]) >= z_hot:
            hot[m] += 1
    marked = 0
    for k in range(n):
        m = machine_of[signal[k]]
        if m < 0 or hot[m] == 0:
            continue
        need = max(min_signals, min_fraction * members[m])
        if hot[m] >= need:
            hold_until[m] = t_max + hold_ns
            marked += 1
        hot[m] = 0
    return marked


@njit(cache=True, nogil=True)
def mark_machines(hot: np.ndarray, members: np.ndarray, t_max: int, min_fraction: float, min_signals: float,
                  hold_ns: int, hold_until: np.ndarray) -> int:
    """``machine_moves``' second half from per-machine counts: every machine with ``hot[m]`` (distinct members
    moving in the frame, counted elsewhere -- ``signal_stack.signal_frame`` counts them in its pass) at or above
    ``max(min_signals, min_fraction * members[m])`` is held until ``t_max + hold_ns``; ``hot`` is left at 0.
    Returns how many machines were marked (what ``machine_moves`` returns)."""
    marked = 0
    for m in range(hot.shape[0]):
        if hot[m] == 0:
            continue
        need = max(min_signals, min_fraction * members[m])
        if hot[m] >= need:
            hold_until[m] = t_max + hold_ns
            marked += 1
        hot[m] = 0
    return marked
