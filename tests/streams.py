"""Hand-made sample streams for kernel tests: interleaved signals with NaN, inf, constant runs and gaps."""

from __future__ import annotations

import numpy as np


def mixed(n_signals: int = 4, n_steps: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Interleaved samples of ``n_signals`` signals over ``n_steps`` ticks of 1 s, with every nasty case.

    Signal 0: Gaussian noise with a spike and a level shift; 1: quantised to 0.5 (many repeats) with a
    long constant run (stuck); 2: constant throughout; 3+: random walk. Sprinkled over all: NaN, +-inf,
    bad- and uncertain-quality samples, a dropped stretch (time gap) and a repeated timestamp.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps, dtype=np.int64) * 1_000_000_000 + 1_700_000_000_000_000_000
    rows_ts, rows_sig, rows_val, rows_q = [], [], [], []
    walk = np.cumsum(rng.normal(size=(n_steps, max(n_signals - 3, 0))), axis=0)
    for i in range(n_steps):
        if n_steps // 2 <= i < n_steps // 2 + 20:
            continue  # communication outage: a time gap for everyone
        order = rng.permutation(n_signals)
        for s in order:
            if s == 0:
                v = rng.normal() + (10.0 if i == 100 else 0.0) + (5.0 if i > 300 else 0.0)
            elif s == 1:
                v = 0.5 * np.round(2.0 * (20.0 + rng.normal(scale=1.5))) if not 150 <= i < 250 else 21.5
            elif s == 2:
                v = 7.0
            else:
                v = float(walk[i, s - 3])
            rows_ts.append(t[i])
            rows_sig.append(s)
            rows_val.append(v)
            rows_q.append(0)
    ts = np.array(rows_ts, dtype=np.int64)
    sig = np.array(rows_sig, dtype=np.uint32)
    val = np.array(rows_val, dtype=np.float64)
    q = np.array(rows_q, dtype=np.uint8)
    n = len(val)
    for idx in rng.choice(n, size=max(n // 40, 4), replace=False):
        val[idx] = rng.choice([np.nan, np.inf, -np.inf])
    q[rng.choice(n, size=max(n // 40, 4), replace=False)] = 2
    q[rng.choice(n, size=max(n // 40, 4), replace=False)] = 1
    dup = n // 3  # a repeated timestamp for one signal
    ts[dup + 1 : dup + 2] = ts[dup]
    return {"ts": ts, "signal": sig, "value": val, "quality": q}
