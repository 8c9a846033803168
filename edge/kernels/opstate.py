"""Operating state per machine from its own state signals: unknown, off, running -- and what it does to judgement.

Why: a machine that is switched off is not a faulty machine, and its signals at rest are not a process to learn.
Measured on the simulated plant (bench/RESULTS.md, issue 15), every false alarm left after the per-signal
work fell between 22:00 and 07:00, from machines stopping, standing and restarting: a leak tester whose test
pressure restarts its cycles at 06:00 after a night at 0 raised a slope "never seen" in eight hours, load
signals decayed to their rest values and were judged against the running baseline. A reliability engineer's
condition monitoring knows the machine's state and judges a signal against the baseline of that state.

What this kernel does, per frame (before the signal stack scores it):
- A machine's state comes from its running indicator (``running_of[s]`` = machine whose running bit signal ``s``
  is, -1 otherwise): a usable sample >= 0.5 means RUNNING, below it OFF. A machine without one stays UNKNOWN
  (judged as before). Bad or non-finite samples of the indicator leave the state as it was.
- A change of state (not the first sighting after a cold start) at ``t`` marks the machine changing until
  ``t + grace_ns``: ``hold_until[m]`` is raised to it, and the alarm gate (``alarms.settle_gate``) holds the
  machine's process alarms (level, change, rate) until then -- a start's ramps and thermal lags are a duration,
  so the grace is one (``OperatingStateSettings.grace_s``).
- While OFF, every signal of the machine that follows the process (``m_sig[m_ptr[m]:m_ptr[m+1]]``: all but its
  state signals) is *frozen*: ``cfg[s, frozen_col]`` is 1, and ``signal_stack.signal_chunk`` then neither learns
  from it nor judges it (score 0) -- the baseline stays the running one, and is not judged against the rest
  values; only its data-quality judgement (BAD, SILENT) and its last sample's time go on. On RUNNING or UNKNOWN
  the column is 0 again.

State: ``state`` int8 per machine (``UNKNOWN`` 0, ``OFF`` 1, ``RUNNING`` 3; 2 is kept for an IDLE state that a
load-based classification may add), ``since_ns`` int64 per machine (time of the last change, -1 none).
Returns the number of state changes in the frame.
"""

from __future__ import annotations

import numpy as np

from edge.kernels._jit import njit

UNKNOWN = 0
OFF = 1
IDLE = 2
RUNNING = 3


@njit(cache=True, nogil=True)
def update_states(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                  running_of: np.ndarray, state: np.ndarray, since_ns: np.ndarray, hold_until: np.ndarray,
                  grace_ns: int, m_ptr: np.ndarray, m_sig: np.ndarray, cfg: np.ndarray, frozen_col: int) -> int:
    """Advance every machine's state over the frame's running-indicator samples, in arrival order."""
    changes = 0
    for k in range(signal.shape[0]):
        m = running_of[signal[k]]
        x = value[k]
        if m < 0 or quality[k] == 2 or not np.isfinite(x):
            continue
        new = RUNNING if x >= 0.5 else OFF
        old = state[m]
        if new == old:
            continue
        t = ts_ns[k]
        since_ns[m] = t
        if old != UNKNOWN:
            changes += 1
            if t + grace_ns > hold_until[m]:
                hold_until[m] = t + grace_ns
        state[m] = new
        fz = 1.0 if new == OFF else 0.0
        for j in range(m_ptr[m], m_ptr[m + 1]):
            cfg[m_sig[j], frozen_col] = fz
    return changes
