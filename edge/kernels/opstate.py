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

State: ``state`` int8 per machine (``UNKNOWN`` 0, ``OFF`` 1, ``IDLE`` 2, ``RUNNING`` 3), ``since_ns`` int64 per
machine (time of the last change, -1 none). Returns the number of state changes in the frame.

IDLE (``update_activity``, below; the stack runs it after ``update_states``, with ``off: freeze`` only): powered
but not producing -- the running indicator on, the machine's cycle signals at rest for a while. It is judged
like OFF (frozen: the running baseline neither learns nor judges the idle values; data quality goes on) and its
end is a start (``grace_s``). ``update_states`` keeps an IDLE machine IDLE while its indicator says on and takes
it to OFF when the indicator drops. Before IDLE existed no checkpoint held the value 2, so old ones load as they
are.
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
        # an IDLE machine stays IDLE while its indicator says on (only ``update_activity`` ends an idle spell)
        on = IDLE if old == IDLE else RUNNING
        new = on if x >= on_at[s_in] else (OFF if x < off_at[s_in] else old)
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
        fz = 0.0 if new == RUNNING else 1.0
        for j in range(m_ptr[m], m_ptr[m + 1]):
            cfg[m_sig[j], frozen_col] = fz
    return changes



@njit(cache=True, nogil=True)
def count_resting(state: np.ndarray, n: int) -> int:
    """How many of the first ``n`` machines are OFF or IDLE (at rest).

    Why: the at-rest stage (``atrest.rest_chunk``) judges only resting machines' samples but reads every sample's
    machine and state to find them (~1.6 ns/sample at 15,000 signals); while no machine rests the stack skips the
    pass, which would change nothing. A kernel, not numpy: two compares and a reduction over a few hundred machines
    cost ~5 us of temporaries per frame, this one call ~2.
    """
    c = 0
    for m in range(min(n, state.shape[0])):
        c += (state[m] == OFF) | (state[m] == IDLE)
    return c

# ``update_activity``'s arrays. Per activity signal, parameters ``act_p`` (float64, n x P_WIDTH):
P_IDLE = 0  # declared: the value that means idle (a cycle-active bit's 0, a valve word's rest); NaN: the data rule
P_BAND = 1  # data rule: a move of more than this is activity (a fraction of the signal's plausible span)
P_REST = 2  # data rule: a flat value within P_BAND of this is at rest (the bottom of its range: vented, stopped)
P_WIDTH = 3
# ... and learned state ``act_i`` (int64, n x I_WIDTH; the anchor value a move is measured from is ``act_v``):
I_MOVED = 0  # time of the last move (ns), -1 none
I_RUN = 1  # moves in a row, each within idle_ns of the one before
I_CYCLER = 2  # 1: a cycle signal of its machine (declared, or learned: ``min_moves`` moves in a row while RUNNING)
I_RUN_T0 = 3  # time of the first move of the current run (ns)
I_WIDTH = 4


@njit(cache=True, nogil=True)
def update_activity(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
                    act_of: np.ndarray, act_p: np.ndarray, act_v: np.ndarray, act_i: np.ndarray,
                    m_last: np.ndarray, state: np.ndarray, since_ns: np.ndarray, hold_until: np.ndarray,
                    grace_ns: int, idle_ns: int, min_moves: int, m_ptr: np.ndarray, m_sig: np.ndarray,
                    cfg: np.ndarray, frozen_col: int, st: np.ndarray, st_snap: np.ndarray, keep_a: int,
                    keep_b: int, resume_ratio: float) -> int:
    """RUNNING <-> IDLE of machines with activity signals (``act_of[s]`` = machine, -1 none), in arrival order.

    Why: a station powered in automatic with no parts (its running bit 1, its test pressure vented all night) is
    neither off nor running; judged as running, its rate baseline learns "flat" for hours and the first cycle at
    the shift start reads as a 20-sigma slope (bench/RESULTS.md, "Merged main after the evening round").

    A good, finite sample of an activity signal is *activity* when it is a declared signal (``act_p[s, P_IDLE]``
    finite) reading anything but its idle value, or (data rule, ``P_IDLE`` NaN) when it moved by more than
    ``P_BAND`` from its anchor ``act_v[s]`` (the anchor then moves to it). Data rule: a signal becomes a cycle
    signal of its machine (``act_i[s, I_CYCLER]``, learned for good) after ``min_moves`` moves in a row, each
    within ``idle_ns`` of the last and together covering at least ``idle_ns`` (``I_RUN_T0``: the run's first move),
    while the machine is RUNNING -- a start ramp or a slow load swing moves a
    handful of times, a test cycle's pressure twice a cycle; declared signals are cycle signals from the start. Why
    the duration (added 2026-12-04): a fault taught a cycle -- on the simulated plant an oscillation of 92 s on a
    brazing cell's heater power made 20 moves in a row, the heater's night value sat at the bottom of its range, and
    the cell was IDLE all night, its faults judged by the rest band (both missed); injected oscillations last 30-120
    s and noise bursts 10-60 s, a real cycle goes on for hours.
    Only cycle signals count for the machine: ``m_last[m]`` is its latest activity. A RUNNING machine goes IDLE
    on a sample of a cycle signal that is at rest (declared: its idle value; data rule: no move and within
    ``P_BAND`` of ``P_REST``, the bottom of its range: a value frozen mid-range is a stuck sensor, not a pause)
    when no activity was seen for ``idle_ns`` since the later of ``m_last[m]`` and the last state change. An IDLE
    machine is RUNNING again at the first activity. Each change stamps ``since_ns``, raises ``hold_until`` (going
    IDLE: to ``t + grace_ns``, the at-rest stage's stop grace, as for OFF; back to RUNNING: the *resume grace*, below)
    and sets the frozen column of the machine's process signals
    (``m_sig[m_ptr[m]:m_ptr[m+1]]``): 1 while IDLE, 0 while RUNNING. OFF and UNKNOWN machines are left to
    ``update_states`` (their anchors still follow). Returns the number of state changes.

    IDLE is dated back to the last activity: at every activity the machine's process signals' state rows ``st``
    are copied to ``st_snap`` (the stack's ``state_alt``, unused with ``off: freeze``), and on the change to IDLE
    they are copied back, except the columns ``keep_a``/``keep_b`` (the latest sample's value and time). Why: the
    ``idle_ns`` of waiting are idle values the running baseline must not keep -- a rate stage's scale learns with a
    time constant of ~100 samples, and 300 s of a vented pressure left it reading the next morning's first fills
    as 10-sigma slopes for a quarter of an hour. (No snapshot yet, ``m_last`` -1: nothing is restored.)

    Resume grace: the way back from IDLE holds the machine's process alarms for ``min(grace_ns, resume_ratio * D)``,
    ``D`` the idle spell's length (from the last activity before it, or ``idle_ns`` before its start when none is
    known). Why: a return from IDLE is not a cold start. A station that waited ten minutes for parts is warm, its
    loads and temperatures have moved a ten-minute lag's worth at most, and the running baseline it resumes is the
    one of its last cycle; a full start grace (1,800 s) after every such pause left half an hour of its faults
    unannounced. After a night standing powered at a reduced load its thermal signals need the whole start grace:
    signals that left their operating point with a lag return with the same lag, so a spell of ``D`` needs about
    ``D`` to come back, and never more than a cold start. ``resume_ratio`` 0: no grace on resuming; a large ratio:
    always the full grace (as before 2026-12-04). The hold the change *to* IDLE set (the at-rest stage's stop grace)
    ends at the resume: it is about learning a rest band, which a running machine no longer does (a later hold, an
    operating change's, stays).
    """
    changes = 0
    for k in range(signal.shape[0]):
        s = signal[k]
        m = act_of[s]
        x = value[k]
        if m < 0 or quality[k] == 2 or not np.isfinite(x):
            continue
        t = ts_ns[k]
        cur = state[m]
        idle_v = act_p[s, P_IDLE]
        band = act_p[s, P_BAND]
        if np.isfinite(idle_v):
            active = x != idle_v
            resting = not active
        else:
            a = act_v[s]
            active = False
            if np.isnan(a):
                act_v[s] = x
            elif abs(x - a) > band:
                active = True
                act_v[s] = x
            resting = (not active) and abs(x - act_p[s, P_REST]) <= band
            if active:
                if cur == RUNNING:
                    last = act_i[s, I_MOVED]
                    if last >= 0 and t - last <= idle_ns:
                        act_i[s, I_RUN] += 1
                    else:
                        act_i[s, I_RUN] = 1
                        act_i[s, I_RUN_T0] = t
                    if act_i[s, I_RUN] >= min_moves and t - act_i[s, I_RUN_T0] >= idle_ns:
                        act_i[s, I_CYCLER] = 1
                act_i[s, I_MOVED] = t
        if act_i[s, I_CYCLER] == 0 or (cur != RUNNING and cur != IDLE):
            continue
        new = cur
        hold_to = t + grace_ns
        if active:
            if cur == IDLE:  # the resume grace: as long as the spell lasted (times ``resume_ratio``), at most a start's
                began = m_last[m] if m_last[m] >= 0 else since_ns[m] - idle_ns
                resume = resume_ratio * float(t - began)
                hold_to = t + (grace_ns if resume >= grace_ns else np.int64(resume))
            m_last[m] = t
            for j in range(m_ptr[m], m_ptr[m + 1]):
                r = m_sig[j]
                for c in range(st.shape[1]):
                    st_snap[r, c] = st[r, c]
            new = RUNNING
        elif resting and cur == RUNNING and t - max(m_last[m], since_ns[m]) > idle_ns:
            new = IDLE
            if m_last[m] >= 0:
                for j in range(m_ptr[m], m_ptr[m + 1]):
                    r = m_sig[j]
                    for c in range(st.shape[1]):
                        if c != keep_a and c != keep_b:
                            st[r, c] = st_snap[r, c]
        if new == cur:
            continue
        changes += 1
        if cur == IDLE and hold_until[m] <= since_ns[m] + grace_ns:  # the spell's own stop grace is over: replaced
            hold_until[m] = hold_to
        elif hold_to > hold_until[m]:
            hold_until[m] = hold_to
        state[m] = new
        since_ns[m] = t
        fz = 1.0 if new == IDLE else 0.0
        for j in range(m_ptr[m], m_ptr[m + 1]):
            cfg[m_sig[j], frozen_col] = fz
    return changes
