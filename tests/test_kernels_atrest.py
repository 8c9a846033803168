"""At-rest judgement of switched-off machines (``atrest.rest_chunk``) against its reference in tests/naive.py, with
NaN, inf, bad and uncertain samples, constant (clipped) rest values, stop grace and new off periods."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge.kernels import atrest

PARAMS = {"mult": 6.0, "rel_res": 1e-6, "warm_s": 20.0, "persist": 3.0, "cap": 10.0, "drain": 0.5,
          "tau_loc_s": 60.0, "tau_mad_s": 300.0, "max_dt_s": 5.0, "start_band": 0.5, "start_hold_s": 15.0,
          "peak_mult": 1.5, "peak_warm_s": 40.0, "start_persist_s": 2.0, "start_run_fraction": 0.0,
          "start_tau_s": 10.0, "start_noise_band": 0.15, "start_load_bands": 3.0, "frozen_mult": 0.0,
          "frozen_min_run": 5.0, "frozen_runs": 20.0, "frozen_tau_s": 300.0}
NO_START = np.array([1e18, 1e18])  # no machine has that many signals: the start test never fires


def _params(p: dict = PARAMS) -> np.ndarray:
    return atrest.make_params(p["mult"], p["rel_res"], p["warm_s"], p["persist"], p["cap"], p["drain"],
                              p["tau_loc_s"], p["tau_mad_s"], p["max_dt_s"], p["start_band"], p["start_hold_s"],
                              p["peak_mult"], p["peak_warm_s"], p["start_persist_s"], p["start_run_fraction"],
                              p["start_tau_s"], p["start_noise_band"], p["start_load_bands"], p["frozen_mult"],
                              p["frozen_min_run"], p["frozen_runs"], p["frozen_tau_s"])


def _chunk(ts, sig, v, q, machine_of, m_state, m_since, hold, floor, st, p, score, kind, need=NO_START,
           m_start=None, sig_start=None, frame=1, run_level=None, run_span=None):
    """``floor``: the absolute floor per signal (1-D) or (absolute, fraction of the running level) rows;
    ``run_span``: the running level's (slow maximum, slow minimum) rows (None: never seen running)."""
    m_start = atrest.init_machines(2) if m_start is None else m_start
    sig_start = atrest.init_signals(st.shape[0]) if sig_start is None else sig_start
    floor2 = np.ascontiguousarray(np.stack([floor, np.zeros_like(floor)], axis=1) if floor.ndim == 1 else floor)
    run = np.zeros((st.shape[0], 3)) if run_level is None else np.ascontiguousarray(
        np.stack([np.zeros_like(run_level), run_level, np.zeros_like(run_level)], axis=1))
    span = atrest.init_run_level(st.shape[0]) if run_span is None else np.ascontiguousarray(run_span, np.float64)
    return atrest.rest_chunk(ts, sig, v, q, machine_of, m_state, m_since, hold, floor2, st, p, score, kind, need,
                             m_start, sig_start, frame, run, 1, span)


def _frames(seed: int, n_frames: int) -> list[tuple[np.ndarray, ...]]:
    """6 signals of 2 machines (signal 5 belongs to none): clipped noise at 0 (0), a quantised constant (1), Gaussian
    noise (2), a wave at rest (3: the peak cap binds), an exact constant (4); NaN, inf, bad and uncertain samples;
    excursions; shuffled order."""
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(n_frames):
        v = np.array([max(0.0, rng.normal(0, 0.5)), 3.0 + 0.1 * rng.integers(0, 2), 20 + rng.normal(0, 0.2),
                      2.0 * np.sin(2 * np.pi * f / 30) + rng.normal(0, 0.05), 7.0, rng.normal()])
        if 150 <= f < 170:
            v[0] += 6.0  # current flowing on a stopped machine
        if 200 <= f < 260:
            v[2] += 0.05 * (f - 200)  # a temperature rising
        if f % 97 == 5:
            v[4] = 9.0  # a spike on a constant
        if 270 <= f < 300:
            v[2] = 20.0  # a frozen temperature (the frozen-value test)
        if 330 <= f < 360:
            v[0:3] += 0.1 * (f - 329)  # machine 0 starting: three of its signals leave their bands together
        r = rng.random()
        if r < 0.04:
            v[rng.integers(6)] = np.nan
        elif r < 0.06:
            v[rng.integers(6)] = np.inf
        q = np.where(rng.random(6) < 0.04, 2, np.where(rng.random(6) < 0.04, 1, 0)).astype(np.uint8)
        order = rng.permutation(6)
        ts = np.full(6, 10**18 + f * 10**9, np.int64)
        if f % 50 == 7:
            ts[:] -= 2 * 10**9  # out of order: changes nothing
        frames.append((ts, order.astype(np.uint32), v[order], q[order]))
    return frames


@pytest.mark.parametrize("start_test,run_fraction,frozen,span", [(False, 0.0, 0.0, False), (True, 0.0, 0.0, False),
                                                                  (False, 0.0, 2.0, False), (True, 0.0025, 2.0, False),
                                                                  (True, 0.0025, 0.0, True)])
def test_rest_chunk_matches_reference_frame_by_frame(start_test, run_fraction, frozen, span):
    """With ``run_fraction`` > 0 the start test also counts loads on their way to their running level (signals 0-2
    run at 10, 13 and 40; signal 4, a constant with spikes towards its running level, is a load of one signal); with
    ``span`` the running level is the farther of kept extremes (signal 1: its minimum), NaN for signals 3-5."""
    seed = 0
    params = {**PARAMS, "start_run_fraction": run_fraction, "frozen_mult": frozen}
    need = np.array([2.0, 2.0]) if start_test else NO_START
    m_start, sig_start, starting, hot_since = atrest.init_machines(2), atrest.init_signals(6), {}, {}
    run_level = np.array([10.0, 13.0, 40.0, 0.0, 0.0, 1e5]) if run_fraction else np.array([0.0, 0.0, 0.0, 0.0, 0.0,
                                                                                             1e5])
    # signal 4 has no span: its floor is 1 % of its running level ...
    machine_of = np.array([0, 0, 0, 1, 1, -1], np.int64)
    floor = np.array([[0.05, 0.0], [0.2, 0.0], [0.01, 0.0], [0.0, 0.0], [0.0, 0.01], [0.0, 0.0]])
    run_level[4] = 30.0  # ... signal 4's 0.3: its spikes of 2 alarm, a float step would not
    m_state = np.array([1, 1], np.int8)
    m_since = np.array([10**18, 10**18], np.int64)
    hold = np.array([10**18 + 10 * 10**9, -1], np.int64)
    st = atrest.init_state(6)
    ref: dict = {}
    p = _params(params)
    run_span = None
    if span:  # the extremes kept while running: signal 0 beyond R, signal 1 below its rest value (the minimum is
        # farther), signal 2 at R; the others never seen running (the start test reads R)
        run_span = atrest.init_run_level(6)
        run_span[:3] = [[25.0, 5.0], [0.5, -40.0], [40.0, 40.0]]
    total = alarmed_in_start = frozen_found = 0
    for f, (ts, sig, v, q) in enumerate(_frames(seed, 400)):
        if f == 300:  # machine 1 starts (not judged), then stops again: a new off period
            m_state[1] = 3
        if f == 320:
            m_state[1], m_since[1], hold[1] = 1, int(ts[0]), int(ts[0]) + 5 * 10**9
        base = np.where(np.arange(6) == 5, 0.9, 0.0)[sig]  # the signal stack's own score stays if larger
        score, kind = base.copy(), np.zeros(6, np.uint8)
        r_score, r_kind = base.copy(), np.zeros(6, np.uint8)
        n = _chunk(ts, sig, v, q, machine_of, m_state, m_since, hold, floor, st, p, score, kind, need, m_start,
                   sig_start, f + 1, run_level, run_span)
        n_ref = naive.rest_judgement(ts, sig, v, q, machine_of, m_state, m_since, hold, floor, ref, params,
                                     r_score, r_kind, need if start_test else None, starting, run_level, hot_since,
                                     run_span)
        assert n == n_ref, f
        np.testing.assert_allclose(score, r_score, rtol=1e-12, atol=1e-15, err_msg=f"frame {f}")
        assert kind.tolist() == r_kind.tolist(), f
        total += n
        if start_test:
            assert m_start[:, atrest.START_UNTIL].tolist() == [starting.get(0, -1), starting.get(1, -1)], f
            assert (m_start[:, atrest.HOT] == 0).all()
        if 342 <= f < 360:
            alarmed_in_start += int((score[sig < 3] >= 0.5).any())
        if 285 <= f < 300:  # the frozen temperature (signal 2, Gaussian at rest: it never repeats) ten samples on
            frozen_found += int(score[sig == 2][0] >= 0.5 and kind[sig == 2][0] == atrest.KIND_AT_REST)
    for s, r in ref.items():
        np.testing.assert_allclose(
            st[s, [atrest.LOC, atrest.MAD, atrest.LEARNED_S, atrest.EXC, atrest.PEAK, atrest.DEV, atrest.RUN,
                   atrest.RUN_MAX, atrest.RUNS]],
            [r["loc"], r["mad"], r["learned"], r["exc"], r["peak"], r["dev"], r["run"], r["run_max"], r["runs"]],
            rtol=1e-12, atol=1e-12)
    assert 5 not in ref and total > 0  # a signal of no machine is never judged; the excursions were
    assert (frozen_found >= 12) == (frozen > 0)  # found by the frozen-value test only (a NaN or bad sample: no score)
    if span:  # signal 1 heads away from its (farther) running minimum: machine 0's start needs signals 0 and 2
        assert 0 in starting and 1 not in starting
        return
    assert (alarmed_in_start == 0) if start_test else (alarmed_in_start >= 12)  # the start held with the test only
    assert (0 in starting) == start_test and 1 not in starting  # machine 1's lone spikes are no start


def test_clipped_and_constant_rest_values_stay_quiet_and_a_current_on_a_stopped_machine_alarms():
    """Clipped noise at 0 and an exact constant over an hour at rest: nothing scores 0.5; then a current of 3 noise
    sigmas' worth of flow for 10 s alarms within seconds, and nothing is learned while it lasts."""
    rng = np.random.default_rng(3)
    machine_of = np.zeros(2, np.int64)
    floor = np.array([0.02, 0.02])
    m_state, m_since, hold = np.array([1], np.int8), np.array([0], np.int64), np.array([-1], np.int64)
    st = atrest.init_state(2)
    p = atrest.make_params(6.0, 1e-6, 600.0, 3.0, 10.0, 0.5, 600.0, 3600.0, 60.0)
    sig = np.array([0, 1], np.uint32)
    q = np.zeros(2, np.uint8)
    high = 0
    for k in range(1, 3601):
        v = np.array([max(0.0, rng.normal(0, 0.3)), 0.0])
        score, kind = np.zeros(2), np.zeros(2, np.uint8)
        high += _chunk(np.full(2, k * 10**9, np.int64), sig, v, q, machine_of, m_state, m_since, hold,
                       floor, st, p, score, kind)
    assert high == 0
    loc, mad = st[0, atrest.LOC], st[0, atrest.MAD]
    first = None
    for k in range(3601, 3611):
        v = np.array([3.0 + max(0.0, rng.normal(0, 0.3)), 0.0])
        score, kind = np.zeros(2), np.zeros(2, np.uint8)
        _chunk(np.full(2, k * 10**9, np.int64), sig, v, q, machine_of, m_state, m_since, hold, floor,
               st, p, score, kind)
        if first is None and score[0] >= 0.5:
            first = k - 3601
            assert kind[0] == atrest.KIND_AT_REST
    assert first is not None and first <= 2
    assert (st[0, atrest.LOC], st[0, atrest.MAD]) == (loc, mad)  # no learning while outside


def test_a_step_of_two_amplitudes_on_a_wave_at_rest_alarms_with_the_peak_cap_only():
    """A signal that keeps its cycle at rest (a sine of amplitude 1.5, period 300 s, as the simulated compressors'
    discharge pressure): an hour and a half at rest is quiet either way; a step of 2 amplitudes alarms within a
    period with the band capped at 1.5 learned peaks, and hides in 6 MADs (3.8 amplitudes) without the cap."""
    rng = np.random.default_rng(4)
    found = {}
    for peak_mult in (0.0, 1.5):
        machine_of, floor = np.zeros(1, np.int64), np.array([0.175])
        m_state, m_since, hold = np.array([1], np.int8), np.array([0], np.int64), np.array([-1], np.int64)
        st = atrest.init_state(1)
        p = atrest.make_params(6.0, 1e-6, 600.0, 3.0, 10.0, 0.5, 600.0, 3600.0, 60.0, 1.0, 600.0, peak_mult, 1800.0)
        sig, q = np.zeros(1, np.uint32), np.zeros(1, np.uint8)
        high, first = 0, None
        for k in range(1, 5701):
            v = np.array([18.0 + 1.5 * np.sin(2 * np.pi * k / 300) + rng.normal(0, 0.05) + (3.0 if k > 5400 else 0)])
            score, kind = np.zeros(1), np.zeros(1, np.uint8)
            n = _chunk(np.full(1, k * 10**9, np.int64), sig, v, q, machine_of, m_state, m_since, hold, floor, st, p,
                       score, kind)
            if k <= 5400:
                high += n
            elif n and first is None:
                first = k - 5400
        assert high == 0, peak_mult
        found[peak_mult] = first
    assert found[0.0] is None and found[1.5] is not None and found[1.5] <= 300


def test_run_level_keeps_the_running_extremes_as_its_reference():
    """``run_level`` against ``naive.run_level``: only RUNNING machines' signals, NaN and inf levels skipped, a
    constant level, a level falling (the evening ramp down: the maximum stays, decaying slowly)."""
    rng = np.random.default_rng(5)
    machine_of = np.array([0, 0, 1, 1, 2, -1], np.int64)
    span = atrest.init_run_level(6)
    ref = [(float("nan"), float("nan"))] * 6
    for f in range(200):
        m_state = np.array([3, 3 if f < 120 else 1, 3 if f % 40 < 30 else 2], np.int8)
        level = np.array([10.0 - 0.04 * f, 5.0, rng.normal(3, 1), -rng.random() * 8, 7.0, 1.0])
        if f % 17 == 3:
            level[rng.integers(6)] = np.nan
        if f % 23 == 4:
            level[rng.integers(6)] = np.inf
        run_st = np.ascontiguousarray(np.stack([np.zeros(6), level], axis=1))
        a = min(1.0, 0.01 * (1 + f % 3))
        n = atrest.run_level(machine_of, m_state, run_st, 1, span, a)
        assert n == naive.run_level(machine_of, m_state, level, ref, a), f
        np.testing.assert_allclose(span, np.array(ref), rtol=1e-12, atol=1e-12, err_msg=f"call {f}")
    assert np.isnan(span[5]).all()  # a signal of no machine keeps nothing
    assert span[1].tolist() == [5.0, 5.0]  # a constant level is both extremes
    assert span[0, atrest.RUN_HI] > 10.0 - 0.04 * 199 + 1.0  # the falling level's maximum lags far above its end


def _plant_frames(lone_at: int) -> list[tuple[np.ndarray, ...]]:
    """Four machines of one load each (rest noise around 0; running at 10): machines 0-2 ramp up together at frame
    100 and back at 160 (a shift starting, their states still OFF), machine 3 alone from ``lone_at`` (a fault)."""
    rng = np.random.default_rng(11)
    frames = []
    for f in range(400):
        v = rng.normal(0.0, 0.1, 4)
        if 100 <= f < 170:
            v[:3] += 0.05 * (min(f, 160) - 100) * (1.0 if f < 160 else (170 - f) / 10)
        if lone_at <= f < lone_at + 60:
            v[3] += 0.05 * (f - lone_at)
        if f == 50:
            v[1] = np.nan
        ts = np.full(4, 10**18 + f * 10**9, np.int64)
        frames.append((ts, np.arange(4, dtype=np.uint32), v, np.zeros(4, np.uint8)))
    return frames


@pytest.mark.parametrize("peers", [0.0, 3.0])
def test_a_plant_start_holds_machines_of_one_load_and_a_lone_ramp_alarms(peers):
    """The plant start test (``start_peers``): three single-load machines whose loads head to their running level
    together are starting (no alarm, with the test); a fourth ramping alone later alarms either way. Kernel and
    reference agree frame by frame."""
    params = {**PARAMS, "start_run_fraction": 0.0025, "start_load_bands": 1.0, "start_hold_s": 15.0,
              "start_peers": peers, "start_peer_window_s": 30.0}
    p = atrest.make_params(*[params[k] for k in (
        "mult", "rel_res", "warm_s", "persist", "cap", "drain", "tau_loc_s", "tau_mad_s", "max_dt_s", "start_band",
        "start_hold_s", "peak_mult", "peak_warm_s", "start_persist_s", "start_run_fraction", "start_tau_s",
        "start_noise_band", "start_load_bands", "frozen_mult", "frozen_min_run", "frozen_runs", "frozen_tau_s",
        "start_peers", "start_peer_window_s")])
    machine_of = np.arange(4, dtype=np.int64)
    need = np.full(4, 4.0)  # the machine-wide test alone never fires: one load per machine
    m_state, m_since, hold = np.ones(4, np.int8), np.zeros(4, np.int64), np.full(4, -1, np.int64)
    floor = np.array([[0.05, 0.0]] * 4)
    span = atrest.init_run_level(4)
    span[:] = [10.0, 8.0]  # running at 8-10, above the rest value
    st, m_start, sig_start = atrest.init_state(4), atrest.init_machines(4), atrest.init_signals(4)
    ref, starting, hot_since, load_at = {}, {}, {}, {}
    alarmed = np.zeros(4, bool)
    lone_alarmed = False
    for f, (ts, sig, v, q) in enumerate(_plant_frames(lone_at=300)):
        score, kind = np.zeros(4), np.zeros(4, np.uint8)
        r_score, r_kind = np.zeros(4), np.zeros(4, np.uint8)
        n = _chunk(ts, sig, v, q, machine_of, m_state, m_since, hold, floor, st, p, score, kind, need, m_start,
                   sig_start, f + 1, None, span)
        n_ref = naive.rest_judgement(ts, sig, v, q, machine_of, m_state, m_since, hold, floor, ref, params, r_score,
                                     r_kind, need, starting, np.zeros(4), hot_since, span, load_at)
        assert n == n_ref, f
        np.testing.assert_allclose(score, r_score, rtol=1e-12, atol=1e-15, err_msg=f"frame {f}")
        assert m_start[:, atrest.START_UNTIL].tolist() == [starting.get(m, -1) for m in range(4)], f
        if 100 <= f < 200:
            alarmed[:3] |= score[:3] >= 0.5
        if f >= 300:
            lone_alarmed |= bool(score[3] >= 0.5)
    assert (not alarmed.any()) if peers else alarmed[:3].all()
    assert lone_alarmed and 3 not in starting


THAW = {"ratio_min": 0.7, "ratio_max": 8.0, "dist": 2.0, "learned_s": 100.0, "warmup": 30.0}


def _thaw_case(seed: int) -> tuple:
    """4 machines of 5 signals each; rest and running statistics drawn around the thresholds, with NaN, inf, zero
    (constant) scales, unlearned rests, cold running baselines and signals not judged at rest."""
    rng = np.random.default_rng(seed)
    n_m, per = 4, 5
    n = n_m * per
    members = [list(range(m * per, (m + 1) * per)) for m in range(n_m)]
    rest_machine_of = np.repeat(np.arange(n_m), per).astype(np.int64)
    rest_machine_of[rng.random(n) < 0.15] = -1
    st = atrest.init_state(n)
    st[:, atrest.LOC] = rng.normal(10, 2, n)
    st[:, atrest.MAD] = rng.choice([0.0, 0.05, 0.4, 0.8, 1.0, 5.0, np.nan, np.inf], n)
    st[:, atrest.LEARNED_S] = rng.choice([0.0, 50.0, 100.0, 5000.0, np.nan], n)
    run = np.zeros((n, 3))
    run[:, 0] = st[:, atrest.LOC] + rng.choice([0.0, 0.5, 1.5, 3.0, 30.0, np.inf], n)
    run[:, 1] = rng.choice([0.0, 0.5, 1.0, 1.2, np.nan], n)
    run[:, 2] = rng.choice([0.0, 29.0, 30.0, 500.0], n)
    m_state = np.array([1, 2, 3, 1], np.int8)  # off, idle, running, off
    m_since = np.array([5, 6, 7, -1], np.int64)  # the last machine: never seen a change
    return members, rest_machine_of, st, run, m_state, m_since


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_thaw_independent_matches_reference(seed):
    """Three calls: the changes, a frame before the next look is due (nothing), and one after it, with the rests
    learned meanwhile (a machine's first off period: nothing learned at its stop)."""
    members, rest_machine_of, st, run, m_state, m_since = _thaw_case(seed)
    n = st.shape[0]
    m_ptr = np.concatenate([[0], np.cumsum([len(x) for x in members])]).astype(np.int64)
    m_sig = np.concatenate(members).astype(np.int64)
    tp = atrest.make_thaw_params(THAW["ratio_min"], THAW["ratio_max"], THAW["dist"], THAW["learned_s"],
                                 THAW["warmup"])
    cfg = np.ones((n, 2))
    th = atrest.init_thaw(4)
    frozen = np.ones(n)
    seen_ref, next_ref = np.full(4, -2, np.int64), np.full(4, -1, np.int64)
    later = np.random.default_rng(seed + 100).choice([0.0, 5000.0], n)
    for t in (10**9, 10**9 + 99 * 10**9, 10**9 + 100 * 10**9):
        if t > 10**9:
            st[:, atrest.LEARNED_S] += later
        got = atrest.thaw_independent(t, m_state, m_since, th, m_ptr, m_sig, rest_machine_of, st, run, 0, 1, 2, tp,
                                      cfg, 1)
        rest = st[:, [atrest.LOC, atrest.MAD, atrest.LEARNED_S]]
        want = naive.thaw_independent(t, m_state, m_since, seen_ref, next_ref, members, rest_machine_of, rest, run,
                                      THAW, frozen)
        assert got == want
        np.testing.assert_array_equal(cfg[:, 1], frozen)
        np.testing.assert_array_equal(th[:, atrest.TH_SEEN], seen_ref)
        np.testing.assert_array_equal(th[:, atrest.TH_NEXT], next_ref)
        if t == 10**9 + 99 * 10**9:
            assert got == 0  # no change and no look due
    assert (cfg[:, 0] == 1.0).all()  # only the frozen column is written
    assert (cfg[10:15, 1] == 1.0).all()  # a running machine is left alone
    assert th[2, atrest.TH_NEXT] == -1 and th[0, atrest.TH_NEXT] == 10**9 + 200 * 10**9


def test_thaw_reads_a_signal_that_follows_the_hall_as_the_same_and_a_load_or_a_constant_not():
    n = 4
    st = atrest.init_state(n)
    st[:, atrest.LEARNED_S] = 7200.0
    st[:, atrest.LOC] = [6.0, 0.1, 25.0, 3.0]  # a wave that follows the hall, a load at rest, a temperature, constant
    st[:, atrest.MAD] = [0.64, 0.05, 0.1, 0.0]
    run = np.array([[6.1, 0.75, 1e4], [32.0, 3.0, 1e4], [60.0, 0.5, 1e4], [3.0, 0.0, 1e4]])
    tp = atrest.make_thaw_params(0.7, 8.0, 2.0, 3600.0, 30.0)
    cfg = np.ones((n, 1))
    m_ptr = np.array([0, n], np.int64)
    got = atrest.thaw_independent(0, np.array([1], np.int8), np.array([123], np.int64), atrest.init_thaw(1), m_ptr,
                                  np.arange(n, dtype=np.int64), np.zeros(n, np.int64), st, run, 0, 1, 2, tp, cfg, 0)
    assert got == 1 and cfg[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    off = atrest.make_thaw_params(0.0, 8.0, 2.0, 3600.0, 30.0)  # ratio_min 0: the thaw is off
    cfg[:] = 1.0
    assert atrest.thaw_independent(0, np.array([1], np.int8), np.array([123], np.int64), atrest.init_thaw(1), m_ptr,
                                   np.arange(n, dtype=np.int64), np.zeros(n, np.int64), st, run, 0, 1, 2, off, cfg,
                                   0) == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_label_thawed_matches_reference(seed):
    """``label_thawed`` against ``naive.label_thawed``: only process kinds with a positive score (NaN, 0 and data
    quality left alone) of thawed signals of OFF/IDLE machines; signals beyond the table and of no machine left."""
    rng = np.random.default_rng(seed)
    n_sig, n = 12, 400
    machine_of = np.array([0, 0, 1, 1, 2, 2, 3, 3, -1, -1, 0, 1], np.int64)
    m_state = np.array([1, 2, 3, 0], np.int8)
    cfg = np.zeros((n_sig, 3))
    cfg[:, 1] = rng.integers(0, 2, n_sig)
    signal = rng.integers(0, n_sig + 2, n).astype(np.uint32)
    score = rng.choice([0.0, 0.3, 0.9, np.nan, np.inf, -1.0], n)
    kind = rng.integers(0, 12, n).astype(np.uint8)
    want, want_n = naive.label_thawed(signal, score, kind, machine_of, m_state, cfg[:, 1], 11)
    got_n = atrest.label_thawed(signal, score, kind, machine_of, m_state, cfg, 1, 11)
    assert got_n == want_n > 0
    assert kind.tolist() == want
