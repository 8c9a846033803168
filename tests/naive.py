"""Slow, obvious reference versions of the edge kernels (STUMPY's tests/naive.py pattern).

Each function restates its kernel's docstring in plain Python/numpy with per-signal dicts and no
shared code with ``edge/kernels``, so an equivalence test catches a wrong index or a skipped update.
"""

from __future__ import annotations

import math

import numpy as np

SQRT_PI_2 = math.sqrt(math.pi / 2.0)


class Robust:
    def __init__(self, alpha: float, huber_k: float, warmup: int, min_scale: float) -> None:
        self.alpha, self.k, self.warmup, self.min_scale = alpha, huber_k, warmup, min_scale
        self.loc, self.scale, self.n = 0.0, 0.0, 0

    def z(self, x: float) -> float:
        if self.n < self.warmup:
            return math.nan
        return (x - self.loc) / max(self.scale, self.min_scale)

    def learn(self, x: float, rate_scale: float = 1.0) -> None:
        if self.n == 0:
            self.loc, self.scale, self.n = x, 0.0, 1
            return
        a0 = self.alpha * rate_scale
        a = max(a0, 1.0 / (self.n + 1)) if self.n < self.warmup else a0
        r = x - self.loc
        if self.n >= self.warmup:
            lim = self.k * max(self.scale, self.min_scale)
            r = min(max(r, -lim), lim)
        self.loc += a * r
        self.scale = (1 - a) * self.scale + a * SQRT_PI_2 * abs(r)
        self.n += 1


def _bad(q: int, x: float) -> bool:
    return q == 2 or not math.isfinite(x)


def robust_chunk(signal, value, quality, alpha=0.01, huber_k=3.0, warmup=30, min_scale=1e-6):
    st: dict[int, Robust] = {}
    out = np.full(len(signal), np.nan)
    for k, (s, x, q) in enumerate(zip(signal.tolist(), value.tolist(), quality.tolist(), strict=True)):
        if _bad(q, x):
            continue
        r = st.setdefault(s, Robust(alpha, huber_k, warmup, min_scale))
        out[k] = r.z(x)
        if q == 0:
            r.learn(x)
    return out


class Cusum:
    def __init__(self, k: float, h: float, z_clip: float, cap: float) -> None:
        self.k, self.h, self.z_clip, self.cap = k, h, z_clip, cap
        self.pos = self.neg = 0.0

    def step(self, z: float) -> float:
        if not math.isfinite(z):
            return 0.0
        z = min(max(z, -self.z_clip), self.z_clip)
        top = self.cap * self.h
        self.pos = min(max(self.pos + z - self.k, 0.0), top)
        self.neg = min(max(self.neg - z - self.k, 0.0), top)
        m = max(self.pos, self.neg)
        return m * m / (m * m + self.h * self.h)


def cusum_chunk(signal, z, k=0.5, h=8.0, z_clip=4.0, cap=2.0):
    st: dict[int, Cusum] = {}
    return np.array([st.setdefault(s, Cusum(k, h, z_clip, cap)).step(v) for s, v in zip(signal.tolist(), z.tolist(),
                                                                                        strict=True)])


class Stuck:
    def __init__(self, beta: float, tol: float, decades: float, p_floor: float, warmup: int) -> None:
        self.beta, self.tol, self.decades, self.p_floor, self.warmup = beta, tol, decades, p_floor, warmup
        self.last, self.run, self.p, self.seen = 0.0, 0, 0.5, 0

    def step(self, x: float, learn: bool) -> float:
        if self.seen == 0:
            self.last, self.seen = x, 1
            return 0.0
        rep = abs(x - self.last) <= self.tol
        run = self.run + 1 if rep else 0
        p = min(max(self.p, self.p_floor), 1 - 1e-9)
        q = -run * math.log10(p)
        score = q / (q + self.decades) if self.seen >= self.warmup else 0.0
        if learn and q < self.decades:
            b = max(self.beta, 1.0 / self.seen)
            self.p += b * (float(rep) - self.p)
        self.run, self.last, self.seen = run, x, self.seen + 1
        return score


def stuck_chunk(signal, value, quality, beta=0.01, tol=0.0, threshold_decades=8.0, p_floor=0.05, warmup=30):
    st: dict[int, Stuck] = {}
    out = np.zeros(len(signal))
    for k, (s, x, q) in enumerate(zip(signal.tolist(), value.tolist(), quality.tolist(), strict=True)):
        if _bad(q, x):
            continue
        out[k] = st.setdefault(s, Stuck(beta, tol, threshold_decades, p_floor, warmup)).step(x, q == 0)
    return out


class Rate:
    def __init__(self, alpha, huber_k, warmup, min_scale, gap_factor) -> None:
        self.stats = Robust(alpha, huber_k, warmup, min_scale)
        self.alpha, self.gap = alpha, gap_factor
        self.last_v, self.last_ts, self.period = 0.0, None, 0.0

    def step(self, x: float, ts_ns: int, learn: bool) -> float:
        z = math.nan
        if self.last_ts is not None:
            dt = (float(ts_ns) - self.last_ts) * 1e-9
            if dt <= 0:
                return math.nan
            if self.period == 0 or dt <= self.gap * self.period:
                slope = (x - self.last_v) / dt
                z = self.stats.z(slope)
                if learn:
                    self.stats.learn(slope)
                    b = max(self.alpha, 1.0 / self.stats.n)
                    self.period = dt if self.period == 0 else self.period + b * (dt - self.period)
        self.last_v, self.last_ts = x, float(ts_ns)
        return z


def rate_chunk(ts_ns, signal, value, quality, alpha=0.01, huber_k=3.0, warmup=30, min_scale=1e-9, gap_factor=5.0):
    st: dict[int, Rate] = {}
    out = np.full(len(signal), np.nan)
    for k, (t, s, x, q) in enumerate(zip(ts_ns.tolist(), signal.tolist(), value.tolist(), quality.tolist(),
                                         strict=True)):
        if _bad(q, x):
            continue
        out[k] = st.setdefault(s, Rate(alpha, huber_k, warmup, min_scale, gap_factor)).step(x, t, q == 0)
    return out


def limit_score(x: float, low: float, high: float, margin: float) -> float:
    if not math.isfinite(x):
        return 0.0
    has_lo, has_hi = math.isfinite(low), math.isfinite(high)
    if has_lo and has_hi:
        span = high - low if high > low else max(abs(high), 1.0)
        e = (low - x) / span if x < low else (x - high) / span if x > high else 0.0
        if low <= x <= high:
            return 0.0
    elif has_hi:
        if x <= high:
            return 0.0
        e = (x - high) / (abs(high) or 1.0)
    elif has_lo:
        if x >= low:
            return 0.0
        e = (low - x) / (abs(low) or 1.0)
    else:
        return 0.0
    return 1.0 if e > 1e300 else 0.5 + 0.5 * e / (e + margin)


def signal_chunk(ts_ns, signal, value, quality, low, high, mask, *, level=None, cusum=None, stuck=None, rate=None,
                 level_threshold=6.0, rate_threshold=6.0, limit_margin=0.05, machine_z_clip=4.0, n_signals=None,
                 bad_s=0.0, guard=1.0, guard_at=0.5, frozen=None, level_alpha=None):
    """Composition of the references above, as ``signal_stack.signal_chunk`` documents it.

    ``frozen``: per signal, true while its machine is off: the sample is only the latest usable one (BAD reads it).
    ``level_alpha``: per signal, its own level learning rate where > 0 (else ``level``'s).
    """
    level = level or {}
    cusum = cusum or {}
    stuck = stuck or {}
    rate = rate or {}
    lv: dict[int, Robust] = {}
    cs: dict[int, Cusum] = {}
    sk: dict[int, Stuck] = {}
    rt: dict[int, Rate] = {}
    n = len(signal)
    score, kind = np.zeros(n), np.zeros(n, dtype=np.uint8)
    z_last = np.zeros(n_signals or (int(signal.max()) + 1))
    last_ok: dict[int, int] = {}  # latest timestamp of a usable sample per signal
    for k in range(n):
        s, x, q, t = int(signal[k]), float(value[k]), int(quality[k]), int(ts_ns[k])
        if _bad(q, x):
            d = (t - last_ok[s]) / 1e9 if s in last_ok else 0.0
            if bad_s > 0 and d > 0:
                score[k], kind[k] = d * d / (d * d + bad_s * bad_s), 8
            continue
        last_ok[s] = max(last_ok.get(s, t), t)
        if frozen is not None and frozen[s]:
            z_last[s] = 0.0
            if int(mask[s]) & 8:
                rr = rt.setdefault(s, Rate(**{"alpha": 0.01, "huber_k": 3.0, "warmup": 30, "min_scale": 1e-9,
                                              "gap_factor": 5.0, **rate}))
                if rr.last_ts is None or not t < rr.last_ts:
                    rr.last_v, rr.last_ts = x, float(t)
            continue
        m = int(mask[s])
        own = {"alpha": float(level_alpha[s])} if level_alpha is not None and level_alpha[s] > 0 else {}
        r = lv.setdefault(s, Robust(**{"alpha": 0.01, "huber_k": 3.0, "warmup": 30, "min_scale": 1e-6, **level, **own}))
        z = r.z(x)
        cands = [(0.0, 0)]
        hot = 0.0
        if m & 1:
            cands.append((0.0 if math.isnan(z) else z * z / (z * z + level_threshold**2), 1))
            hot = cands[-1][0]
        if m & 2:
            c = cs.setdefault(s, Cusum(**{"k": 0.5, "h": 8.0, "z_clip": 4.0, "cap": 2.0, **cusum}))
            cands.append((c.step(z), 2))
            hot = max(hot, cands[-1][0])
        if m & 4:
            st = sk.setdefault(s, Stuck(**{"beta": 0.01, "tol": 0.0, "decades": 8.0, "p_floor": 0.05, "warmup": 30,
                                           **stuck}))
            cands.append((st.step(x, q == 0), 3))
        if m & 8:
            rr = rt.setdefault(s, Rate(**{"alpha": 0.01, "huber_k": 3.0, "warmup": 30, "min_scale": 1e-9,
                                          "gap_factor": 5.0, **rate}))
            zr = rr.step(x, t, q == 0)
            cands.append((0.0 if math.isnan(zr) else zr * zr / (zr * zr + rate_threshold**2), 4))
        if m & 16:
            cands.append((limit_score(x, float(low[s]), float(high[s]), limit_margin), 5))
        best, kd = 0.0, 0
        for sc, kk in cands:  # first strictly larger wins, as in the kernel
            if sc > best:
                best, kd = sc, kk
        if q == 0:
            r.learn(x, guard if hot >= guard_at else 1.0)
        z_last[s] = 0.0 if math.isnan(z) else min(max(z, -machine_z_clip), machine_z_clip)
        score[k], kind[k] = best, kd
    return score, kind, z_last


def waveform_features(blocks: np.ndarray, fs_hz: float, edges: np.ndarray) -> np.ndarray:
    n, length = blocks.shape
    out = np.zeros((n, 3 + len(edges) - 1))
    freqs = np.fft.rfftfreq(length, 1.0 / fs_hz)
    for r in range(n):
        x = blocks[r]
        if not np.all(np.isfinite(x)):
            out[r] = np.nan
            continue
        d = x - x.mean()
        m2 = float(np.mean(d**2))
        if m2 <= 0:
            continue
        out[r, 0] = math.sqrt(m2)
        out[r, 1] = float(np.mean(d**4)) / m2**2
        out[r, 2] = float(np.max(np.abs(d))) / math.sqrt(m2)
        spec = np.abs(np.fft.rfft(d)) ** 2 / length**2
        c = np.full(len(spec), 2.0)
        c[0] = 1.0
        if length % 2 == 0:
            c[-1] = 1.0
        for b in range(len(edges) - 1):
            sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
            out[r, 3 + b] = float(np.sum(c[sel] * spec[sel]))
    return out


def alarms(ts, entity, score, kind, on=0.5, off=0.3, on_count=1, off_count=10):
    """Events as a list of (entity, phase, ts_start, ts_end, peak, kind) tuples."""
    st: dict[int, dict] = {}
    events = []
    for t, e, sc, kd in zip(ts.tolist(), entity.tolist(), score.tolist(), kind.tolist(), strict=True):
        a = st.setdefault(e, {"active": False, "above": 0, "quiet": 0, "peak": 0.0, "kind": 0, "start": 0, "qts": 0})
        if not a["active"]:
            if sc >= on:
                if a["above"] == 0:
                    a.update(start=t, peak=sc, kind=kd)
                elif sc > a["peak"]:
                    a.update(peak=sc, kind=kd)
                a["above"] += 1
                if a["above"] >= on_count:
                    a.update(active=True, quiet=0)
                    events.append((e, 1, a["start"], -1, a["peak"], a["kind"]))
            else:
                a["above"] = 0
        else:
            if sc > a["peak"]:
                a.update(peak=sc, kind=kd)
            if sc < off:
                if a["quiet"] == 0:
                    a["qts"] = t
                a["quiet"] += 1
                if a["quiet"] >= off_count:
                    events.append((e, 2, a["start"], a["qts"], a["peak"], a["kind"]))
                    a.update(active=False, above=0, quiet=0, peak=0.0)
            else:
                a["quiet"] = 0
    return events


def alarms_rearm(ts, entity, score, kind, on=0.5, off=0.3, on_count=1, off_count=10, rearm_n=0, exempt=(5, 8, 9, 10)):
    """Reference of ``rearm.alarm_chunk_rearm``: ``alarms`` where, for ``rearm_n`` of an entity's samples after its
    alarm closed, a sample scoring at most that closed episode's peak counts as quiet (unless its kind is in
    ``exempt``)."""
    since: dict[int, float] = {}
    peak: dict[int, float] = {}
    st: dict[int, dict] = {}
    gated = []
    for e, sc, kd in zip(entity.tolist(), score.tolist(), kind.tolist(), strict=True):
        since[e] = since.get(e, float("inf")) + 1
        a = st.setdefault(e, {"active": False, "quiet": 0, "peak": 0.0})
        hold = not a["active"] and since[e] <= rearm_n and sc <= peak.get(e, 0.0) and kd not in exempt
        g = -1.0 if hold else sc  # -1: below every threshold (NaN and inf compare as themselves)
        gated.append(g)
        # mirror the alarm state to know closes (same rules as ``alarms``)
        if not a["active"]:
            a.setdefault("above", 0)
            if g >= on:
                a["pk"] = g if a["above"] == 0 else max(a.get("pk", g), g)
                a["above"] += 1
                if a["above"] >= on_count:
                    a.update(active=True, quiet=0, peak=a["pk"])
            else:
                a["above"] = 0
        else:
            a["peak"] = max(a["peak"], g) if g > a["peak"] else a["peak"]
            if g < off:
                a["quiet"] += 1
                if a["quiet"] >= off_count:
                    since[e] = 0.0
                    peak[e] = a["peak"]
                    a.update(active=False, above=0, quiet=0, peak=0.0)
            else:
                a["quiet"] = 0
    return alarms(ts, entity, np.array(gated, dtype=np.float64), kind, on, off, on_count, off_count)


class PcaMachine:
    """One machine's fitted PCA models (one per mode) ticked on the latest good value of each member.

    Restates ``edge.kernels.pca``: ring of the last ``lags + 1`` rows, nearest mode centroid (a change
    restarts the rows and the EWMA), autoscale (missing -> 0), T² and SPE against the mode's references, score
    ``u / (1 + u)`` with ``u = (e - init) / (limit - init)``, top-3 members by SPE + |T²| contribution.
    """

    def __init__(self, modes: list[dict], lags: int, d: int) -> None:
        self.modes, self.lags, self.d = modes, lags, d
        self.last = np.full(d, np.nan)
        self.rows: list[np.ndarray] = []
        self.mode = -1
        self.e = 0.0

    def tick(self, values: np.ndarray, good: np.ndarray) -> tuple[float, list[int]]:
        for i in range(self.d):
            if good[i] and math.isfinite(values[i]):
                self.last[i] = values[i]
        self.rows = [self.last.copy(), *self.rows][: self.lags + 1]
        cur = self.rows[0]
        dists = []
        for mo in self.modes:
            u = [(cur[i] - mo["centroid"][i]) / mo["mode_scale"][i] for i in range(self.d)
                 if mo["mode_scale"][i] > 0 and math.isfinite(cur[i])]
            dists.append(sum(v * v for v in u))
        j = int(np.argmin(dists)) if len(self.modes) > 1 else 0
        if self.mode >= 0 and j != self.mode and not dists[j] < 0.5 * dists[self.mode]:
            j = self.mode  # hysteresis: another mode must be clearly nearer
        mo = self.modes[j]
        if j != self.mode:  # a new mode: lag history and smoothing restart
            self.mode, self.e, self.rows = j, mo["init"], [cur]
        if len(self.rows) < self.lags + 1:
            return 0.0, [-1, -1, -1]
        x = np.concatenate(self.rows)
        z = np.where(np.isfinite(x), (x - mo["mean"]) / mo["scale"], 0.0)
        if 2 * int((~np.isfinite(x)).sum()) > x.size:
            return 0.0, [-1, -1, -1]
        P, lam = mo["loadings"], mo["eigenvalues"]
        t = P.T @ z
        r = z - P @ t
        t2, spe = float(np.sum(t * t / lam)), float(r @ r)
        g = P @ (t / lam)
        per_feature = r * r / mo["spe_ref"] + np.abs(z * g) / mo["t2_ref"]
        contrib = per_feature.reshape(self.lags + 1, self.d).sum(axis=0)
        stat = max(t2 / mo["t2_ref"], spe / mo["spe_ref"])
        self.e = mo["ewma"] * stat + (1 - mo["ewma"]) * self.e
        order = sorted((i for i in range(self.d) if contrib[i] > 0), key=lambda i: (-contrib[i], i))[:3]
        top = order + [-1] * (3 - len(order))
        if not math.isfinite(self.e):
            score = 1.0 if self.e > 0 else 0.0
        else:
            span = max(mo["limit"] - mo["init"], 1e-12 * mo["limit"] + 1e-300)
            u = (self.e - mo["init"]) / span
            score = u / (1 + u) if u > 0 else 0.0
        return score, (top if score >= 0.25 else [-1, -1, -1])  # contributors named from score 0.25 on


def settle_gate(ts_ns, entity, score, kind, quality, count, first_ns, settle_n, settle_ns, dq_kind_min=8,
                machine_of=None, hold_until=None, hold_all_until=-1):
    """Reference of ``alarms.settle_gate``: (gated scores, first_ns after the chunk)."""
    first = dict(enumerate(first_ns.tolist()))
    out = np.zeros(len(score))
    for k in range(len(score)):
        e, t = int(entity[k]), int(ts_ns[k])
        if first[e] < 0 and quality[k] != 2:
            first[e] = t
        young = first[e] < 0 or count[e] < settle_n or t - first[e] < settle_ns
        if machine_of is not None and machine_of[e] >= 0 and t <= hold_until[machine_of[e]] and kind[k] in (1, 2, 4):
            young = True
        if t <= hold_all_until and kind[k] in (1, 2, 4):
            young = True
        out[k] = 0.0 if (young and kind[k] < dq_kind_min and score[k] > 0) else score[k]  # NaN passes
    return out, np.array([first[i] for i in range(len(first_ns))], dtype=np.int64)


def machine_moves(ts_ns, signal, quality, z, machine_of, members, z_hot, min_fraction, min_signals, hold_ns,
                  hold_until):
    """Reference of ``opchange.machine_moves`` for one frame: hold_until after the frame."""
    out = hold_until.copy()
    hot: dict[int, set] = {}
    for k in range(len(signal)):
        s = int(signal[k])
        m = int(machine_of[s])
        if m >= 0 and quality[k] != 2 and abs(z[s]) >= z_hot:
            hot.setdefault(m, set()).add(s)
    for m, sigs in hot.items():
        if len(sigs) >= max(min_signals, min_fraction * members[m]):
            out[m] = int(ts_ns.max()) + hold_ns
    return out


def energy_accumulate(ts_ns, signal, value, quality, role, row, computed, params, last, last_ts, acc):
    """Reference of edge.kernels.energy.energy_accumulate: same state layout, plain Python per sample."""
    phase_k, v_nom, pf_nom, wrap, reset_tol, max_step, max_gap = (float(x) for x in params[:7])
    for t, s, v, q in zip(ts_ns.tolist(), signal.tolist(), value.tolist(), quality.tolist(), strict=True):
        rl = int(role[s])
        if rl == 0:
            continue
        r = int(row[s])
        if q == 2 or not math.isfinite(v):
            acc[r, 14] += 1
            continue
        if rl in (1, 2):
            if rl == 2 and not computed[r]:
                continue
            if rl == 2:
                volt = last[r, 1] if math.isfinite(last[r, 1]) else v_nom
                pf = last[r, 2] if math.isfinite(last[r, 2]) else pf_nom
                p = phase_k * volt * v * pf / 1000.0
            else:
                p = v
            if math.isfinite(last[r, 0]):
                dt = t - int(last_ts[r, 0])
                if 0 < dt <= max_gap:
                    acc[r, 0] += last[r, 0] * dt / 3.6e12
                elif dt > max_gap:
                    acc[r, 10] += 1
            last[r, 0], last_ts[r, 0] = p, t
            acc[r, 1] += p
            acc[r, 2] += 1
        elif rl == 3:
            last[r, 1] = v
        elif rl == 4:
            last[r, 2] = v
        elif rl == 5:
            prev = last[r, 3]
            if math.isfinite(prev):
                d = v - prev
                if d < 0:
                    if wrap > 0 and prev > wrap / 2 and v < wrap / 2:
                        d = wrap - prev + v
                        acc[r, 11] += 1
                    elif -d > reset_tol:
                        d = v
                        acc[r, 12] += 1
                    else:
                        continue
                if d > max_step:
                    acc[r, 13] += 1
                    d = 0.0
                acc[r, 3] += d
                acc[r, 4] += 1
            last[r, 3] = v
        elif rl == 6:
            prev = last[r, 4]
            if math.isfinite(prev):
                d = v - prev if v >= prev else v
                if d > 0:
                    acc[r, 5] += d
                    last_ts[r, 1] = t
            last[r, 4] = v
        elif rl == 7:
            acc[r, 6] += 1.0 if v > 0.5 else 0.0
            acc[r, 7] += 1
        elif rl == 8:
            acc[r, 8] += v
            acc[r, 9] += 1


class _LeakStation:
    """One leak-test station's cycle, stated phase by phase (edge/kernels/leaktest.py docstring)."""

    def __init__(self) -> None:
        self.phase = "idle"
        self.t_last = None
        self.p_last = 0.0
        self.rise = 0.0
        self.fill0 = self.fill1 = self.meas0 = self.vent0 = 0.0
        self.points: list[tuple[float, float]] = []
        self.dts: list[float] = []
        self.part = self.chamber = self.stab_s = self.meas_s = math.nan
        # per temperature sensor (0 part, 1 chamber)
        self.t_good: list[tuple[float, float] | None] = [None, None]  # (time, value) of the last good sample
        self.suspect: list[tuple[float, float, float] | None] = [None, None]  # (jump, value before, since)
        self.ramp_t = [-math.inf, -math.inf]
        self.clear_t = [-math.inf, -math.inf]
        self.ref_kept = [0.0, 0.0]  # the level before the last suspicion (kept after it clears)
        self.window: list[list[tuple[float, float]]] = [[], []]  # (t - fill end, value) over stabilise + measure
        self.flags = 0
        self.rebase = 0
        self.fill_n = 0


def _leak_slope(pts: list[tuple[float, float]]) -> float:
    if len(pts) < 5:
        return math.nan
    x = np.array([p[0] for p in pts])
    if np.ptp(x) <= 0:
        return math.nan
    return float(np.polyfit(x, np.array([p[1] for p in pts]), 1)[0])


def _leak_temperature(s, j, t, v, good, t_min, t_max, jump_k, ramp_k, suspect_s, max_gap):
    """One temperature sample (the kernel's _temperature); returns 'bad', 'suspect' or None for the counters."""
    in_cycle = s.phase in ("stab", "meas")
    attr = "part" if j == 0 else "chamber"
    if not good or v < t_min or v > t_max:
        setattr(s, attr, math.nan)
        if in_cycle:
            s.flags |= 1
        return "bad"
    counted = None
    last = s.t_good[j]
    if last is not None and t - last[0] <= max_gap and (j == 1 or (in_cycle and s.fill_n >= 3)):
        d = v - last[1]
        sus = s.suspect[j]
        if sus is not None:
            off, ref, since = sus
            soon = t - since <= 120.0 and (j == 1 or since >= s.fill1)
            same = j == 1 or since >= s.fill1
            near = abs(v - ref) <= 0.5 * abs(off) + ramp_k * (t - since)
            undo = abs(d + off) <= 0.5 * abs(off) and (not same or near)
            if undo or (soon and abs(v - ref) <= 0.5 * jump_k):
                s.suspect[j] = None
                s.clear_t[j] = t
                if in_cycle:
                    s.flags |= 2
        elif abs(d) > jump_k:
            if in_cycle:
                s.flags |= 2
            sl = _leak_slope(s.window[j])
            if not ((not math.isnan(sl) and abs(sl) > ramp_k) or t - s.ramp_t[j] <= 60.0):
                if t - s.clear_t[j] > 120.0:
                    s.ref_kept[j] = last[1]
                s.suspect[j] = (d, s.ref_kept[j], t)
                counted = "suspect"
    if s.suspect[j] is not None and t - s.suspect[j][2] > suspect_s:
        s.suspect[j] = None
        s.rebase = 1
    s.t_good[j] = (t, v)
    setattr(s, attr, v)
    if in_cycle:
        s.window[j].append((t - s.fill1, v))
        if s.suspect[j] is not None:
            s.flags |= 16
    return counted


def _leak_cycle_flags(s, t, ramp_k, stuck_n):
    flags = s.flags
    for j in range(2):
        if s.suspect[j] is not None:
            flags |= 16
        sl = _leak_slope(s.window[j])
        if not math.isnan(sl) and abs(sl) > ramp_k:
            flags |= 4
            s.ramp_t[j] = t
        w = s.window[j]
        if stuck_n > 0 and len(w) >= stuck_n and all(p[1] == w[0][1] for p in w):
            flags |= 8
    return flags


def leak_cycles(ts_ns, signal, value, quality, role, row, p_on, rise, vent, max_gap, stab_default, meas_default,
                t_min, t_max, jump_k, ramp_k, suspect_s, stuck_n, stations):
    """Result rows as lists [row, end, fill, stab, meas, vent, decay, p_mean, dT, n, meas0, resid, temp flags,
    rebase] and counts (bad, aborted, temperature bad, suspicions)."""
    sts = stations
    results, bad, aborted, temp_bad, suspicions = [], 0, 0, 0, 0
    for ts, sig, v, q in zip(ts_ns.tolist(), signal.tolist(), value.tolist(), quality.tolist(), strict=True):
        r = int(role[sig])
        if r == 0:
            continue
        s = sts[int(row[sig])]
        if r in (2, 3):
            got = _leak_temperature(s, r - 2, ts / 1e9, v, q != 2 and math.isfinite(v), t_min, t_max, jump_k, ramp_k,
                                    suspect_s, max_gap)
            temp_bad += got == "bad"
            suspicions += got == "suspect"
            continue
        if q == 2 or not math.isfinite(v):
            bad += 1
            continue
        if r in (4, 5):
            setattr(s, {4: "stab_s", 5: "meas_s"}[r], v)
            continue
        t = ts / 1e9
        gap = 0.0 if s.t_last is None else t - s.t_last
        if gap < 0:
            bad += 1
            continue
        rate = (v - s.p_last) / gap if gap > 0 else 0.0
        if s.phase not in ("idle", "lost") and gap > max_gap:
            s.phase = "lost"
            aborted += 1
        if s.phase == "idle" and v >= p_on and rate > rise and gap <= max_gap:
            s.phase, s.rise, s.flags, s.fill_n = "fill", rate, 0, 1
        elif s.phase == "fill":
            if rate < rise or rate < s.rise / 2:
                s.phase = "stab"
                s.fill1 = min(max(s.t_last + max(v - s.p_last, 0.0) / s.rise, s.t_last), t)
                s.fill0 = s.fill1 - v / s.rise
                s.window = [[], []]
            else:
                s.rise = max(s.rise, rate)
                s.fill_n += 1
        elif s.phase == "stab":
            stab = stab_default if math.isnan(s.stab_s) else s.stab_s
            if rate < -vent:
                s.phase = "lost"
                aborted += 1
            elif t >= s.fill1 + stab:
                s.phase, s.meas0, s.points, s.dts = "meas", t, [], []
        if s.phase == "meas":
            meas = meas_default if math.isnan(s.meas_s) else s.meas_s
            if rate < -vent and s.points:
                s.phase, s.vent0 = "vent", s.t_last
            elif t - s.meas0 <= meas + 1e-6:
                s.points.append((t - s.meas0, v))
                if not math.isnan(s.part - s.chamber):
                    s.dts.append(s.part - s.chamber)
        elif s.phase == "vent":
            if v < 0.5 * p_on or rate > rise:
                x = np.array([p[0] for p in s.points])
                y = np.array([p[1] for p in s.points])
                n = len(s.points)
                slope, resid = math.nan, math.nan
                if n >= 3 and np.ptp(x) > 0:
                    slope, icept = np.polyfit(x, y, 1)
                    resid = float(np.sqrt(np.sum((y - (icept + slope * x)) ** 2) / (n - 2))) * 1e5
                end = t if v < 0.5 * p_on else s.t_last
                results.append([int(row[sig]), end, s.fill1 - s.fill0, s.meas0 - s.fill1, s.vent0 - s.meas0,
                                end - s.vent0, -slope * 1e5, float(y.mean()) if n else math.nan,
                                float(np.mean(s.dts)) if s.dts else math.nan, n, s.meas0, resid,
                                _leak_cycle_flags(s, t, ramp_k, stuck_n), s.rebase])
                s.rebase = 0
                if v < 0.5 * p_on:
                    s.phase = "idle"
                else:
                    s.phase, s.rise, s.flags, s.fill_n = "fill", rate, 0, 1
        elif s.phase == "lost" and (v < 0.5 * p_on or rate < -vent):
            s.phase = "idle"
        s.t_last, s.p_last = t, v
    return results, bad, aborted, temp_bad, suspicions


def leak_stations(n: int) -> list[_LeakStation]:
    return [_LeakStation() for _ in range(n)]

def count_resting(state, n):
    """Reference of ``opstate.count_resting``: machines among the first ``n`` that are OFF (1) or IDLE (2)."""
    return int(np.isin(np.asarray(state)[:n], (1, 2)).sum())


def update_states(ts_ns, signal, value, quality, running_of, state, since_ns, hold_until, grace_ns, members,
                  swap=None, on_at=None, off_at=None):
    """Reference of ``opstate.update_states``: (state, since_ns, hold_until, frozen per signal, changes).

    ``members``: dict machine -> list of the signals its OFF state freezes. ``frozen`` holds only the signals whose
    column the frame wrote (others: None). ``swap``: (st, st_alt, keep columns) for the own-baseline mode, swapped
    in place (then nothing is frozen).
    """
    state, since, hold = list(state.tolist()), list(since_ns.tolist()), list(hold_until.tolist())
    frozen: dict[int, float] = {}
    changes = 0
    for k in range(len(signal)):
        m = int(running_of[int(signal[k])])
        x = float(value[k])
        if m < 0 or int(quality[k]) == 2 or not math.isfinite(x):
            continue
        s_in = int(signal[k])
        on = 0.5 if on_at is None else float(on_at[s_in])
        off = 0.5 if off_at is None else float(off_at[s_in])
        new = (2 if state[m] == 2 else 3) if x >= on else (1 if x < off else state[m])
        if new == state[m]:
            continue
        t = int(ts_ns[k])
        since[m] = t
        if state[m] != 0:
            changes += 1
            hold[m] = max(hold[m], t + grace_ns)
        old = state[m]
        state[m] = new
        if swap is not None:
            st, alt, keep = swap
            if old != 0:
                cols = [c for c in range(st.shape[1]) if c not in keep]
                for s in members.get(m, []):
                    a, b = st[s, cols].copy(), alt[s, cols].copy()
                    st[s, cols], alt[s, cols] = b, a
            continue
        for s in members.get(m, []):
            frozen[s] = 0.0 if new == 3 else 1.0
    return state, since, hold, frozen, changes


def device_judgement(frames, device_of, n_devices, bad_ns, silent_ns, fold_at=0.25, dq_kind_min=8):
    """Reference of ``devices.device_polls`` + ``device_scores`` + ``fold_device`` over frames.

    ``frames``: list of (ts, signal, value, quality, kind, score). Returns per frame (device scores, folded scores).
    """
    good = [-1] * n_devices
    anyt = [-1] * n_devices
    since = None
    out = []
    for ts, sig, val, q, kind, score in frames:
        now = int(max(ts))
        since = now if since is None else since
        for t, s, x, qq in zip(ts.tolist(), sig.tolist(), val.tolist(), q.tolist(), strict=True):
            d = int(device_of[s])
            if d < 0:
                continue
            anyt[d] = max(anyt[d], t)
            if qq != 2 and math.isfinite(x):
                good[d] = max(good[d], t)
        dev = np.zeros(n_devices)
        for d in range(n_devices):
            t = bad_ns if anyt[d] > good[d] else silent_ns
            if good[d] < 0 or t <= 0:
                continue
            dd = float(now - max(good[d], since))
            dev[d] = dd * dd / (dd * dd + t * t) if dd > 0 else 0.0
        folded = np.array(score, dtype=np.float64)
        for k, s in enumerate(sig.tolist()):
            d = int(device_of[s])
            if kind[k] >= dq_kind_min and folded[k] > 0 and d >= 0 and dev[d] >= fold_at:
                folded[k] = 0.0
        out.append((dev, folded))
    return out


def silent_scan(last_ts, since_ns, now_ns, silent_ns):
    """Reference of ``signal_stack.silent_scan``: (rows, scores, bound) from each signal's last usable timestamp."""
    rows, scores, bound = [], [], math.inf
    for s, last in enumerate(last_ts.tolist()):
        if not math.isfinite(last):  # never seen: not silent, and its first sample comes no earlier than since_ns
            bound = min(bound, since_ns)
            continue
        m = max(last, since_ns)
        d = now_ns - m
        if d > silent_ns:
            rows.append(s)
            scores.append(d * d / (d * d + silent_ns * silent_ns))
        else:
            bound = min(bound, m)
    return np.array(rows, dtype=np.int64), np.array(scores), bound

def _rest_floor(r, floor, run, p):
    """The at-rest band's floor: steps or span, a fraction of the running level, the float resolution."""
    return max(floor[0], floor[1] * abs(run), p["rel_res"] * max(abs(r["loc"]), abs(run)))


def _rest_band(r, floor, p, t, grace_end):
    """The at-rest band's half-width: mult MADs, capped at peak_mult peaks once warm and settled, plus the floor."""
    core = p["mult"] * r["mad"]
    pm = p.get("peak_mult", 0.0)
    if pm > 0 and r["learned"] >= p["peak_warm_s"] and t - grace_end >= p["peak_warm_s"] * 1e9:
        core = min(core, pm * r["peak"])
    return core + floor


def rest_judgement(ts_ns, signal, value, quality, machine_of, m_state, m_since, hold_until, floor, rest, params,
                   score, kind, need=None, starting=None, run_level=None, hot_since=None, run_span=None, load_at=None):
    """Reference of ``atrest.rest_chunk``. ``rest``: dict signal -> dict(loc, mad, learned, exc, last, period, peak,
    dev) (absent: never rested), updated in place; ``score``/``kind`` updated in place; ``params``: the settings
    by name. ``need``: per machine, signals leaving their rest band that make a start (None: no start test);
    ``starting``: dict machine -> ns it is starting until (from the next frame on), updated in place;
    ``run_level``: the running baseline's level per signal (None: 0); ``hot_since``: dict signal -> (ns since it is
    leaving, its latest ns leaving), in place. ``floor``: rows (absolute floor, fraction of the running level).
    ``run_span``: rows (slow maximum, slow minimum) of the running level per signal, NaN none (None: none; the start
    test then heads for ``run_level``); ``load_at``: dict machine -> ns of the latest frame in which it had a load
    heading to its running level (the plant start test), in place. Returns the number of samples scoring >= 0.5."""
    p = params
    n_high = 0
    starting = {} if starting is None else starting
    hot_since = {} if hot_since is None else hot_since
    run_level = np.zeros(len(machine_of)) if run_level is None else run_level
    load_at = {} if load_at is None else load_at
    f_run = p.get("start_run_fraction", 0.0)
    counted: dict[int, set] = {}  # the start test: distinct warm signals per machine leaving in this frame
    loads: dict[int, set] = {}  # of them, loads heading to their running level
    t_max = None
    for k in range(len(signal)):
        s = int(signal[k])
        m = int(machine_of[s])
        if m < 0 or int(m_state[m]) not in (1, 2):
            continue
        t_max = int(ts_ns[k]) if t_max is None else max(t_max, int(ts_ns[k]))
        if int(ts_ns[k]) <= int(hold_until[m]):
            continue
        x = float(value[k])
        if int(quality[k]) == 2 or not math.isfinite(x):
            continue
        r = rest.setdefault(s, {"loc": 0.0, "mad": 0.0, "learned": 0.0, "exc": 0.0, "last": None, "period": None,
                                "peak": 0.0, "dev": 0.0, "last_x": None, "run": 0, "run_max": 0.0, "runs": 0})
        t = float(int(ts_ns[k]))
        if r["period"] != float(int(m_since[m])):  # new off period: rest value starts here
            r.update(period=float(int(m_since[m])), loc=x, exc=0.0, last=t, dev=0.0, last_x=x, run=0)
            continue
        dt = (t - r["last"]) * 1e-9
        if not dt > 0:
            continue
        dt = min(dt, p["max_dt_s"])
        r["last"] = t
        if f_run > 0:  # smoothed deviation for the start test
            r["dev"] += min(dt * (1.0 / p["start_tau_s"]), 1.0) * (x - r["loc"] - r["dev"])
        d = abs(x - r["loc"])
        run_s = run_level[s] if run_span is None or math.isnan(run_span[s][0]) else max(
            abs(run_level[s]), abs(run_span[s][0]), abs(run_span[s][1]))  # the largest running level known
        floor_s = _rest_floor(r, floor[s], run_s, p)
        warm = r["learned"] >= p["warm_s"]
        if need is not None and warm and s not in counted.get(m, set()):
            env_u = p["mult"] * r["mad"] + floor_s
            g = run_level[s] - r["loc"]
            g_run = g  # the plant start test's: the farther of the kept running extremes
            if run_span is not None and not math.isnan(run_span[s][0]):
                g_hi, g_lo = run_span[s][0] - r["loc"], run_span[s][1] - r["loc"]
                g_run = 0.0 if g_hi * g_lo <= 0 else (g_hi if abs(g_hi) >= abs(g_lo) else g_lo)  # both sides: none
            towards = f_run > 0 and r["dev"] * g > 0 and abs(g) >= p["start_load_bands"] * env_u and abs(
                r["dev"]) >= max(f_run * abs(g), p["start_noise_band"] * env_u)  # a load on its way to running
            if d > p["start_band"] * env_u or towards:
                t_k, persist_ns = int(ts_ns[k]), int(p.get("start_persist_s", 0.0) * 1e9)
                since, last = hot_since.get(s, (None, None))
                if since is None or t_k - last > persist_ns:
                    since = t_k
                hot_since[s] = (since, t_k)
                if t_k - since >= persist_ns:
                    counted.setdefault(m, set()).add(s)
                    if d > p["start_band"] * env_u and r["dev"] * g_run > 0 and abs(r["dev"]) > p[
                            "start_band"] * env_u and abs(g_run) >= p["start_load_bands"] * env_u:  # a load heading
                        loads.setdefault(m, set()).add(s)
        if int(ts_ns[k]) <= starting.get(m, -1):  # starting: neither judged nor learned, evidence dropped
            r.update(exc=0.0, last_x=x, run=0)
            continue
        env = _rest_band(r, floor_s, p, t, float(max(int(hold_until[m]), int(m_since[m]))))
        inside = d <= env
        if warm:
            if inside:
                r["exc"] = max(r["exc"] - p["drain"] * dt, 0.0)
            else:
                u = d / env - 1.0 if env > 0 else p["cap"]
                r["exc"] = min(r["exc"] + min(u, p["cap"]) * dt, 3.0 * p["persist"])
            e = r["exc"]
            sc = e * e / (e * e + p["persist"] ** 2) if e > 0 else 0.0
        else:
            sc = 0.0
        if p.get("frozen_mult", 0.0) > 0:  # a run of identical values longer than the rest's own runs
            rep = r["last_x"] is not None and x == r["last_x"]
            run_prev = r["run"]
            r["run"] = run_prev + 1 if rep else 0
            r["last_x"] = x
            limit = p["frozen_mult"] * max(r["run_max"], p["frozen_min_run"])
            if warm and r["runs"] >= p["frozen_runs"] and r["run"] > 0 and p["mult"] * r["mad"] >= floor_s:
                sc = max(sc, r["run"] / (r["run"] + limit))
            if int(quality[k]) == 0:
                r["run_max"] -= min(dt * (1.0 / p["frozen_tau_s"]), 1.0) * r["run_max"]
                if not rep and (run_prev <= limit or r["runs"] < p["frozen_runs"]):
                    r["run_max"] = max(r["run_max"], run_prev)
                    r["runs"] += 1
        if sc > score[k]:
            score[k], kind[k] = sc, 11
        n_high += sc >= 0.5
        if int(quality[k]) == 0 and (not warm or (inside and r["exc"] == 0.0)):
            a_loc = (dt / p["tau_loc_s"]) / (1 + dt / p["tau_loc_s"])
            a_mad = (dt / p["tau_mad_s"]) / (1 + dt / p["tau_mad_s"])
            if not warm:
                a_loc = max(a_loc, dt / (r["learned"] + dt))
                a_mad = max(a_mad, dt / (r["learned"] + dt))
            r["mad"] += a_mad * (d - r["mad"])
            r["peak"] = max(r["peak"] - a_mad * r["peak"], d)
            r["loc"] += a_loc * (x - r["loc"])
            r["learned"] += dt
    plant = False
    if counted and p.get("start_peers", 0.0) > 0:  # the plant start test: peers starting or with a heading load
        for m in loads:
            load_at[m] = t_max
        window_ns = int(p["start_peer_window_s"] * 1e9)
        peers = sum(1 for m in range(len(need)) if m in load_at and t_max - load_at[m] <= window_ns)
        plant = peers >= p["start_peers"]
    for m, sigs in counted.items():  # the verdict holds from the next frame on
        if len(sigs) >= need[m] or (plant and m in loads):
            starting[m] = t_max + int(p["start_hold_s"] * 1e9)
    return n_high


def run_level(machine_of, m_state, run_level_now, run_span, a):
    """Reference of ``atrest.run_level``: per signal of a RUNNING machine (state 3) with a finite level, the slow
    maximum and minimum (``run_span`` rows, NaN none, updated in place). Returns the number updated."""
    n_up = 0
    for s in range(len(machine_of)):
        m = int(machine_of[s])
        r = float(run_level_now[s])
        if m < 0 or int(m_state[m]) != 3 or not math.isfinite(r):
            continue
        hi, lo = run_span[s]
        if math.isnan(hi):
            run_span[s] = (r, r)
        else:
            run_span[s] = (max(r, hi - a * (hi - r)), min(r, lo + a * (r - lo)))
        n_up += 1
    return n_up


def update_activity(ts_ns, signal, value, quality, act_of, act_p, act_v, act_i, m_last, state, since_ns, hold_until,
                    grace_ns, idle_ns, min_moves, members, snap=None, resume_ratio=1e30):
    """Reference of ``opstate.update_activity`` (IDLE <-> RUNNING). ``act_v``/``act_i``/``m_last`` are updated in
    place, and ``snap`` = (st, st_snap, keep columns): the snapshot at each activity, restored on entering IDLE;
    returns (state, since, hold, frozen per signal written, changes) as ``update_states``'s reference."""
    state, since, hold = list(state.tolist()), list(since_ns.tolist()), list(hold_until.tolist())
    frozen: dict[int, float] = {}
    changes = 0
    for k in range(len(signal)):
        s = int(signal[k])
        m = int(act_of[s])
        x = float(value[k])
        if m < 0 or int(quality[k]) == 2 or not math.isfinite(x):
            continue
        t = int(ts_ns[k])
        idle_v, band, rest = (float(c) for c in act_p[s])
        declared = math.isfinite(idle_v)
        if declared:
            active = x != idle_v
            resting = not active
        else:
            active = not math.isnan(act_v[s]) and abs(x - act_v[s]) > band
            if math.isnan(act_v[s]) or active:
                act_v[s] = x
            resting = not active and abs(x - rest) <= band
            if active:
                if state[m] == 3:
                    gap_ok = act_i[s, 0] >= 0 and t - act_i[s, 0] <= idle_ns
                    act_i[s, 1] = act_i[s, 1] + 1 if gap_ok else 1
                    if not gap_ok:
                        act_i[s, 3] = t  # the run's first move
                    if act_i[s, 1] >= min_moves and t - act_i[s, 3] >= idle_ns:  # and it has lasted idle_ns
                        act_i[s, 2] = 1
                act_i[s, 0] = t
        if not act_i[s, 2] or state[m] not in (2, 3):
            continue
        new = state[m]
        hold_to = t + grace_ns
        if active:
            if state[m] == 2:  # resuming: min(grace, ratio x the spell since the last activity before it)
                began = int(m_last[m]) if m_last[m] >= 0 else since[m] - idle_ns
                hold_to = t + min(grace_ns, int(resume_ratio * (t - began)))
            m_last[m] = t
            if snap is not None:
                for sg in members.get(m, []):
                    snap[1][sg, :] = snap[0][sg, :]
            new = 3
        elif resting and state[m] == 3 and t - max(int(m_last[m]), since[m]) > idle_ns:
            new = 2
            if snap is not None and m_last[m] >= 0:
                cols = [c for c in range(snap[0].shape[1]) if c not in snap[2]]
                for sg in members.get(m, []):
                    snap[0][sg, cols] = snap[1][sg, cols]
        if new == state[m]:
            continue
        changes += 1
        if state[m] == 2 and hold[m] <= since[m] + grace_ns:  # resuming: the spell's own stop grace is replaced
            hold[m] = hold_to
        else:
            hold[m] = max(hold[m], hold_to)
        state[m], since[m] = new, t
        for sg in members.get(m, []):
            frozen[sg] = 1.0 if new == 2 else 0.0
    return state, since, hold, frozen, changes

class Trend:
    """Reference of ``edge.kernels.trend``: bin means, their smoothed slope, judged against its robust statistics."""

    def __init__(self, bin_s=10.0, beta=0.2, alpha=0.003, huber_k=3.0, warmup=60, threshold=8.0, guard=0.0,
                 guard_at=0.3, max_gap=3.0, rel_res=1e-6, peak_mult=1.5, peak_decay=0.0005, machine_fraction=0.1,
                 machine_min=2.0, machine_hold_s=600.0, run=3, tail_max=6.0, quiet_s=0.0, common_z=0.0,
                 common_clip=4.0, rel_per_h=0.0, class_fraction=0.0, machine=None, klass=None):
        self.p = dict(bin_s=bin_s, beta=beta, alpha=alpha, huber_k=huber_k, warmup=warmup, threshold=threshold,
                      guard=guard, guard_at=guard_at, max_gap=max_gap, rel_res=rel_res, peak_mult=peak_mult,
                      peak_decay=peak_decay, machine_hold_s=machine_hold_s, run=run, tail_max=tail_max,
                      quiet_s=quiet_s, common_z=common_z, common_clip=common_clip, rel_per_h=rel_per_h)
        self.run = 0
        # shared dict {"hot": int, "need": float, "held": int, "z": {signal: clipped z}, "since": ns, "hold": ns}
        # of the signal's machine, or None
        self.machine = machine
        self.klass = klass  # shared dict {"hot": int, "need": float, "held": int} of the signal's class, or None
        self.hot = 0
        self.bin: list[tuple[float, float]] = []  # (t_ns, value) of the open bin
        self.prev: tuple[float, float] | None = None  # (mean time ns, mean value) of the last closed bin
        self.g, self.gn, self.peak, self.score = 0.0, 0, 0.0, 0.0
        self.stats = Robust(alpha, huber_k, warmup, 1e-12)

    def _close(self, res: float, key: int) -> None:
        p = self.p
        t0 = self.bin[0][0]
        t_mean = t0 + sum((t - t0) * 1e-9 for t, _ in self.bin) / len(self.bin) * 1e9
        v_mean = sum(v for _, v in self.bin) / len(self.bin)
        score = 0.0
        mc = self.machine
        if self.prev is not None and t_mean > self.prev[0] and t_mean - self.prev[0] <= p["max_gap"] * p["bin_s"] * 1e9:
            d = (v_mean - self.prev[1]) / ((t_mean - self.prev[0]) * 1e-9)
            self.g = d if self.gn == 0 else self.g + p["beta"] * (d - self.g)
            self.gn += 1
            self.run = self.run + 1 if d * self.g > 0 else 0
            if self.gn >= math.ceil(2.0 / p["beta"]):
                t = p["threshold"]
                res_floor = max(res, p["rel_res"] * abs(v_mean)) / p["bin_s"]
                floor = max(res_floor, p["peak_mult"] * self.peak / t,
                            p["rel_per_h"] * abs(v_mean) / (3600.0 * t), 1e-12)
                r = self.stats
                z = None
                if r.n >= p["warmup"]:
                    z = (self.g - r.loc) / max(r.scale, floor)
                    score = z * z / (z * z + t * t)
                hot = score >= p["guard_at"]
                steady = self.run >= p["run"] and self.peak <= p["tail_max"] * max(r.scale, res_floor, 1e-12)
                held = False
                dh = int(hot) - self.hot
                self.hot = int(hot)
                kc = self.klass
                if kc is not None:
                    kc["hot"] += dh
                    if kc["hot"] >= kc["need"]:
                        kc["held"] = max(kc["held"], int(t_mean) + int(p["machine_hold_s"] * 1e9))
                    held = int(t_mean) <= kc["held"]
                if mc is not None:
                    mc["hot"] += dh
                    moves = mc["hot"] >= mc["need"]
                    if p["common_z"] > 0:
                        c = p["common_clip"]
                        if z is None:
                            mc["z"].pop(key, None)
                        else:
                            mc["z"][key] = min(max(z, -c), c)
                        others = [v for k, v in mc["z"].items() if k != key]
                        if others and abs(sum(others)) >= p["common_z"] * len(others):
                            moves = True
                    if moves:
                        mc["held"] = max(mc["held"], int(t_mean) + int(p["machine_hold_s"] * 1e9))
                    held = held or int(t_mean) <= mc["held"]
                if not held:
                    if not hot:
                        self.peak = max(abs(self.g - r.loc) if r.n > 0 else 0.0, self.peak * (1.0 - p["peak_decay"]))
                    r.learn(self.g, p["guard"] if hot else 1.0)
                if not steady:
                    score = 0.0
        else:
            self.gn = 0
            if self.hot:
                if mc is not None:
                    mc["hot"] -= 1
                if self.klass is not None:
                    self.klass["hot"] -= 1
                self.hot = 0
            if mc is not None:
                mc["z"].pop(key, None)
        self.score = score
        self.prev = (t_mean, v_mean)
        self.bin = []

    def step(self, t_ns: int, x: float, q: int, res: float = 0.0, key: int = 0) -> float | None:
        """The held score for a usable sample (None for a skipped one)."""
        if q == 2 or not math.isfinite(x):
            return None
        mc = self.machine
        if q == 0:
            if self.bin and t_ns - self.bin[0][0] >= self.p["bin_s"] * 1e9:
                self._close(res, key)
            self.bin.append((float(t_ns), x))
        if self.klass is not None and t_ns <= self.klass["held"]:
            return 0.0
        if mc is not None and t_ns <= mc["held"]:
            return 0.0
        quiet_ns = int(self.p["quiet_s"] * 1e9)
        if mc is not None and quiet_ns > 0 and any(0 <= at and t_ns <= at + quiet_ns
                                                   for at in (mc["since"], mc["hold"])):
            return 0.0
        return self.score


def trend_chunk(ts_ns, signal, value, quality, score, kind, enabled, res, kind_code, machine_of=None, m_since=None,
                hold_until=None, class_of=None, **params):
    """``trend.trend_chunk`` on copies of ``score``/``kind``: the larger held trend score wins, with ``kind_code``.
    ``machine_of``: per signal its machine (-1 none); a machine's need is over its enabled members; ``m_since`` and
    ``hold_until`` per machine (ns, -1 none; default none); ``class_of`` per signal its class (-1 none), a class's
    need over its enabled members."""
    score, kind = score.copy(), kind.copy()
    st: dict[int, Trend] = {}
    machines: dict[int, dict] = {}
    if machine_of is not None:
        for m in set(int(v) for v in machine_of if v >= 0):
            members = sum(1 for s, v in enumerate(machine_of) if v == m and enabled[s])
            machines[m] = {"hot": 0, "need": max(params.get("machine_min", 2.0),
                                                 params.get("machine_fraction", 0.1) * members), "held": -1,
                           "z": {}, "since": -1 if m_since is None else int(m_since[m]),
                           "hold": -1 if hold_until is None else int(hold_until[m])}
    classes: dict[int, dict] = {}
    if class_of is not None:
        for c in set(int(v) for v in class_of if v >= 0):
            members = sum(1 for s, v in enumerate(class_of) if v == c and enabled[s])
            classes[c] = {"hot": 0, "need": max(params.get("machine_min", 2.0),
                                                params.get("class_fraction", 0.0) * members), "held": -1}
    for k in range(len(signal)):
        s = int(signal[k])
        if not enabled[s]:
            continue
        m = -1 if machine_of is None else int(machine_of[s])
        c = -1 if class_of is None else int(class_of[s])
        tr = st.setdefault(s, Trend(**params, machine=machines.get(m), klass=classes.get(c)))
        sc = tr.step(int(ts_ns[k]), float(value[k]), int(quality[k]), float(res[s]), s)
        if sc is not None and sc > score[k]:
            score[k], kind[k] = sc, kind_code
    return score, kind


def thaw_independent(t_ns, m_state, m_since, m_seen, m_next, m_members, rest_machine_of, rest, run, params, frozen):
    """Reference of ``atrest.thaw_independent``. ``m_members``: list per machine of its signals; ``rest``: rows
    (loc, mad, learned); ``run``: rows (loc, scale, count) of the running baseline; ``params``: dict ratio_min,
    ratio_max, dist, learned_s, warmup; ``m_seen`` (change looked at), ``m_next`` (ns of the next look while off,
    -1 none) and ``frozen`` (per signal, 1 frozen) updated in place. Returns the number of signals thawed."""
    if not params["ratio_min"] > 0:
        return 0
    n = 0
    for m, members in enumerate(m_members):
        due = m_next[m] >= 0 and t_ns >= m_next[m]
        if m_since[m] == m_seen[m] and not due:
            continue
        m_seen[m] = m_since[m]
        if int(m_state[m]) not in (1, 2):
            m_next[m] = -1
            continue
        m_next[m] = t_ns + int(max(params["learned_s"], 1.0) * 1e9)
        for s in members:
            loc, mad, learned = (float(c) for c in rest[s])
            r_loc, r_sd, count = (float(c) for c in run[s])
            if rest_machine_of[s] < 0 or not learned >= params["learned_s"] or not count >= params["warmup"]:
                continue
            sd = mad * math.sqrt(math.pi / 2)
            if not (r_sd > 0 and sd > 0):
                continue
            if not params["ratio_min"] <= sd / r_sd <= params["ratio_max"]:
                continue
            if abs(loc - r_loc) <= params["dist"] * max(r_sd, sd):
                frozen[s] = 0.0
                n += 1
    return n


def label_thawed(signal, score, kind, machine_of, m_state, frozen, at_rest_kind):
    """Reference of ``atrest.label_thawed``: process kinds (1-5) with a positive score on a signal of an OFF (1) or
    IDLE (2) machine that is not frozen become ``at_rest_kind``; returns the relabelled kinds and their count."""
    out = [int(k) for k in kind]
    n = 0
    for i, s in enumerate(int(x) for x in signal):
        if not score[i] > 0 or not 1 <= out[i] <= 5 or s >= len(machine_of):
            continue
        m = int(machine_of[s])
        if m < 0 or int(m_state[m]) not in (1, 2) or frozen[s] != 0:
            continue
        out[i] = at_rest_kind
        n += 1
    return out, n
