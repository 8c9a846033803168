"""At-rest judgement: a switched-off machine's process signals against what the machine at rest looks like.

Why: with ``operating_state.off: freeze`` an off machine's signals are judged for data quality only, so a fault
on a stopped machine goes unseen (current flowing in a stopped compressor, a pressure that is held, a bearing
warming up, vibration on a machine that should stand still). Judging them with the running stack's robust z and
CUSUM against an off baseline (``own_baseline``) finds them but floods: at rest many signals read noise clipped
at a limit (a current, a power), or a quantised constant, whose robust scale is tiny or zero. Measured on the
simulated dev plant (bench/RESULTS.md, issue 15): ~10 false alarms per 1,000 signal-hours. A stopped machine is
nearly constant, so this stage asks one question -- has the value left the band a resting machine stays in, for
long enough -- with a band that cannot collapse onto clipped or quantised noise.

Per sample of a signal whose machine (``machine_of[s]``, -1: not judged here) is OFF (``m_state``) and past its
stop grace (``ts > hold_until[m]``: a stop's ramps and thermal lags are not rest values; neither learned nor
judged), in arrival order:

- a new off period (the machine's ``m_since`` differs from the one the signal last rested in): the rest value
  restarts at this sample (``LOC`` = x, evidence 0); the band's learned width (``MAD``) is kept across periods;
- ``d = |x - LOC|``; the band half-width is ``env = mult * MAD + floor`` with ``floor = max(floor[s, 0],
  floor[s, 1] * |R|, rel_res * max(|LOC|, |R|))``: ``floor[s, 0]`` (set by the owner) comes from the signal's
  resolution and plausible span, so a clipped or quantised rest value with no visible noise still gets a band of
  a few steps, not zero; ``R = run_st[s, run_col]`` is the running baseline's level (the signal stack's, frozen
  while the machine is off), and ``floor[s, 1]`` a fraction of it for signals without a span (a load with no
  range reads 1e-40 at rest: a band relative to that flags every float step);
- **bounded rest values** (why: a signal that keeps moving at rest -- a pressure or a ratio that follows the
  hall's own cycle, not the machine's -- is a bounded wave, not noise: its deviations from the followed rest value
  never exceed its amplitude, while 6 mean absolute deviations of a sine are 3.8 amplitudes, so a step of two
  amplitudes hid inside the band; on the simulated plant most of the visible off-machine faults missed were on
  such signals): ``PEAK``, the largest ``d`` learned, decaying with ``tau_mad_s``, caps the MAD part at
  ``peak_mult * PEAK`` (``peak_mult`` 0: no cap) once the signal has learned ``peak_warm_s`` at rest *and* its off
  period is ``peak_warm_s`` past the stop grace (a new off period's rest value starts at one sample and needs a
  few ``tau_loc_s`` to reach the middle of the wave). For Gaussian noise ``peak_mult * PEAK`` (~5-6 sigmas) is
  wider than ``mult * MAD`` (~4.8 sigmas) and changes nothing; the cap only ever narrows the band;
- once the signal has learned ``warm_s`` seconds at rest: evidence ``EXC`` (unit: band-widths x seconds) grows by
  ``min(d / env - 1, cap) * dt`` while outside the band and drains by ``drain * dt`` inside; the score is
  ``EXC^2 / (EXC^2 + persist^2)`` with kind ``AT_REST`` if larger than the sample's score so far (an off machine's
  signals score 0 in the signal stack). Evidence is capped at ``E_MAX * persist`` so that an alarm closes within
  seconds of the value's return however long the fault lasted. A large excursion alarms in a second, a
  barely-outside one only after it has lasted: persistence is time, whatever the polling rate;
- learning (good quality only): ``LOC`` and ``MAD`` (``PEAK``: decays like ``MAD``, then ``max(PEAK, d)``) are
  exponentially weighted with time constants ``tau_loc_s``
  and ``tau_mad_s`` (weight ``r / (1 + r)``, ``r = dt / tau``: the exponential's first order, no ``exp`` per sample;
  during warm-up a plain running mean), and only from a sample inside the band with no
  evidence pending -- nothing is learned while the signal is outside or alarmed, so a persistent fault is never
  absorbed into the rest band.

**Machine-wide start test** (why: on the simulated plant every at-rest false alarm fell in the minutes before the
06:00 start, when a machine's loads ramp up before its state says RUNNING -- a running bit that rises at 5 % load, an
energy meter whose state comes from its load with a hysteresis). A start moves many of one machine's signals out of
their rest bands together; a fault moves one (a micro-leak three). So while a frame is judged, the pass counts per
machine the distinct warm signals that are *leaving*, and have been for ``start_persist_s`` (a dip back inside
shorter than that does not break the run: a noisy ramp; independent noise outliers of several signals never line
up for seconds, a ramp does; ``sig_start``); a machine with at least ``m_need[m]`` of them (the owner sets
``max(start_min, start_fraction * judged signals)``) is *starting* until ``start_hold_s`` after the frame's latest
timestamp (``m_start[m, START_UNTIL]``), from the next frame on (one frame late: a start is a ramp of minutes, and
one pass over the frame instead of two cost ~8 ns/sample less). A signal is leaving when

- it is beyond ``start_band`` band-widths (the band without the peak cap: a wave at rest reaches 3/4 of its capped
  band every cycle) from the rest value, or
- it is a load on its way to its running level (``start_run_fraction`` 0: off). Why: a start
  moves every load by the same fraction of its running level ``R``, but their rest bands differ tenfold -- a clean
  speed left its band at 0.8 % load and alarmed before noisy currents passed half of theirs at ~1.7 % (the 104
  nightly false alarms of the whole demo plant). Its deviation from the rest value, smoothed over ``start_tau_s``
  (``DEV``: the smoothing averages rest noise out), points towards ``R``, ``R`` is at least ``start_load_bands``
  bands from the rest value (a load, not a signal that reads the same whether the machine runs or not: a wave at
  rest would count half the time), and ``|DEV|`` has covered ``start_run_fraction`` of the way and
  ``start_noise_band`` bands. (``R`` as it froze at the stop: it lags the shift's ramp down and reads 10-16 % of
  the running level. Reading the kept running level below instead made many more signals "loads" whose smoothed
  rest deviation heads there -- slow waves, temperatures following the hall -- and held off compressors and presses
  as starting all night: off-machine recall 0.80 -> 0.37 on seed 2, a tenth of the demo plant.)

**The running level kept** (``run_level``, ``run_lvl``): the slow maximum and minimum of the running baseline's
level while the machine RUNS; the farther of them from the rest value is where a load runs (none where the range
holds the rest value: a temperature cycling around ambient). The band's floor reads the largest known running level
(the baseline as frozen at the stop made the meters' noise-free ``peak_demand`` a band of 0.5 % of 15 % of its
running level, left at ~0.1 % load minutes before anything else moved), and the plant start test below reads it.

**Plant start test** (why: a machine with a single load -- a leak tester's pump, which ramps with the shift's power
before the first part comes -- can never show the machine-wide test several signals leaving; it alarmed at every
shift start). A shift start moves many machines at once, a fault one machine. A machine *has a load heading to its
running level* in a frame when one of its counted signals, and its deviation smoothed over ``start_tau_s``, are
beyond ``start_band`` of its band on the side of its kept running level, at least ``start_load_bands`` bands away (a
wave at rest never reaches half its band; a noise outlier's smoothed deviation does not, a ramp's does); the frame's
latest timestamp is kept (``m_start[m, LOAD_AT]``). While at least ``start_peers`` machines (the owner sets
``plant_need``: ``max(peers_min, peers_fraction * machines judged at rest)``; 0: off) had such a load within
``start_peer_window_s``, each machine with such a load in the frame is starting (machines starting by the
machine-wide test are no peers: that test fires at night too, and with them off machines were held all night). Cost:
a fault that moves one load of an off machine towards its running level while a plant start is under way is held as
a start (minutes a day).

While a machine is starting its signals are neither judged nor learned and their evidence is dropped (an alarm
opened by the first signal to leave closes): the hold lasts until the machine's state follows (RUNNING: this pass
no longer runs) or the signals are back in their bands for ``start_hold_s``. ``sig_start[s, STAMP]`` counts each
signal once per frame (``frame`` increases by one per call); ``m_start[m, HOT]`` is scratch, left at 0.

Bad, non-finite, out-of-order samples and samples with ``dt`` 0 change nothing (nor count for the start test); gaps
longer than ``max_dt_s`` count as ``max_dt_s``. Returns the number of samples scoring >= 0.5.

State per signal (float64): ``LOC``, ``MAD``, ``LEARNED_S`` (seconds of rest learned), ``EXC``, ``LAST_TS`` (ns of
its last usable rest sample, NaN none), ``PERIOD`` (the machine's ``m_since`` of the off period it rests in, NaN
none), ``PEAK`` (largest deviation learned, decaying), ``DEV`` (deviation from ``LOC`` smoothed over
``start_tau_s``, for the start test).
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit

LOC = 0
MAD = 1
LEARNED_S = 2
EXC = 3
LAST_TS = 4
PERIOD = 5
PEAK = 6
DEV = 7
LAST_X = 8  # the frozen-value test (see module): the last value at rest, NaN none
RUN = 9  # repeats of it in a row (samples)
RUN_MAX = 10  # the longest ordinary run learned (decaying with ``frozen_tau_s``)
RUNS = 11  # ordinary runs learned
WIDTH = 12

P_MULT = 0
P_REL_RES = 1
P_WARM_S = 2
P_PERSIST = 3
P_CAP = 4
P_DRAIN = 5
P_TAU_LOC = 6
P_TAU_MAD = 7
P_MAX_DT = 8
P_START_BAND = 9
P_START_HOLD_S = 10
P_PEAK_MULT = 11
P_PEAK_WARM_S = 12
P_START_PERSIST_S = 13
P_START_RUN_FRACTION = 14
P_START_TAU_S = 15
P_START_NOISE_BAND = 16
P_START_LOAD_BANDS = 17
P_FROZEN_MULT = 18
P_FROZEN_MIN_RUN = 19
P_FROZEN_RUNS = 20
P_FROZEN_TAU_S = 21
P_START_PEERS = 22  # machines starting together that make a plant start (0: no plant start test; the owner sets it)
P_START_PEER_WINDOW_S = 23  # a machine's load heading to its running level counts as a peer this long
P_WIDTH = 24

START_UNTIL = 0  # columns of ``m_start`` (int64 per machine): starting until this time (ns), -1 never
HOT = 1  # scratch: signals beyond the start band in this frame
LOADS = 2  # scratch: of them, loads heading to their running level (the running-level test) in this frame
LOAD_AT = 3  # the latest frame end (ns) at which it had such a load, -1 never (the plant start test's peers)
M_WIDTH = 4

RUN_HI = 0  # columns of ``run_lvl`` (float64 per signal): the running level's slow maximum while RUNNING, NaN none
RUN_LO = 1  # and its slow minimum (a load can run below its rest value: a vacuum, a reactive power)
RUN_WIDTH = 2

STAMP = 0  # columns of ``sig_start`` (int64 per signal): the frame it last counted in (once per frame)
HOT_SINCE = 1  # since when (ns) it has been beyond the start band (breaks shorter than ``start_persist_s`` bridged)
LAST_BEYOND = 2  # its latest sample beyond the start band (ns)
S_WIDTH = 3

OFF = 1  # opstate.OFF (kept here as a literal: kernels import no detector module)
IDLE = 2  # opstate.IDLE: powered, not producing -- judged at rest as OFF is (branch idle)
RUNNING = 3  # opstate.RUNNING: the running level's extremes are kept (``run_level``)
KIND_AT_REST = 11  # kinds.Kind.AT_REST
E_MAX = 3.0  # evidence is capped at this many ``persist`` (score 0.9): a long fault's alarm closes soon after it ends


def make_params(mult: float, rel_res: float, warm_s: float, persist: float, cap: float, drain: float,
                tau_loc_s: float, tau_mad_s: float, max_dt_s: float, start_band: float = 1.0,
                start_hold_s: float = 600.0, peak_mult: float = 0.0, peak_warm_s: float = 1800.0,
                start_persist_s: float = 0.0, start_run_fraction: float = 0.0, start_tau_s: float = 10.0,
                start_noise_band: float = 0.15, start_load_bands: float = 3.0, frozen_mult: float = 0.0,
                frozen_min_run: float = 5.0, frozen_runs: float = 20.0, frozen_tau_s: float = 21600.0,
                start_peers: float = 0.0, start_peer_window_s: float = 60.0) -> np.ndarray:
    p = np.zeros(P_WIDTH, dtype=np.float64)
    p[P_MULT], p[P_REL_RES], p[P_WARM_S], p[P_PERSIST] = mult, rel_res, warm_s, persist
    p[P_CAP], p[P_DRAIN], p[P_TAU_LOC], p[P_TAU_MAD], p[P_MAX_DT] = cap, drain, tau_loc_s, tau_mad_s, max_dt_s
    p[P_START_BAND], p[P_START_HOLD_S] = start_band, start_hold_s
    p[P_PEAK_MULT], p[P_PEAK_WARM_S], p[P_START_PERSIST_S] = peak_mult, peak_warm_s, start_persist_s
    p[P_START_RUN_FRACTION], p[P_START_TAU_S] = start_run_fraction, start_tau_s
    p[P_START_NOISE_BAND], p[P_START_LOAD_BANDS] = start_noise_band, start_load_bands
    p[P_FROZEN_MULT], p[P_FROZEN_MIN_RUN], p[P_FROZEN_RUNS] = frozen_mult, frozen_min_run, frozen_runs
    p[P_FROZEN_TAU_S] = frozen_tau_s
    p[P_START_PEERS], p[P_START_PEER_WINDOW_S] = start_peers, start_peer_window_s
    return p


def init_machines(n_machines: int) -> np.ndarray:
    m = np.zeros((max(n_machines, 1), M_WIDTH), dtype=np.int64)
    m[:, START_UNTIL] = -1
    m[:, LOAD_AT] = -1
    return m


def init_run_level(n: int) -> np.ndarray:
    """The running level's extremes per signal (``run_level``): NaN until the signal's machine was seen RUNNING."""
    return np.full((n, RUN_WIDTH), np.nan, dtype=np.float64)


def plant_need(machine_of: np.ndarray, peers_min: float, peers_fraction: float) -> float:
    """Machines whose loads head to their running level together that make a plant start: ``max(peers_min,
    peers_fraction * machines judged at rest)``; 0 (off) when ``peers_min`` is 0."""
    if peers_min <= 0:
        return 0.0
    n_judged = np.unique(machine_of[machine_of >= 0]).size
    return float(max(peers_min, peers_fraction * n_judged))


def init_signals(n: int) -> np.ndarray:
    st = np.zeros((n, S_WIDTH), dtype=np.int64)
    st[:, STAMP] = -1
    st[:, HOT_SINCE] = -1
    st[:, LAST_BEYOND] = -1
    return st


def machine_need(machine_of: np.ndarray, n_machines: int, start_min: float, start_fraction: float) -> np.ndarray:
    """Signals beyond the start band that make a machine *starting*: ``max(start_min, start_fraction * judged)``."""
    judged = np.bincount(machine_of[machine_of >= 0], minlength=max(n_machines, 1)).astype(np.float64)
    return np.maximum(start_min, start_fraction * judged[:max(n_machines, 1)])


def init_state(n: int) -> np.ndarray:
    st = np.zeros((n, WIDTH), dtype=np.float64)
    st[:, LAST_TS] = np.nan
    st[:, PERIOD] = np.nan
    st[:, LAST_X] = np.nan
    return st


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _fmax(a: float, b: float) -> float:
    """``max(a, b)`` with Python's semantics, as a plain compare (numba's ``max`` builtin on floats cost ~15 ns per
    sample here: measured with bench/atrest_cost.py)."""
    return b if b > a else a


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _fmin(a: float, b: float) -> float:
    """``min(a, b)`` with Python's semantics, as a plain compare (see ``_fmax``)."""
    return b if b < a else a


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _floor(st: np.ndarray, s: int, floor: np.ndarray, p: np.ndarray, run_st: np.ndarray, run_col: int,
           run_lvl: np.ndarray) -> float:
    """The band's floor: register steps or span (``floor[s, 0]``), a fraction of the running level (``floor[s, 1]``,
    for signals without a span), the value's float resolution. The running level is the largest of the baseline's
    and its kept extremes (``run_level``; NaN: none): the baseline as it froze at a stop read 10-16 % of it."""
    run = _fmax(abs(run_st[s, run_col]), _fmax(abs(run_lvl[s, RUN_HI]), abs(run_lvl[s, RUN_LO])))
    return _fmax(_fmax(floor[s, 0], floor[s, 1] * run), p[P_REL_RES] * _fmax(abs(st[s, LOC]), run))


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _run_gap(run_lvl: np.ndarray, s: int, run_now: float, loc: float) -> float:
    """From the rest value to the running level the start test heads for: the farther of the running level's slow
    maximum and minimum (``run_level``); the running baseline's current level until the machine was seen running."""
    hi = run_lvl[s, RUN_HI]
    if not hi == hi:  # NaN: never seen RUNNING since the level was kept
        return run_now - loc
    g_hi = hi - loc
    g_lo = run_lvl[s, RUN_LO] - loc
    if g_hi * g_lo <= 0.0:  # runs on both sides of its rest value (a temperature cycling around ambient): no load
        return 0.0
    return g_hi if abs(g_hi) >= abs(g_lo) else g_lo


@njit(cache=True, nogil=True)
def rest_chunk(ts_ns: np.ndarray, signal: np.ndarray, value: np.ndarray, quality: np.ndarray,
               machine_of: np.ndarray, m_state: np.ndarray, m_since: np.ndarray, hold_until: np.ndarray,
               floor: np.ndarray, st: np.ndarray, p: np.ndarray, score: np.ndarray, kind: np.ndarray,
               m_need: np.ndarray, m_start: np.ndarray, sig_start: np.ndarray, frame: int, run_st: np.ndarray,
               run_col: int, run_lvl: np.ndarray) -> int:
    """Judge and learn the frame's samples of off machines' signals against their at-rest band, and count the
    signals leaving it for the start test, whose verdict holds from the next frame on (see module)."""
    n_high = 0
    persist2 = p[P_PERSIST] * p[P_PERSIST]
    persist_ns = np.int64(p[P_START_PERSIST_S] * 1e9)
    frozen_on = p[P_FROZEN_MULT] > 0.0
    inv_tau_run = 1.0 / p[P_FROZEN_TAU_S]
    inv_tau_dev = 1.0 / p[P_START_TAU_S]
    t_max = np.int64(-(2 ** 62))
    any_hot = False
    for k in range(signal.shape[0]):
        s = signal[k]
        m = machine_of[s]
        if m < 0 or (m_state[m] != OFF and m_state[m] != IDLE):
            continue
        t = ts_ns[k]
        if t > t_max:
            t_max = t
        if t <= hold_until[m]:
            continue
        x = value[k]
        if quality[k] == 2 or not np.isfinite(x):
            continue
        tf = float(t)
        period = float(m_since[m])
        if not st[s, PERIOD] == period:  # a new off period: the rest value starts here
            st[s, PERIOD] = period
            st[s, LOC] = x
            st[s, EXC] = 0.0
            st[s, DEV] = 0.0
            st[s, LAST_TS] = tf
            st[s, LAST_X] = x
            st[s, RUN] = 0.0
            continue
        dt_s = (tf - st[s, LAST_TS]) * 1e-9
        if not dt_s > 0.0:
            continue
        dt_s = _fmin(dt_s, p[P_MAX_DT])
        st[s, LAST_TS] = tf
        loc = st[s, LOC]
        d = abs(x - loc)
        floor_s = _floor(st, s, floor, p, run_st, run_col, run_lvl)
        core = p[P_MULT] * st[s, MAD]
        warm = st[s, LEARNED_S] >= p[P_WARM_S]
        if p[P_START_RUN_FRACTION] > 0.0:  # the start test's smoothed deviation (weight first order in dt: no division)
            st[s, DEV] += _fmin(dt_s * inv_tau_dev, 1.0) * (x - loc - st[s, DEV])
        if warm and sig_start[s, STAMP] != frame:  # the start test: is this signal leaving its rest band?
            env_u = core + floor_s  # the band without the peak cap: a wave at rest reaches 3/4 of its capped band
            beyond = d > p[P_START_BAND] * env_u
            leaving = beyond
            if not leaving and p[P_START_RUN_FRACTION] > 0.0:  # a load on its way to its running level?
                g = run_st[s, run_col] - loc
                dev = st[s, DEV]
                ag, ad = abs(g), abs(dev)  # ``&``, not ``and``: the sign of rest noise is a coin toss (branchless)
                leaving = (dev * g > 0.0) & (ag >= p[P_START_LOAD_BANDS] * env_u) & (
                    ad >= p[P_START_RUN_FRACTION] * ag) & (ad >= p[P_START_NOISE_BAND] * env_u)
            if leaving:
                if sig_start[s, HOT_SINCE] < 0 or t - sig_start[s, LAST_BEYOND] > persist_ns:
                    sig_start[s, HOT_SINCE] = t  # a new run (a dip back inside shorter than ``start_persist_s``: none)
                sig_start[s, LAST_BEYOND] = t
                if t - sig_start[s, HOT_SINCE] >= persist_ns:
                    sig_start[s, STAMP] = frame
                    m_start[m, HOT] += 1
                    if beyond:  # the plant start test: a load beyond half its band towards its kept running
                        # level (a wave at rest never reaches half its uncapped band: a sine's peak is 0.26 of 6 MADs)
                        g_run = _run_gap(run_lvl, s, run_st[s, run_col], loc)
                        dev_b = st[s, DEV]  # smoothed over ``start_tau_s`` beyond half the band too: no noise outlier
                        if dev_b * g_run > 0.0 and abs(dev_b) > p[P_START_BAND] * env_u and \
                                abs(g_run) >= p[P_START_LOAD_BANDS] * env_u:
                            m_start[m, LOADS] += 1
                    any_hot = True
        if t <= m_start[m, START_UNTIL]:  # the machine is starting: not judged, not learned, evidence dropped
            st[s, EXC] = 0.0
            st[s, LAST_X] = x
            st[s, RUN] = 0.0
            continue
        if p[P_PEAK_MULT] > 0.0 and st[s, LEARNED_S] >= p[P_PEAK_WARM_S] and \
                tf - float(max(hold_until[m], m_since[m])) >= p[P_PEAK_WARM_S] * 1e9:
            core = _fmin(core, p[P_PEAK_MULT] * st[s, PEAK])
        env = core + floor_s
        inside = d <= env
        if warm:  # the level test: evidence outside the band
            e = st[s, EXC]
            if inside:
                e = _fmax(e - p[P_DRAIN] * dt_s, 0.0)
            else:
                u = d / env - 1.0 if env > 0.0 else p[P_CAP]
                e = _fmin(e + _fmin(u, p[P_CAP]) * dt_s, E_MAX * p[P_PERSIST])
            st[s, EXC] = e
            sc = e * e / (e * e + persist2) if e > 0.0 else 0.0
        else:
            sc = 0.0
        if frozen_on:  # the frozen-value test: a run of identical values longer than the rest's own runs
            run_prev = st[s, RUN]
            rep_f = 1.0 if x == st[s, LAST_X] else 0.0
            run = (run_prev + 1.0) * rep_f
            st[s, RUN] = run
            st[s, LAST_X] = x
            limit = p[P_FROZEN_MULT] * _fmax(st[s, RUN_MAX], p[P_FROZEN_MIN_RUN])
            # judged only where the rest band is noise, not floor (6 MADs >= floor): a noise-free value that
            # decays to a constant at rest (an energy meter's demand reaching float32's 0) has no flicker to stop
            if warm and st[s, RUNS] >= p[P_FROZEN_RUNS] and run > 0.0 and p[P_MULT] * st[s, MAD] >= floor_s:
                sc = _fmax(sc, run / (run + limit))
            if quality[k] == 0:  # a run that ended within the limit is ordinary: learned (a frozen one is not;
                # while fewer than ``frozen_runs`` are learned, every one is); the longest decays (first order in dt)
                st[s, RUN_MAX] -= _fmin(dt_s * inv_tau_run, 1.0) * st[s, RUN_MAX]
                if rep_f == 0.0 and (run_prev <= limit or st[s, RUNS] < p[P_FROZEN_RUNS]):  # (a change: run 0)
                    st[s, RUN_MAX] = _fmax(st[s, RUN_MAX], run_prev)
                    st[s, RUNS] += 1.0
        if sc > score[k]:
            score[k] = sc
            kind[k] = KIND_AT_REST
        if sc >= 0.5:
            n_high += 1
        if quality[k] == 0 and (not warm or (inside and st[s, EXC] == 0.0)):
            learned = st[s, LEARNED_S]
            r_loc = dt_s / p[P_TAU_LOC]
            r_mad = dt_s / p[P_TAU_MAD]
            a_loc = r_loc / (1.0 + r_loc)  # ~ 1 - exp(-dt/tau) for dt << tau, without an exp per sample
            a_mad = r_mad / (1.0 + r_mad)
            if not warm:  # a running mean until warm: no start-up bias towards 0
                a_loc = _fmax(a_loc, dt_s / (learned + dt_s))
                a_mad = _fmax(a_mad, dt_s / (learned + dt_s))
            st[s, MAD] += a_mad * (d - st[s, MAD])
            st[s, PEAK] = _fmax(st[s, PEAK] - a_mad * st[s, PEAK], d)
            st[s, LOC] += a_loc * (x - loc)
            st[s, LEARNED_S] = learned + dt_s
    if any_hot:  # machines with enough signals leaving their bands in this frame are starting
        hold_ns = np.int64(p[P_START_HOLD_S] * 1e9)
        plant = False
        if p[P_START_PEERS] > 0.0:  # the plant start test: machines starting, or with a load heading to running
            window_ns = np.int64(p[P_START_PEER_WINDOW_S] * 1e9)
            peers = 0
            for m in range(m_start.shape[0]):
                if m_start[m, LOADS] > 0:
                    m_start[m, LOAD_AT] = t_max
                if m_start[m, LOAD_AT] >= 0 and t_max - m_start[m, LOAD_AT] <= window_ns:
                    peers += 1  # (not machines starting by the machine-wide test: that fires at night too)
            plant = peers >= p[P_START_PEERS]
        for m in range(m_start.shape[0]):
            if m_start[m, HOT] >= m_need[m] or (plant and m_start[m, LOADS] > 0):
                m_start[m, START_UNTIL] = t_max + hold_ns
            m_start[m, HOT] = 0
            m_start[m, LOADS] = 0
    return n_high


@njit(cache=True, nogil=True)
def run_level(machine_of: np.ndarray, m_state: np.ndarray, run_st: np.ndarray, run_col: int, run_lvl: np.ndarray,
              a: float) -> int:
    """Keep, per signal of a RUNNING machine, the slow maximum and minimum of the running baseline's level
    ``R = run_st[s, run_col]``: ``hi = max(R, hi - a * (hi - R))`` (``lo`` mirrored), ``a`` the decay of this call
    (``elapsed / tau``, at most 1). Why: the start test's running-level test reads where a load runs; the baseline's
    level as it froze at a stop lags the shift's ramp down and reads 10-16 % of the running level, so a machine's
    morning ramp was not recognised as heading there (module docstring). Called every few seconds, not per sample
    (the extremes of a level that changes over minutes). Returns the number of signals updated."""
    n_up = 0
    for s in range(machine_of.shape[0]):
        m = machine_of[s]
        if m < 0 or m_state[m] != RUNNING:
            continue
        r = run_st[s, run_col]
        if not np.isfinite(r):
            continue
        hi = run_lvl[s, RUN_HI]
        if not hi == hi:
            run_lvl[s, RUN_HI] = r
            run_lvl[s, RUN_LO] = r
        else:
            run_lvl[s, RUN_HI] = _fmax(r, hi - a * (hi - r))
            lo = run_lvl[s, RUN_LO]
            run_lvl[s, RUN_LO] = _fmin(r, lo + a * (r - lo))
        n_up += 1
    return n_up


# ``thaw_independent``: a signal that reads the same at rest as running keeps its running judgement while its
# machine is off. Parameters (float64, ``make_thaw_params``):
T_RATIO_MIN = 0  # rest scale / running scale at least this (0: the thaw is off)
T_RATIO_MAX = 1  # ... and at most this
T_DIST = 2  # |rest value - running level| at most this many of the larger scale
T_LEARNED_S = 3  # seconds of rest learned before a signal's rest is compared
T_WARMUP = 4  # samples the running baseline has learned (its own warm-up) before its scale is compared
T_WIDTH = 5


def make_thaw_params(ratio_min: float, ratio_max: float, dist: float, learned_s: float,
                     warmup: float) -> np.ndarray:
    p = np.zeros(T_WIDTH, dtype=np.float64)
    p[T_RATIO_MIN], p[T_RATIO_MAX], p[T_DIST], p[T_LEARNED_S], p[T_WARMUP] = ratio_min, ratio_max, dist, learned_s, \
        warmup
    return p


TH_SEEN = 0  # columns of the thaw's per-machine state (int64): the state change (``m_since``) it last looked at
TH_NEXT = 1  # when (ns) it looks again while the machine stays off (-1: not)
TH_WIDTH = 2


def init_thaw(n_machines: int) -> np.ndarray:
    """Per machine: no state change looked at (-2: ``m_since`` is -1 while unseen), no look scheduled."""
    th = np.full((max(n_machines, 1), TH_WIDTH), -1, dtype=np.int64)
    th[:, TH_SEEN] = -2
    return th


@njit(cache=True, nogil=True, _nrt=False)  # per-signal helper: see edge/kernels/__init__.py
def reads_same(st: np.ndarray, s: int, run_st: np.ndarray, loc_col: int, scale_col: int, count_col: int,
               tp: np.ndarray) -> bool:
    """Does signal ``s`` read at rest what it reads running? Its rest noise (MAD in standard deviations) is between
    ``T_RATIO_MIN`` and ``T_RATIO_MAX`` of the running baseline's scale, and its rest value within ``T_DIST`` of the
    larger of the two scales from the running level, with ``T_LEARNED_S`` of rest learned and the running baseline
    warm. A load's rest noise is a few % of its running scale, a vibration's or a temperature's wave at rest a
    fifth to a half; a signal that follows the hall, not the machine, ~1 (bench/RESULTS.md, "Recall on machines
    switched off")."""
    if not st[s, LEARNED_S] >= tp[T_LEARNED_S] or not run_st[s, count_col] >= tp[T_WARMUP]:
        return False
    run_sd = run_st[s, scale_col]
    rest_sd = st[s, MAD] * 1.2533141373155001  # MAD -> standard deviations (normal), as the running scale
    if not (run_sd > 0.0 and rest_sd > 0.0):
        return False  # a constant (at rest or running) has no scale to compare: not judged as the same
    ratio = rest_sd / run_sd
    if not (ratio >= tp[T_RATIO_MIN] and ratio <= tp[T_RATIO_MAX]):
        return False
    return abs(st[s, LOC] - run_st[s, loc_col]) <= tp[T_DIST] * _fmax(run_sd, rest_sd)


# Kinds the running stack gives a process finding (``edge.kernels.kinds``: LEVEL, CHANGE, STUCK, RATE, RANGE); data
# quality (BAD, SILENT, DEVICE) keeps its own.
PROCESS_KIND_MIN = 1
PROCESS_KIND_MAX = 5


@njit(cache=True, nogil=True)
def label_thawed(signal: np.ndarray, score: np.ndarray, kind: np.ndarray, machine_of: np.ndarray,
                 m_state: np.ndarray, cfg: np.ndarray, frozen_col: int, at_rest_kind: int) -> int:
    """A process finding of the running stack on a thawed signal (``thaw_independent``) of an OFF or IDLE machine
    takes the kind ``at_rest_kind``: it was judged knowing the machine rests, so the alarm layer's state suppression
    must not take it for a stop's decay (``edge.alarms``: an incident with an AT_REST contributor is never
    suppressed by ``off`` or ``idle``). Why: with the running kinds the thaw's finds were detected and then hidden
    -- on the whole demo plant the faults annunciated on off machines fell from ~255 to 195 of 338 while the
    detectors found more of them. Data-quality kinds keep theirs. Returns the number of samples relabelled."""
    n = 0
    for i in range(signal.shape[0]):
        k = kind[i]
        if not score[i] > 0.0 or k < PROCESS_KIND_MIN or k > PROCESS_KIND_MAX:
            continue
        s = signal[i]
        if s >= machine_of.shape[0]:
            continue
        m = machine_of[s]
        if m < 0 or (m_state[m] != OFF and m_state[m] != IDLE) or cfg[s, frozen_col] != 0.0:
            continue
        kind[i] = at_rest_kind
        n += 1
    return n


@njit(cache=True, nogil=True)
def thaw_independent(t_ns: int, m_state: np.ndarray, m_since: np.ndarray, m_thaw: np.ndarray, m_ptr: np.ndarray,
                     m_sig: np.ndarray, rest_machine_of: np.ndarray, st: np.ndarray, run_st: np.ndarray, loc_col: int,
                     scale_col: int, count_col: int, tp: np.ndarray, cfg: np.ndarray, frozen_col: int) -> int:
    """At each machine's change to OFF or IDLE (``m_since[m]`` differs from ``m_thaw[m, TH_SEEN]``, which then
    follows it), and every ``T_LEARNED_S`` after it while the machine stays off (``m_thaw[m, TH_NEXT]``, compared
    with the frame's time ``t_ns``), its at-rest judged signals that read the same at rest as running
    (``reads_same``) are thawed: their frozen column in ``cfg`` goes back to 0, so the running stack keeps judging
    and learning them while the machine is off. Why the later looks: a machine's first off period has no rest
    learned at its stop (on the simulated plant with half a day of history, most machines off on the scored night
    had idled the night before); a thawed signal stays thawed until the machine's next change (``opstate``
    freezes it again at the next stop).

    Why: on the simulated demo plant most visible faults missed on switched-off machines were on signals that do not
    follow the machine at all (a compressor's suction temperature, oil pressure, COP: the hall's cycle), judged only
    by the at-rest band, which must hold the whole wave -- a calibration offset of 1.5-3 amplitudes leaves it for a
    fraction of each cycle. The running stack's change and level stages see the offset against the wave they learned
    (bench/RESULTS.md, "Recall on machines switched off"). A signal that reads differently at rest (a load, a
    temperature, a vibration) stays frozen: the running baseline must not learn or judge its rest values.

    The decision uses the rest learned in earlier off periods and the running baseline as it froze at the stop; it
    is taken once per change (a machine's own ``m_ptr``/``m_sig`` members, those with ``rest_machine_of`` >= 0).
    Returns the number of signals thawed.
    """
    n = 0
    if not tp[T_RATIO_MIN] > 0.0:
        return 0
    every_ns = np.int64(_fmax(tp[T_LEARNED_S], 1.0) * 1e9)
    for m in range(m_ptr.shape[0] - 1):
        due = m_thaw[m, TH_NEXT] >= 0 and t_ns >= m_thaw[m, TH_NEXT]
        if m_since[m] == m_thaw[m, TH_SEEN] and not due:
            continue
        m_thaw[m, TH_SEEN] = m_since[m]
        if m_state[m] != OFF and m_state[m] != IDLE:
            m_thaw[m, TH_NEXT] = -1
            continue
        m_thaw[m, TH_NEXT] = t_ns + every_ns
        for j in range(m_ptr[m], m_ptr[m + 1]):
            s = m_sig[j]
            if rest_machine_of[s] >= 0 and reads_same(st, s, run_st, loc_col, scale_col, count_col, tp):
                cfg[s, frozen_col] = 0.0
                n += 1
    return n
