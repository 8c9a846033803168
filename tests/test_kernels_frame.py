"""The stack's fused frame passes against the kernels they fuse, bit for bit, on adversarial frames.

``signal_stack.signal_frame`` = ``signal_chunk`` + ``devices.device_polls`` + ``pca.update_last`` +
``opchange.machine_moves`` (and, split, its counting + ``opchange.mark_machines``); ``signal_alarms.gate_alarm_frame``
= ``alarms.settle_gate`` + ``devices.fold_device`` + ``rearm.alarm_chunk_rearm``. Each fused kernel runs on its own
copy of the state; every output and every state array must be equal exactly (the separate kernels are pinned to
their numpy references in tests/naive.py by their own tests). Frames: shuffled, with signals repeated within a
frame (10 Hz), bad and uncertain quality, NaN and +-inf values, backwards and repeated timestamps, constant
(frozen) signals, machines switched off (frozen rows), devices going bad and silent.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.kernels import alarms, cusum, devices, opchange, pca, rate, rearm, robust, signal_alarms, signal_stack, stuck

N_SIG = 48
N_M = 5  # machines of 9 (signals 45..47 without one)
N_DEV = 4
T0 = 1_700_000_000 * 10**9


def _frames(seed: int, n_frames: int, per_frame: int) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(-50, 50, N_SIG)
    out = []
    for f in range(n_frames):
        sig = rng.integers(0, N_SIG, per_frame).astype(np.uint32)  # repeats within a frame
        ts = (T0 + f * 10**9 + rng.integers(0, 10**9, per_frame)).astype(np.int64)
        if f % 4 == 1:
            ts[rng.random(per_frame) < 0.1] -= 3 * 10**9  # backwards
        if f % 5 == 2:
            ts[:] = ts[0]  # all repeated
        v = base[sig] + rng.normal(size=per_frame) * (1 + (f > 40) * 8 * (sig % 7 == 0))
        v[(sig % 11 == 3)] = base[sig[(sig % 11 == 3)]]  # constant signals: stuck runs
        v[rng.random(per_frame) < 0.04] = np.nan
        v[rng.random(per_frame) < 0.02] = np.inf
        v[rng.random(per_frame) < 0.02] = -np.inf
        q = np.zeros(per_frame, np.uint8)
        q[rng.random(per_frame) < 0.08] = 1
        q[rng.random(per_frame) < 0.08] = 2
        if 30 <= f < 45:
            q[sig // 12 == 1] = 2  # device 1 bad
        keep = ~((sig // 12 == 2) & (50 <= f) & (f < 70))  # device 2 silent
        if 20 <= f < 30:
            v[sig // 9 == 3] += 25.0  # machine 3 moves together
        out.append((ts[keep], sig[keep], v[keep], q[keep]))
    return out


def _params(guard: float) -> np.ndarray:
    return signal_stack.pack_params(robust.make_params(0.05, 3.0, 5, 1e-6), cusum.make_params(1.0, 6.0, 4.0, 2.0, 0.01),
                                    stuck.make_params(0.05, 0.0, 4.0, 0.05, 5), rate.make_params(0.05, 3.0, 5, 1e-9),
                                    level_threshold=5.0, rate_threshold=6.0, limit_margin=0.05, machine_z_clip=4.0,
                                    bad_s=2.0, guard=guard, guard_at=0.3, rate_span=0.005, rel_res=1e-6)


def _cfg() -> np.ndarray:
    cfg = np.zeros((N_SIG, signal_stack.C_WIDTH))
    cfg[:, signal_stack.C_LOW] = np.where(np.arange(N_SIG) % 3 == 0, -40.0, np.nan)
    cfg[:, signal_stack.C_HIGH] = np.where(np.arange(N_SIG) % 4 != 1, 40.0, np.nan)
    cfg[:, signal_stack.C_MASK] = np.where(np.arange(N_SIG) % 10 == 4, 1 | 16, 63)
    cfg[::7, signal_stack.C_RES] = 0.1
    return cfg


def _tables() -> dict[str, np.ndarray]:
    machine = np.where(np.arange(N_SIG) < 45, np.arange(N_SIG) // 9, -1).astype(np.int64)
    device = np.where(np.arange(N_SIG) < 46, np.arange(N_SIG) // 12, -1).astype(np.int64)
    member = np.where(np.arange(N_SIG) % 5 == 0, -1, machine)
    return {"machine": machine, "device": device, "member": member,
            "members": np.bincount(machine[machine >= 0], minlength=N_M).astype(np.float64)}


@pytest.mark.parametrize(("guard", "per_frame", "mark"), [(1.0, 48, True), (0.1, 120, True), (0.0, 120, False)])
def test_signal_frame_is_the_signal_pass_and_the_bookkeeping_passes(guard, per_frame, mark):
    t = _tables()
    p = _params(guard)
    oc_p = np.array([2.5, 0.25, 2.0, 1.0 if mark else 0.0])
    hold_ns = 30 * 10**9
    route = np.stack([t["device"], t["member"], np.ones(N_SIG, np.int64), t["machine"]], axis=1)
    assert route.shape[1] == signal_stack.R_WIDTH
    route = np.ascontiguousarray(route)

    def state() -> dict[str, np.ndarray]:
        cfg = _cfg()
        return {"st": signal_stack.init_state(N_SIG), "cfg": cfg, "z": np.zeros(N_SIG),
                "good": np.full(N_DEV, -1, np.int64), "any": np.full(N_DEV, -1, np.int64),
                "x_last": np.full(N_SIG, np.nan), "seen": np.zeros(N_M, np.uint8),
                "stamp": np.full(N_SIG, -1, np.int64), "hot": np.zeros(N_M, np.int64),
                "hold": np.full(N_M, -1, np.int64)}

    a, b = state(), state()
    count = np.full(N_SIG, -7.0)
    frame_out = np.zeros(1, np.int64)
    held_frames = 0
    for f, (ts, sig, v, q) in enumerate(_frames(3, 80, per_frame)):
        frozen = np.isin(np.arange(N_SIG), np.arange(9, 18)) if 60 <= f < 75 else np.zeros(N_SIG, bool)
        a["cfg"][:, signal_stack.C_FROZEN] = frozen
        b["cfg"][:, signal_stack.C_FROZEN] = frozen
        n = sig.shape[0]
        sa, ka = np.empty(n), np.empty(n, np.uint8)
        na = signal_stack.signal_chunk(ts, sig, v, q, a["st"], a["cfg"], p, sa, ka, a["z"])
        devices.device_polls(ts, sig, v, q, t["device"], a["good"], a["any"])
        pca.update_last(sig, v, q, a["x_last"], t["member"], a["seen"])
        opchange.machine_moves(ts, sig, q, a["z"], t["machine"], t["members"], f, a["stamp"], a["hot"], 2.5, 0.25,
                               2.0, hold_ns, a["hold"])
        sb, kb = np.empty(n), np.empty(n, np.uint8)
        nb = signal_stack.signal_frame(ts, sig, v, q, b["st"], b["cfg"], p, sb, kb, b["z"], route, count, frame_out,
                                       b["good"], b["any"], b["x_last"], b["seen"], b["stamp"], b["hot"], t["members"],
                                       b["hold"], f, oc_p, hold_ns)
        if not mark:
            opchange.mark_machines(b["hot"], t["members"], int(frame_out[0]), 0.25, 2.0, hold_ns, b["hold"])
        assert na == nb
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(ka, kb)
        assert int(frame_out[0]) == int(ts.max())
        seen_rows = np.unique(sig)
        np.testing.assert_array_equal(count[seen_rows], a["st"][seen_rows, signal_stack.B_LEVEL + robust.COUNT])
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} after frame {f}")
        held_frames += int((a["hold"] >= ts.max()).any())
    assert held_frames > 0 and (a["good"] >= 0).all() and (a["seen"] == 1).any()


def test_signal_chunk_is_signal_frame_without_bookkeeping():
    """``route`` with no rows: nothing but the signal pass (what ``signal_chunk`` runs)."""
    ts, sig, v, q = _frames(5, 1, 300)[0]
    st_a, st_b = signal_stack.init_state(N_SIG), signal_stack.init_state(N_SIG)
    n = sig.shape[0]
    sa, ka, sb, kb = np.empty(n), np.empty(n, np.uint8), np.empty(n), np.empty(n, np.uint8)
    za, zb = np.zeros(N_SIG), np.zeros(N_SIG)
    signal_stack.signal_chunk(ts, sig, v, q, st_a, _cfg(), _params(1.0), sa, ka, za)
    e_i, e_f = np.empty(0, np.int64), np.empty(0)
    signal_stack.signal_frame(ts, sig, v, q, st_b, _cfg(), _params(1.0), sb, kb, zb,
                              np.empty((0, signal_stack.R_WIDTH), np.int64), e_f, np.zeros(1, np.int64), e_i, e_i, e_f,
                              np.empty(0, np.uint8), e_i, e_i, e_f, e_i, 0, np.zeros(signal_stack.OC_WIDTH), 0)
    np.testing.assert_array_equal(st_a, st_b)
    np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(za, zb)


@pytest.mark.parametrize(("cap", "rearm_n", "fold"), [(10_000, 20.0, True), (3, 0.0, True), (50, 5.0, False)])
def test_gate_alarm_frame_is_gate_fold_and_alarm_in_sequence(cap, rearm_n, fold):
    rng = np.random.default_rng(9)
    t = _tables()
    gate_machine = t["machine"]
    dev_score = np.zeros(N_DEV)
    fold_at = 0.25 if fold else np.inf
    gp = signal_alarms.make_params(40.0, 20e9, fold_at, rearm_n)
    ap = alarms.make_params(0.5, 0.3, 2, 4)
    exempt = rearm.exempt_mask((5, 8, 9, 10))

    def state() -> dict[str, np.ndarray]:
        fst, its = alarms.init_state(N_SIG)
        return {"first": np.full(N_SIG, -1, np.int64), "fst": fst, "its": its, "rst": rearm.init_state(N_SIG),
                "ev": tuple(np.zeros(cap, d) for d in (np.int64, np.uint8, np.int64, np.int64, np.float64, np.uint8))}

    a, b = state(), state()
    count = np.zeros(N_SIG)
    hold = np.full(N_M, -1, np.int64)
    opened = 0
    for f, (ts, sig, _v, q) in enumerate(_frames(4, 100, 120)):
        n = sig.shape[0]
        count += np.bincount(sig, minlength=N_SIG) * (rng.random(N_SIG) < 0.9)
        score = np.clip(rng.random(n) ** 3 * 1.4, 0, 1) * (rng.random(n) < 0.7)
        score[rng.random(n) < 0.02] = 1.0
        score[rng.random(n) < 0.01] = np.nan  # the short path for quiet samples must treat NaN as the full one
        kind = rng.integers(0, 12, n).astype(np.uint8)
        dev_score[:] = rng.random(N_DEV) * 0.5 if f % 10 < 5 else 0.0
        if f % 17 == 0:
            hold[rng.integers(0, N_M)] = int(ts.max()) + 5 * 10**9
        hold_all = int(ts.min()) + 3 * 10**9 if f == 60 else -1
        ent = sig.astype(np.int64)
        ga = np.empty(n)
        alarms.settle_gate(ts, ent, score, kind, q, count, a["first"], 40.0, 20e9, 8, gate_machine, hold, hold_all,
                           ga)
        if fold:
            devices.fold_device(ent, kind, ga, t["device"], dev_score, 0.25, 8)
        ja = rearm.alarm_chunk_rearm(ts, ent, ga, kind, n, a["fst"], a["its"], a["rst"], ap, rearm_n, exempt,
                                     *a["ev"])
        gb = np.empty(n)
        jb = signal_alarms.gate_alarm_frame(ts, sig, score, kind, q, count, b["first"], gate_machine, hold, hold_all,
                                            t["device"], dev_score, gp, 8, gb, b["fst"], b["its"], b["rst"], ap,
                                            exempt, *b["ev"])
        assert ja == jb
        np.testing.assert_array_equal(ga, gb)
        for key in ("first", "fst", "its", "rst"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} after frame {f}")
        for ca, cb in zip(a["ev"], b["ev"], strict=True):
            np.testing.assert_array_equal(ca[:min(ja, cap)], cb[:min(jb, cap)])
        opened += int((a["ev"][1][:min(ja, cap)] == alarms.OPEN).sum())
    assert opened > 0
