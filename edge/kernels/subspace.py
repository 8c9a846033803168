"""Per-machine multivariate score: residual of the machine's standardised signals off a learned subspace.

Why a streaming PCA residual (SPE, the Q statistic of process monitoring) and not Mahalanobis: a
machine has 20-40 signals that move together (current, power and temperatures follow load), so
most of its variation lives in a few directions. Learning ``k`` directions with Oja's rule plus
Gram-Schmidt costs O(d k) per machine tick and needs no matrix inverse, where a streaming precision
matrix costs O(d^2) and goes singular on collinear signals. A sample whose signals are each within
their own range but no longer move together (a valve passing, a sensor drifting against its
neighbours) leaves the subspace and its residual energy jumps.

Inputs are the per-signal level z-scores (``z_last``, clipped, from ``signal_stack``), so units do
not matter. A machine is evaluated once per tick on the latest z of each member signal; the detector
stack ticks every machine that had a sample in the frame. The log of the residual energy (a
chi-square-like, heavily right-skewed quantity; its log is nearly symmetric) is judged by robust
location/scale (``robust.py``) -- score ``z^2 / (z^2 + T^2)`` for ``z > 0`` -- then learned;
the subspace learns every tick with rate ``max(eta, 1 / (n + 1))``. ``top_out`` names the member
signal with the largest residual, which is what a plant engineer looks at first.

Layout: machine ``m``'s members are ``m_sig[m_ptr[m]:m_ptr[m + 1]]`` (CSR), the basis rows of those
members are the same rows of ``w`` (shape ``(len(m_sig), k)``), and ``mst[m]`` holds the robust
statistics of the residual energy. Machines with fewer than ``k + 1`` members score 0.
"""

from __future__ import annotations

import math

import numpy as np

from edge.kernels import robust
from edge.kernels._jit import njit

SPE_FLOOR = 1e-6  # inputs are z-scores: a residual energy below this is exactly on the subspace

P_THRESHOLD = robust.N_PARAMS
P_ETA = robust.N_PARAMS + 1
N_PARAMS = robust.N_PARAMS + 2


def make_params(alpha: float = 0.01, huber_k: float = 3.0, warmup: int = 30, min_scale: float = 1e-3,
                threshold: float = 4.0, eta: float = 0.005) -> np.ndarray:
    if threshold <= 0.0 or not 0.0 < eta < 1.0:
        raise ValueError("need threshold > 0 and 0 < eta < 1")
    return np.concatenate([robust.make_params(alpha, huber_k, warmup, min_scale), [threshold, eta]])


def init_basis(m_ptr: np.ndarray, k: int) -> np.ndarray:
    """Start each machine's basis at its first ``k`` member axes (orthonormal, so valid from tick one)."""
    w = np.zeros((int(m_ptr[-1]), k), dtype=np.float64)
    for m in range(m_ptr.shape[0] - 1):
        a, b = int(m_ptr[m]), int(m_ptr[m + 1])
        for j in range(min(k, b - a)):
            w[a + j, j] = 1.0
    return w


@njit(cache=True, nogil=True, _nrt=False)  # per-sample helper: see edge/kernels/__init__.py
def _tick_one(m: int, m_ptr: np.ndarray, m_sig: np.ndarray, z_last: np.ndarray, w: np.ndarray, mst: np.ndarray,
              p: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    a = m_ptr[m]
    b = m_ptr[m + 1]
    k = w.shape[1]
    if b - a < k + 1:
        return 0.0, -1
    # Project, then residual energy and its largest component.
    for j in range(k):
        y[j] = 0.0
    for i in range(a, b):
        xi = z_last[m_sig[i]]
        for j in range(k):
            y[j] += w[i, j] * xi
    spe = 0.0
    top = -1
    top_r = -1.0
    for i in range(a, b):
        r = z_last[m_sig[i]]
        for j in range(k):
            r -= w[i, j] * y[j]
        spe += r * r
        if abs(r) > top_r:
            top_r = abs(r)
            top = m_sig[i]
    lspe = math.log(spe + SPE_FLOOR)
    z = robust.robust_z(mst, m, 0, lspe, p)
    score = 0.0
    if np.isfinite(z) and z > 0.0:
        t = p[P_THRESHOLD]
        score = z * z / (z * z + t * t)
    robust.robust_learn(mst, m, 0, lspe, p)
    # Oja / generalised Hebbian step, then Gram-Schmidt to keep the basis orthonormal.
    eta = p[P_ETA]
    n = mst[m, robust.COUNT]
    if 1.0 / (n + 1.0) > eta:
        eta = 1.0 / (n + 1.0)
    for i in range(a, b):
        xi = z_last[m_sig[i]]
        for j in range(k):
            w[i, j] += eta * xi * y[j]
    for j in range(k):
        for jj in range(j):
            c = 0.0
            for i in range(a, b):
                c += w[i, j] * w[i, jj]
            for i in range(a, b):
                w[i, j] -= c * w[i, jj]
        nrm = 0.0
        for i in range(a, b):
            nrm += w[i, j] * w[i, j]
        if nrm < 1e-24:  # degenerate (all-zero input so far): fall back to an axis
            for i in range(a, b):
                w[i, j] = 0.0
            w[a + j, j] = 1.0
            continue
        inv = 1.0 / math.sqrt(nrm)
        for i in range(a, b):
            w[i, j] *= inv
    return score, top


@njit(cache=True, nogil=True)
def machine_tick(signal: np.ndarray, machine_of: np.ndarray, m_ptr: np.ndarray, m_sig: np.ndarray,
                 z_last: np.ndarray, w: np.ndarray, mst: np.ndarray, p: np.ndarray, touched: np.ndarray,
                 tick_machine: np.ndarray, tick_score: np.ndarray, tick_top: np.ndarray) -> int:
    """Tick every machine that has a sample in ``signal`` (in order of first appearance).

    Writes (machine, score, top signal or -1) to the ``tick_*`` arrays (length >= number of machines)
    and returns how many; ``touched`` is a zeroed uint8 scratch array of length n_machines, left zeroed.
    Machine id -1 means "no machine" and is skipped.
    """
    n = 0
    for k in range(signal.shape[0]):
        m = machine_of[signal[k]]
        if m >= 0 and touched[m] == 0:
            touched[m] = 1
            tick_machine[n] = m
            n += 1
    y = np.empty(w.shape[1], dtype=np.float64)
    for j in range(n):
        m = tick_machine[j]
        touched[m] = 0
        sc, top = _tick_one(m, m_ptr, m_sig, z_last, w, mst, p, y)
        tick_score[j] = sc
        tick_top[j] = top
    return n


@njit(cache=True, nogil=True)
def gate_machines(signal: np.ndarray, machine_of: np.ndarray, m_ptr: np.ndarray, m_sig: np.ndarray,
                  level: np.ndarray, count_col: int, warmup: float, gate: np.ndarray, live_of: np.ndarray) -> int:
    """Open a machine's multivariate stage once all its member signals are past their own warm-up.

    Why: members report z = 0 while they warm up, so a machine scored from its first tick would learn
    its residual statistics on zeros and then flag the first real z-scores as a broken correlation.
    ``gate[m]`` = (open, samples waited); a machine also opens after ``10 * warmup`` samples per member
    so that one dead sensor cannot keep the stage closed forever. ``live_of`` (the machine of each
    signal for ``machine_tick``, -1 while closed) is updated in place. Returns machines opened.
    """
    opened = 0
    for k in range(signal.shape[0]):
        m = machine_of[signal[k]]
        if m < 0 or gate[m, 0] != 0.0:
            continue
        a = m_ptr[m]
        b = m_ptr[m + 1]
        ok = True
        for i in range(a, b):
            if level[m_sig[i], count_col] < warmup:
                ok = False
                break
        gate[m, 1] += 1.0
        if ok or gate[m, 1] >= 10.0 * warmup * (b - a):
            gate[m, 0] = 1.0
            for i in range(a, b):
                live_of[m_sig[i]] = m
            opened += 1
    return opened
