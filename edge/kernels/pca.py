"""Per-machine multivariate monitoring with fitted PCA models: T² and SPE (Q), smoothed, with contributions.

Why fitted PCA and not a streaming subspace: a model learned while it scores absorbs a slow or
persistent fault into its own baseline, and a streaming estimate of the residual scale never settles
well enough to set a limit an operator can trust (the Oja stage this replaces never scored above 0.4
on a multivariate testbed). Classic process monitoring fits on normal operation once, fixes its
limits there, and keeps them until someone re-baselines on purpose (a refit). The model is plain
arrays (``edge.models.machine``, numpy) that this kernel only reads.

Per tick of machine ``m`` (once per frame that touched it, as in ``plantwire score`` once per row):
1. ``x_last`` (the latest good value of every signal, updated here from the frame) of the machine's
   members is pushed into a ring of the last ``lags + 1`` rows: dynamic PCA (Ku et al. 1995) sees a
   row and its predecessors, so a broken *dynamic* relation shows too. A member with no good value yet
   (NaN) is imputed at its fitted mean (a standardised 0); a tick with more than half its features
   missing scores 0 and changes no state.
2. Operating mode: the machine's models (one per mode) each carry a centroid and a scale on the mode
   variables; the nearest centroid picks the model. A mode change restarts the lag history (the machine
   scores 0 until ``lags + 1`` rows of the new mode are in) and the smoothing at the new model's normal
   level, so neither a lagged row straddling two modes nor the old mode's statistic leaks into the new one.
3. Standardise with the mode's means/scales, project on its ``k`` loadings: T² = Σ t_j² / λ_j and
   SPE = |z - P t|². The combined statistic ``max(T²/t2_ref, SPE/spe_ref)`` (each divided by its
   median on held-out normal data) is smoothed by an EWMA (Lowry's MEWMA idea applied to the
   statistic: small persistent shifts add up, single noisy rows do not) and scored ``u / (1 + u)`` with
   ``u = (c - normal) / (limit - normal)``: 0 at the statistic's normal level, 0.5 exactly at the limit.
4. Contributions per member signal (summed over its lags): ``r_i² / spe_ref + |z_i (P Λ⁻¹ t)_i| / t2_ref``,
   the share of each statistic a variable carries; the three largest are reported as signal indices, on
   ticks scoring ``CONTRIB_FROM`` or more (below, -1: normal ticks skip the residual pass, as SPE itself is
   ``|z|² - |t|²``).

Layout (all flat so one model bank serves any number of machines, modes and sizes):
- ``mach_i[m]`` int64: ``MI_MODEL0`` first model, ``MI_MODES`` number of modes (0 = no model: the
  machine scores 0), ``MI_LAGS``, ``MI_HIST`` offset of its ring in ``hist`` (``(lags + 1) * d`` floats),
  ``MI_FILLED`` rows in the ring so far, ``MI_POS`` ring position, ``MI_MODE`` current mode (-1 none).
- ``mach_f[m]`` float64: ``MF_EWMA`` smoothed statistic, ``MF_STAT`` last raw combined statistic.
- ``mdl_i[j]`` int64: ``DI_D`` signals, ``DI_K`` components, ``DI_P`` features, ``DI_OFF`` offset in ``mdl_vec`` of the
  model's vectors, in this order: mean (p), scale (p), mode centroid (d), mode scale (d, 0 = not a
  mode variable), loadings (p x k, row-major), eigenvalues (k); p = (lags + 1) * d, lag 0 first.
- ``mdl_f[j]`` float64: ``DF_T2_REF``, ``DF_SPE_REF``, ``DF_LIMIT``, ``DF_LAMBDA`` (EWMA weight, 1 = none),
  ``DF_INIT`` (the statistic's normal level: where the EWMA starts).
"""

from __future__ import annotations

import numpy as np

from edge.jit import njit

MI_MODEL0 = 0
MI_MODES = 1
MI_LAGS = 2
MI_HIST = 3
MI_FILLED = 4
MI_POS = 5
MI_MODE = 6
MI_WIDTH = 7

MF_EWMA = 0
MF_STAT = 1
MF_WIDTH = 2

DI_D = 0
DI_K = 1
DI_P = 2
DI_OFF = 3
DI_WIDTH = 4

DF_T2_REF = 0
DF_SPE_REF = 1
DF_LIMIT = 2
DF_LAMBDA = 3
DF_INIT = 4
DF_WIDTH = 5

N_TOP = 3
CONTRIB_FROM = 0.25  # contributions are computed from this score on (the alarm opens at 0.5)
MODE_SWITCH = 0.5  # another mode must be this much nearer (squared distance) to take over


@njit(cache=True, nogil=True)
def update_last(signal: np.ndarray, value: np.ndarray, quality: np.ndarray, x_last: np.ndarray,
                machine_of: np.ndarray, seen: np.ndarray) -> None:
    """Keep the latest good, finite value of every signal (bad or non-finite samples leave it as it was),
    and mark the machines (``machine_of``, -1 none) that had any sample in ``seen`` (uint8)."""
    for k in range(signal.shape[0]):
        s = signal[k]
        m = machine_of[s]
        if m >= 0:
            seen[m] = 1
        x = value[k]
        if quality[k] != 2 and np.isfinite(x):
            x_last[s] = x


@njit(cache=True, nogil=True, _nrt=False)  # per-tick helper
def _pick_mode(m0: int, n_modes: int, cur: int, d: int, row: np.ndarray, mdl_i: np.ndarray,
               mdl_vec: np.ndarray) -> int:
    """The mode whose centroid is nearest on the mode variables (mode scale > 0), in their scales.

    Hysteresis: the current mode ``cur`` is kept unless another is nearer by ``MODE_SWITCH`` (squared
    distances), so a machine between two modes -- itself off both baselines -- is judged against one of
    them instead of flapping (each flap restarts the lag history and would hide it).
    """
    if n_modes == 1:
        return 0
    best = 0
    best_d = np.inf
    cur_d = np.inf
    for mo in range(n_modes):
        j = m0 + mo
        oc = mdl_i[j, DI_OFF] + 2 * mdl_i[j, DI_P]
        os_ = oc + d
        dist = 0.0
        for i in range(d):
            s = mdl_vec[os_ + i]
            x = row[i]
            if s > 0.0 and np.isfinite(x):
                u = (x - mdl_vec[oc + i]) / s
                dist += u * u
        if dist < best_d:
            best_d = dist
            best = mo
        if mo == cur:
            cur_d = dist
    if cur >= 0 and best != cur and not best_d < MODE_SWITCH * cur_d:
        return cur
    return best


@njit(cache=True, nogil=True, _nrt=False)
def _tick_one(m: int, m_ptr: np.ndarray, m_sig: np.ndarray, x_last: np.ndarray, mach_i: np.ndarray,
              mach_f: np.ndarray, hist: np.ndarray, mdl_i: np.ndarray, mdl_f: np.ndarray, mdl_vec: np.ndarray,
              z: np.ndarray, t: np.ndarray, contrib: np.ndarray, top: np.ndarray) -> float:
    for q in range(N_TOP):
        top[q] = -1
    n_modes = mach_i[m, MI_MODES]
    a = m_ptr[m]
    d = m_ptr[m + 1] - a
    if n_modes <= 0 or d <= 0:
        return 0.0
    lags = mach_i[m, MI_LAGS]
    h0 = mach_i[m, MI_HIST]
    # 1. push the current row into the ring (lag 0 = newest)
    pos = (mach_i[m, MI_POS] + 1) % (lags + 1)
    mach_i[m, MI_POS] = pos
    for i in range(d):
        hist[h0 + pos * d + i] = x_last[m_sig[a + i]]
    if mach_i[m, MI_FILLED] < lags + 1:
        mach_i[m, MI_FILLED] += 1
    # 2. mode: a change restarts the lag history (a lagged row straddling two modes belongs to neither)
    # and the smoothing at the new mode's normal level
    m0 = mach_i[m, MI_MODEL0]
    mo = _pick_mode(m0, n_modes, mach_i[m, MI_MODE], d, hist[h0 + pos * d: h0 + pos * d + d], mdl_i, mdl_vec)
    j = m0 + mo
    if mach_i[m, MI_MODE] != mo:
        mach_i[m, MI_MODE] = mo
        mach_i[m, MI_FILLED] = 1
        mach_f[m, MF_EWMA] = mdl_f[j, DF_INIT]
    if mach_i[m, MI_FILLED] < lags + 1:
        return 0.0  # not enough history in this mode for the lagged row yet
    k = mdl_i[j, DI_K]
    p = (lags + 1) * d
    off = mdl_i[j, DI_OFF]
    o_sd = off + p
    o_load = off + 2 * p + 2 * d
    o_lam = o_load + p * k
    # 3. standardise (missing -> 0), project, statistics
    missing = 0
    for lag in range(lags + 1):
        r = (pos - lag + lags + 1) % (lags + 1)
        for i in range(d):
            f = lag * d + i
            x = hist[h0 + r * d + i]
            if np.isfinite(x):
                z[f] = (x - mdl_vec[off + f]) / mdl_vec[o_sd + f]
            else:
                z[f] = 0.0
                missing += 1
    if 2 * missing > p:
        return 0.0
    for c in range(k):
        t[c] = 0.0
    zz = 0.0
    for f in range(p):
        zf = z[f]
        zz += zf * zf
        base = o_load + f * k
        for c in range(k):
            t[c] += mdl_vec[base + c] * zf
    t2 = 0.0
    tt = 0.0
    for c in range(k):
        t[k + c] = t[c] / mdl_vec[o_lam + c]  # t / lambda, kept for the T² contributions (no division per feature)
        t2 += t[c] * t[k + c]
        tt += t[c] * t[c]
    t2_ref = mdl_f[j, DF_T2_REF]
    spe_ref = mdl_f[j, DF_SPE_REF]
    spe = zz - tt  # |z - P t|² = |z|² - |t|² for orthonormal loadings: no residual pass on normal ticks
    if spe < 0.0:
        spe = 0.0
    stat = max(t2 / t2_ref, spe / spe_ref)
    # 4. smoothing (restarted at a mode change) and score
    lam = mdl_f[j, DF_LAMBDA]
    e = lam * stat + (1.0 - lam) * mach_f[m, MF_EWMA]
    mach_f[m, MF_EWMA] = e
    mach_f[m, MF_STAT] = stat
    if not np.isfinite(e):
        score = 1.0 if e > 0 else 0.0
    else:
        # u: 0 at the normal level, 1 at the limit; score u / (1 + u) is 0.5 at the limit and 0 on normal
        # ticks, so the alarm layer's off-threshold (0.3: u = 0.43) sits well above normal operation.
        init = mdl_f[j, DF_INIT]
        span = mdl_f[j, DF_LIMIT] - init
        if span <= 1e-12 * mdl_f[j, DF_LIMIT]:
            span = 1e-12 * mdl_f[j, DF_LIMIT] + 1e-300
        u = (e - init) / span
        score = u / (1.0 + u) if u > 0.0 else 0.0
    if score < CONTRIB_FROM:
        return score  # contributions only where someone may look at them: half the work on normal ticks
    # 5. contributions per member (residual pass), top three strictly positive, ties to the lower index
    for i in range(d):
        contrib[i] = 0.0
    for f in range(p):
        base = o_load + f * k
        rf = z[f]
        g = 0.0
        for c in range(k):
            w = mdl_vec[base + c]
            rf -= w * t[c]
            g += w * t[k + c]
        contrib[f % d] += rf * rf / spe_ref + abs(z[f] * g) / t2_ref
    for q in range(N_TOP):
        best = -1
        best_c = 0.0
        for i in range(d):
            ci = contrib[i]
            if ci > best_c:
                taken = False
                for qq in range(q):
                    if top[qq] == m_sig[a + i]:
                        taken = True
                if not taken:
                    best_c = ci
                    best = i
        if best >= 0:
            top[q] = m_sig[a + best]
    return score


@njit(cache=True, nogil=True)
def machine_tick(signal: np.ndarray, machine_of: np.ndarray, m_ptr: np.ndarray, m_sig: np.ndarray,
                 x_last: np.ndarray, mach_i: np.ndarray, mach_f: np.ndarray, hist: np.ndarray, mdl_i: np.ndarray,
                 mdl_f: np.ndarray, mdl_vec: np.ndarray, touched: np.ndarray, tick_machine: np.ndarray,
                 tick_score: np.ndarray, tick_top: np.ndarray) -> int:
    """Tick every machine that has a sample in ``signal`` (in order of first appearance).

    Call ``update_last`` with the frame first. Writes (machine, score, top-3 signals or -1) to the
    ``tick_*`` arrays (``tick_top`` shape ``(>= n_machines, 3)``) and returns how many machines ticked;
    ``touched`` is a zeroed uint8 scratch array of length n_machines, left zeroed. Machine -1 = none.
    """
    n = 0
    for q in range(signal.shape[0]):
        m = machine_of[signal[q]]
        if m >= 0 and touched[m] == 0:
            touched[m] = 1
            tick_machine[n] = m
            n += 1
    p_max = 1
    d_max = 1
    k_max = 1
    for j in range(mdl_i.shape[0]):
        d_max = max(d_max, mdl_i[j, DI_D])
        k_max = max(k_max, mdl_i[j, DI_K])
        p_max = max(p_max, mdl_i[j, DI_P])
    z = np.empty(p_max, dtype=np.float64)
    t = np.empty(2 * k_max, dtype=np.float64)  # scores, then scores / eigenvalues
    contrib = np.empty(d_max, dtype=np.float64)
    top = np.empty(N_TOP, dtype=np.int64)
    for q in range(n):
        m = tick_machine[q]
        touched[m] = 0
        tick_score[q] = _tick_one(m, m_ptr, m_sig, x_last, mach_i, mach_f, hist, mdl_i, mdl_f, mdl_vec, z, t,
                                  contrib, top)
        for c in range(N_TOP):
            tick_top[q, c] = top[c]
    return n
