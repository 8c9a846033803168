"""Operating state per machine from its own state signals: unknown, off, running -- and what it does to judgement.

Why: a machine that is switched off is not a faulty machine, and its signals at rest are not a process to learn.
Measured on the simulated plant (bench/RESULTS.md, issue 15), every false alarm left after the per-signal
work fell between 22:00 and 07:00, from machines stopping, standing and restarting: a leak tester whose test
pressure restarts its cycles at 06:00 after a night at 0 raised a slope "never seen" in eight hours, load
signals decayed to their rest values and were judged against the running baseline. A reliability engineer's
condition monitoring knows the machine's state and judges a signal against the baseline of that state.

What this kernel does, per frame (before the signal stack scores it):
- A machine's state comes from its running indicator (``running_of[s]`` = machine whose indicator signal ``s``
  is, -1 otherwise): a usable sample >= ``on_at[s]`` means RUNNING, below ``off_at[s]`` OFF, in between the
  state stays as it was (hysteresis: a load indicator's noise near one threshold must not toggle the machine).
  A running bit has both at 0.5; a load signal (a feeder's active power) a band. A machine without an indicator
  stays UNKNOWN (judged as before). Bad or non-finite samples of the indicator leave the state as it was.
- A change of state (not the first sighting after a cold start) at ``t`` marks the machine changing until
  ``t + grace_ns``: ``hold_until[m]`` is raised to it, and the alarm gate (``alarms.settle_gate``) holds the
  machine's process alarms (level, change, rate) until then -- a start's ramps and thermal lags are a duration,
  so the grace is one (``OperatingStateSettings.grace_s``).
- ``mode`` OWN_BASELINE: each state has its own baseline. The signal state rows ``st`` of the
  machine's process signals (``m_sig[m_ptr[m]:m_ptr[m+1]]``: all but its state signals) are swapped with
  ``st_alt`` at every change between OFF and RUNNING (not at the first sighting), except the columns
  ``keep_a``/``keep_b`` (the latest sample's value and time, which the slope, BAD and SILENT read): the running
  baseline rests while the machine is off and comes back unchanged when it starts, and the off baseline learns
  and judges the machine at rest (a sensor can fail on a machine that is switched off). A state seen for the
  first time starts from a fresh baseline that settles like any other (``alarm_settle`` samples).
- ``mode`` FREEZE (the stack's default): while OFF, every process signal of the machine is *frozen*:
  ``cfg[s, frozen_col]`` is 1, and ``signal_stack.signal_chunk`` then neither learns from it nor judges it
  (score 0) -- the baseline stays the running one and is not judged against the rest values; only its
  data-quality judgement (BAD, SILENT) and its last sample's time go on. On RUNNING or UNKNOWN the column is
  0 again.
(In FREEZE mode ``st_alt`` is not touched; in OWN_BASELINE mode ``cfg`` is not.)

State: ``state`` int8 per machine (``UNKNOWN`` 0, ``OFF`` 1, ``RUNNING`` 3; 2 is kept for an IDLE state that a
load-based classification may add), ``since_ns`` int64 per machine (time of the last change, -1 none).
Returns the number of state changes in the frame.
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit

UNKNOWN = 0
OFF = 1
IDLE = 2
RUNNING = 3


FREEZE = 0
OWN_BASELINE = 1


@njit(cache=True, nogil=True)
def update_states(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                  running_of: np.ndarray, on_at: np.ndarray, off_at: np.ndarray, state: np.ndarray,
                  since_ns: np.ndarray, hold_until: np.ndarray,
                  grace_ns: int, m_ptr: np.ndarray, m_sig: np.ndarray, cfg: np.ndarray, frozen_col: int, mode: int,
                  st: np.ndarray, st_alt: np.ndarray, keep_a: int, keep_b: int) -> int:
    """Advance every machine's state over the frame's running-indicator samples, in arrival order."""
    changes = 0
    for k in range(signal.shape[0]):
        s_in = signal[k]
        m = running_of[s_in]
        x = value[k]
        if m < 0 or quality[k] == 2 or not np.isfinite(x):
            continue
        old = state[m]
        new = RUNNING if x >= on_at[s_in] else (OFF if x < off_at[s_in] else old)
        if new == old:
            continue
        t = ts_ns[k]
        since_ns[m] = t
        if old != UNKNOWN:
            changes += 1
            if t + grace_ns > hold_until[m]:
                hold_until[m] = t + grace_ns
        state[m] = new
        if mode == OWN_BASELINE:
            if old != UNKNOWN:  # off <-> running: each state's baseline in ``st`` while it is the current one
                for j in range(m_ptr[m], m_ptr[m + 1]):
                    s = m_sig[j]
                    for c in range(st.shape[1]):
                        if c != keep_a and c != keep_b:
                            tmp = st[s, c]
                            st[s, c] = st_alt[s, c]
                            st_alt[s, c] = tmp
            continue
        fz = 1.0 if new == OFF else 0.0
        for j in range(m_ptr[m], m_ptr[m + 1]):
            cfg[m_sig[j], frozen_col] = fz
    return changes
