"""A frame's signal alarms in one pass: settle gate, device fold, then the alarm with its re-arm memory.

Why one pass: the stack ran three kernels over every frame -- ``alarms.settle_gate``, ``devices.fold_device`` and
``rearm.alarm_chunk_rearm`` -- each reading the frame's columns and a per-signal table again, and the alarm kernels
take int64 entities, so the frame's uint32 signal column was copied first. Here each sample goes through the
three in turn (``alarms.gate_held``, ``devices.fold_hit``'s test written out, ``rearm.rearm_step``),
in arrival order, which is what the three passes computed: a sample's gated and folded score depends only on
the sample, its entity's state and the frame-wide holds fixed before the pass, and the alarm reads the samples
in order. The results are bit-identical (tested against the three kernels in sequence).

``count`` is the level stage's learned-sample count per signal *after the frame*: ``signal_stack.signal_frame``
writes it contiguously (``count_out``) for every signal in the frame; the gate read it from a strided column of
the signal state before, a cache line per sample. ``gated_out`` receives the gated and folded scores (the
stack's ``alarm_score``). Returns the number of events produced (may exceed the columns' capacity; the alarm
state advances regardless, as in ``alarms.alarm_chunk``).

The common sample -- no alarm open, its score below ``on`` -- takes a short path: ``rearm_step`` would count it
and store 0 into the alarm's ``above`` count, which is 0 already for nearly every signal; storing only where a value
changes leaves the alarm rows' cache lines clean, and the settle gate and the device fold are skipped for a score
of 0, which they pass unchanged; the device fold's test is branch-free (which kind a sample scored is a coin flip:
a short-circuit on it cost ~4 ns a sample). Same state and outputs, bit for bit; 10.2 -> 5.8 ns/sample at 1 Hz and
8.3 -> 5.9 at 10 Hz (the kernel alone, interleaved, thread CPU time, load ~13-20; bench/RESULTS.md, branch speed).
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit
from edge.kernels import alarms, rearm

# ``gate_alarm_frame``'s float parameters.
G_SETTLE_N = 0  # samples a signal learns before its alarms may open (``alarms.settle_gate``'s ``settle_n``)
G_SETTLE_NS = 1  # and nanoseconds since its first usable sample (``settle_ns``)
G_FOLD_AT = 2  # device score from which its signals' data-quality scores fold (inf: no device judgement)
G_REARM_N = 3  # the re-arm window in samples (``rearm.alarm_chunk_rearm``'s ``rearm_n``)
G_WIDTH = 4


def make_params(settle_n: float, settle_ns: float, fold_at: float, rearm_n: float) -> np.ndarray:
    return np.array([settle_n, settle_ns, fold_at, rearm_n], dtype=np.float64)


@njit(cache=True, nogil=True)
def gate_alarm_frame(ts_ns: np.ndarray, signal: np.ndarray, score: np.ndarray, kind: np.ndarray,
                     quality: np.ndarray, count: np.ndarray, first_ns: np.ndarray, machine_of: np.ndarray,
                     hold_until: np.ndarray, hold_all_until: int, device_of: np.ndarray, dev_score: np.ndarray,
                     gp: np.ndarray, dq_kind_min: int, gated_out: np.ndarray, fst: np.ndarray, its: np.ndarray,
                     rst: np.ndarray, alarm_p: np.ndarray, exempt: int, ev_entity: np.ndarray, ev_phase: np.ndarray,
                     ev_ts_start: np.ndarray, ev_ts_end: np.ndarray, ev_peak: np.ndarray,
                     ev_kind: np.ndarray) -> int:
    """``settle_gate``, ``fold_device`` and ``alarm_chunk_rearm`` over a frame, sample by sample (see the module)."""
    settle_n = gp[G_SETTLE_N]
    settle_ns = gp[G_SETTLE_NS]
    fold_at = gp[G_FOLD_AT]
    rearm_n = gp[G_REARM_N]
    on = alarm_p[alarms.P_ON]
    off = alarm_p[alarms.P_OFF]
    on_count = alarm_p[alarms.P_ON_COUNT]
    off_count = alarm_p[alarms.P_OFF_COUNT]
    cap = ev_entity.shape[0]
    fold_on = dev_score.shape[0] > 0  # no devices: nothing to fold (and no row 0 to read)
    j = 0
    for k in range(signal.shape[0]):
        e = np.int64(signal[k])
        t = ts_ns[k]
        f = first_ns[e]
        if f < 0 and quality[k] != 2:
            first_ns[e] = t
            f = t
        sc = score[k]
        kd = kind[k]
        if sc > 0.0:  # the gate and the fold only ever zero a positive score (both test ``sc > 0``)
            m = machine_of[e]
            if alarms.gate_held(sc, kd, t, f, count[e], m, hold_until[m if m >= 0 else 0], settle_n, settle_ns,
                                dq_kind_min, hold_all_until):
                sc = 0.0
            elif fold_on:  # ``devices.fold_hit`` without its short-circuits: the kind is a coin flip per sample
                d = device_of[e]
                if (kd >= dq_kind_min) & (d >= 0) & (dev_score[d if d >= 0 else 0] >= fold_at):
                    sc = 0.0
        gated_out[k] = sc
        since = rst[e, rearm.R_SINCE]
        if fst[e, alarms.ACTIVE] == 0.0 and sc < on:  # what ``rearm_step`` does with a quiet sample, stores only
            rst[e, rearm.R_SINCE] = since + 1.0       # where they change a value (see the module)
            if fst[e, alarms.ABOVE] != 0.0:
                fst[e, alarms.ABOVE] = 0.0
        else:
            j = rearm.rearm_step(j, cap, e, sc, t, kd, fst, its, rst, on, off, on_count, off_count, rearm_n, exempt,
                                 ev_entity, ev_phase, ev_ts_start, ev_ts_end, ev_peak, ev_kind)
    return j
